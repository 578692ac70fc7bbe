//! Is a path a mount point? Read from /proc/self/mountinfo, because comparing
//! st_dev with the parent misses bind mounts and same-device mounts. Also:
//! is this process behind systemd's `PrivateTmp=`, where a path under /tmp
//! is not the one the user sees?

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The mount points listed in /proc/self/mountinfo.
pub fn mount_points() -> std::io::Result<Vec<PathBuf>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape_octal(field))))
        .collect())
}

/// True when `path` (absolute, canonical) is itself a mount point.
pub fn is_mount_point(path: &Path) -> std::io::Result<bool> {
    Ok(mount_points()?.iter().any(|m| m == path))
}

/// The mount points in `mountinfo` (the text of /proc/self/mountinfo) that
/// systemd's `PrivateTmp=yes` put over /tmp or /var/tmp: a mount there whose
/// root (field 4) is a `systemd-private-…` directory.
pub fn private_tmps(mountinfo: &[u8]) -> Vec<PathBuf> {
    mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line.split(|&b| b == b' ');
            let root = fields.nth(3)?;
            let point = fields.next()?;
            let private = root
                .windows(b"/systemd-private-".len())
                .any(|w| w == b"/systemd-private-");
            (private && (point == b"/tmp" || point == b"/var/tmp"))
                .then(|| PathBuf::from(OsString::from_vec(unescape_octal(point))))
        })
        .collect()
}

/// Why `path` (absolute) cannot be meant, when it lies under one of the
/// `private` temporary directories: the service would see an empty tree
/// of its own, not the one the user put there.
pub fn private_tmp_problem(path: &Path, private: &[PathBuf]) -> Option<String> {
    let tmp = private.iter().find(|tmp| path.starts_with(tmp))?;
    let tmp = tmp.display();
    Some(format!(
        "{} is under {tmp}, but this service runs with systemd's PrivateTmp=yes and sees an \
         empty {tmp} of its own there, not yours: move the tree out of {tmp} (e.g. to /srv or \
         /var/lib), or give the unit the real {tmp} with `systemctl edit UNIT` \
         ([Service] PrivateTmp=no)",
        path.display()
    ))
}

/// [`private_tmp_problem`] for this process; `None` when its mountinfo
/// cannot be read (then nothing is known to be wrong).
pub fn in_private_tmp(path: &Path) -> Option<String> {
    let text = std::fs::read("/proc/self/mountinfo").ok()?;
    private_tmp_problem(path, &private_tmps(&text))
}

/// mountinfo writes space, tab, newline and backslash as `\040` etc.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (field[i + 1] - b'0') as u32 * 64
                + (field[i + 2] - b'0') as u32 * 8
                + (field[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_proc_are_mount_points() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        assert!(!is_mount_point(Path::new("/proc/self/fd/no-such")).unwrap());
    }

    #[test]
    fn unescapes_spaces() {
        assert_eq!(unescape_octal(br"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(unescape_octal(br"/x\\"), br"/x\\");
        assert_eq!(unescape_octal(br"/t\011"), b"/t\t");
    }
}

#[cfg(test)]
mod private_tmp_tests {
    use super::*;

    const SERVICE: &[u8] = b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        40 22 8:1 /tmp/systemd-private-6e1f-syncpipe@www.service-Abc/tmp /tmp rw,nosuid,nodev shared:20 - ext4 /dev/sda1 rw\n\
        41 22 8:1 /var/tmp/systemd-private-6e1f-syncpipe@www.service-Def/tmp /var/tmp rw shared:21 - ext4 /dev/sda1 rw\n";
    const PLAIN: &[u8] = b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        30 22 0:30 / /tmp rw,nosuid,nodev shared:9 - tmpfs tmpfs rw\n";

    #[test]
    fn a_systemd_private_tmp_is_recognised_and_a_plain_tmpfs_is_not() {
        assert_eq!(
            private_tmps(SERVICE),
            vec![PathBuf::from("/tmp"), PathBuf::from("/var/tmp")]
        );
        assert!(private_tmps(PLAIN).is_empty());
    }

    #[test]
    fn only_paths_beneath_a_private_tmp_are_refused() {
        let private = private_tmps(SERVICE);
        let why = private_tmp_problem(Path::new("/tmp/demo/src"), &private).unwrap();
        assert!(why.contains("PrivateTmp=yes"), "{why}");
        assert!(why.contains("systemctl edit"), "{why}");
        assert!(private_tmp_problem(Path::new("/var/tmp/x"), &private).is_some());
        for fine in ["/srv/www", "/tmpfoo/x", "/var/lib/tmp"] {
            assert_eq!(
                private_tmp_problem(Path::new(fine), &private),
                None,
                "{fine}"
            );
        }
        assert_eq!(
            private_tmp_problem(Path::new("/tmp/x"), &private_tmps(PLAIN)),
            None
        );
    }
}
