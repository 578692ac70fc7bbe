//! Is a path a mount point? Read from /proc/self/mountinfo, because comparing
//! st_dev with the parent misses bind mounts and same-device mounts.

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
