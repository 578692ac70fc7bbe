//! Sockets systemd hands over (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`),
//! so a `.socket` unit can own the listening path and start the writer on
//! the first connection.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use anyhow::Context;

/// The listening socket systemd passed, if any: the one named `name` when
/// `LISTEN_FDNAMES` names them, else the only one. Call once, early: it
/// takes ownership of the descriptor.
pub fn take_listener(name: Option<&str>) -> anyhow::Result<Option<UnixListener>> {
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .context("reading LISTEN_FDS from systemd")?
        .collect();
    let chosen = match (name, fds.as_slice()) {
        (_, []) => return Ok(None),
        (None, [(fd, _)]) => *fd,
        (Some(want), many) => match many.iter().find(|(_, n)| n == want) {
            Some((fd, _)) => *fd,
            None if many.len() == 1 => many[0].0,
            None => anyhow::bail!(
                "systemd passed {} sockets and none is named {want:?} (LISTEN_FDNAMES); set FileDescriptorName={want}",
                many.len()
            ),
        },
        (None, many) => anyhow::bail!(
            "systemd passed {} sockets; name the one to serve with FileDescriptorName= in the .socket unit",
            many.len()
        ),
    };
    Ok(Some(UnixListener::from(adopt(chosen))))
}

/// Takes ownership of a descriptor systemd passed us.
#[allow(unsafe_code)]
fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: sd_notify::listen_fds checked that LISTEN_PID is this process
    // and that fd lies in 3..3+LISTEN_FDS, the range systemd's protocol says
    // it opened for us and nothing else in this process owns (we never open
    // descriptors before this is called from start-up). It is taken once:
    // callers call this once, and we remove LISTEN_* right after... which
    // std::env::remove_var cannot do safely with threads running, so instead
    // the children we start get LISTEN_* removed (os::child::SERVICE_ENV).
    unsafe { OwnedFd::from_raw_fd(fd) }
}
