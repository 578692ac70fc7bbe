//! A watcher that never reads, for bench/watchd.sh W2: it puts the same
//! marks as watchd (inotify: a watch on ROOT and each directory below it,
//! watchd's default mask; fanotify: one file-system mark, watchd's flags and
//! mask), says "Watches established." on stderr like inotifywait, and then
//! sleeps until it is killed. What a burst's writer pays with it running is
//! the kernel's cost of queueing the events alone, with no reader to wake:
//! the floor no reader can go below. Raise fs.inotify.max_queued_events and
//! fs.fanotify.max_queued_events above the burst's events first, or the
//! queue overflows and the writer pays less than a real watcher's.
//!
//! Usage: floor inotify|fanotify ROOT
//! Built by the benchmark with plain `rustc -O` (no dependencies).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

extern "C" {
    fn inotify_init1(flags: i32) -> i32;
    fn inotify_add_watch(fd: i32, path: *const std::ffi::c_char, mask: u32) -> i32;
    fn fanotify_init(flags: u32, event_f_flags: u32) -> i32;
    fn fanotify_mark(fd: i32, flags: u32, mask: u64, dirfd: i32, path: *const std::ffi::c_char)
        -> i32;
    fn pause() -> i32;
}

// watchd's inotify mask (lib/watchd/watcher.rs, --events close_write).
const IN_MASK: u32 = 0x100 // CREATE
    | 0x200 // DELETE
    | 0x40 // MOVED_FROM
    | 0x80 // MOVED_TO
    | 0x4 // ATTRIB
    | 0x400 // DELETE_SELF
    | 0x800 // MOVE_SELF
    | 0x8 // CLOSE_WRITE
    | 0x0100_0000 // ONLYDIR
    | 0x0200_0000 // DONT_FOLLOW
    | 0x0400_0000; // EXCL_UNLINK
// watchd's fanotify group (lib/watchd/fanotify.rs): FAN_CLASS_NOTIF |
// FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME_TARGET, and its mask:
// CREATE | DELETE | RENAME | ATTRIB | ONDIR | CLOSE_WRITE.
const FAN_FLAGS: u32 = 0x1 | 0x2 | 0x1e00;
const FAN_MASK: u64 = 0x100 | 0x200 | 0x1000_0000 | 0x4 | 0x4000_0000 | 0x8;
const FAN_MARK_ADD_FILESYSTEM: u32 = 0x1 | 0x100;
const AT_FDCWD: i32 = -100;

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in a path")
}

fn watch_tree(fd: i32, dir: &Path) -> std::io::Result<usize> {
    if unsafe { inotify_add_watch(fd, c_path(dir).as_ptr(), IN_MASK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut n = 1;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            n += watch_tree(fd, &entry.path())?;
        }
    }
    Ok(n)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, backend, root] = args.as_slice() else {
        eprintln!("usage: floor inotify|fanotify ROOT");
        return ExitCode::from(2);
    };
    let root = Path::new(root);
    let result = match backend.as_str() {
        "inotify" => {
            let fd = unsafe { inotify_init1(0o2000000) }; // IN_CLOEXEC
            if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                watch_tree(fd, root).map(|_| ())
            }
        }
        "fanotify" => {
            let fd = unsafe { fanotify_init(FAN_FLAGS, 0) };
            if fd < 0 || unsafe {
                fanotify_mark(fd, FAN_MARK_ADD_FILESYSTEM, FAN_MASK, AT_FDCWD, c_path(root).as_ptr())
            } < 0
            {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
        _ => {
            eprintln!("floor: unknown backend {backend} (inotify or fanotify)");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = result {
        eprintln!("floor: {backend} on {}: {e}", root.display());
        return ExitCode::FAILURE;
    }
    eprintln!("Watches established.");
    loop {
        unsafe { pause() };
    }
}
