//! The fanotify and file-handle system calls, the only unsafe code of watchd.
//!
//! nix cannot read fanotify's FID info records (nix issue 2551) and has no
//! `open_by_handle_at`, so these few calls go to libc directly. Each wrapper
//! takes and returns owned, safe types; reading the event buffer is done in
//! safe code by [`super::fanotify`].
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// MAX_HANDLE_SZ in the kernel.
const MAX_HANDLE: usize = 128;

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `fanotify_init(flags, O_RDONLY | O_CLOEXEC | O_LARGEFILE)`.
pub fn init(flags: u32) -> io::Result<OwnedFd> {
    let event_flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as u32;
    // SAFETY: fanotify_init takes two integers and returns a new descriptor
    // or -1; no memory is passed.
    let fd = unsafe { libc::fanotify_init(flags, event_flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fanotify_mark(fan, flags, mask, AT_FDCWD, path)`.
pub fn mark(fan: BorrowedFd<'_>, flags: u32, mask: u64, path: &Path) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the
    // kernel only reads it.
    let r =
        unsafe { libc::fanotify_mark(fan.as_raw_fd(), flags, mask, libc::AT_FDCWD, c.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The file handle of `path` (not following a last symlink), as
/// `handle_type (4 bytes, native) ++ f_handle`: the same bytes an event's
/// FID record carries after its `handle_bytes` field.
pub fn handle_of(path: &Path) -> io::Result<Vec<u8>> {
    let c = cstring(path)?;
    // A u32 buffer keeps `struct file_handle` (two ints, then bytes) aligned.
    let mut buf = [0u32; 2 + MAX_HANDLE / 4];
    buf[0] = MAX_HANDLE as u32;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a `struct file_handle` with room for MAX_HANDLE_SZ
    // bytes of handle (handle_bytes says so); `c` and `mount_id` are valid
    // for the call; the kernel writes at most handle_bytes bytes.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            buf.as_mut_ptr().cast::<libc::file_handle>(),
            &mut mount_id,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (buf[0] as usize).min(MAX_HANDLE);
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok(bytes[4..8 + len].to_vec())
}

/// Opens (O_PATH) the object `handle` names (`handle_type ++ f_handle`, as
/// from [`handle_of`] or an event) on the file system `mount` lives on.
/// Needs CAP_DAC_READ_SEARCH.
pub fn open_handle(mount: BorrowedFd<'_>, handle: &[u8]) -> io::Result<OwnedFd> {
    if handle.len() < 4 || handle.len() - 4 > MAX_HANDLE {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut buf = [0u32; 2 + MAX_HANDLE / 4];
    buf[0] = (handle.len() - 4) as u32;
    let mut bytes = [0u8; 8 + MAX_HANDLE];
    bytes[4..4 + handle.len()].copy_from_slice(handle);
    for (i, word) in buf.iter_mut().enumerate().skip(1) {
        *word = u32::from_ne_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    }
    // SAFETY: `buf` is an aligned `struct file_handle` whose handle_bytes
    // matches the bytes that follow; the kernel only reads it. The result is
    // a new descriptor or -1.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The file system id of the file system `path` is on, as the 8 bytes an
/// event's FID record starts with.
pub fn fsid_of(path: &Path) -> io::Result<[u8; 8]> {
    let stat = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    let fsid = stat.filesystem_id();
    // SAFETY: `fsid_t` is `#[repr(C)] struct { int val[2]; }` (8 bytes,
    // fields private in libc): reading its bytes reads those two ints.
    let bytes: [u8; 8] = unsafe { std::mem::transmute(fsid) };
    Ok(bytes)
}
