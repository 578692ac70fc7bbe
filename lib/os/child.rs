//! The one way a program starts a child (rsync, ssh, ssh-keygen, a remote
//! `watchd`): without systemd's service variables and with no signal blocked.

/// The environment variables systemd hands to a service that its children
/// (rsync, ssh) must not inherit: they would notify on our behalf.
pub const SERVICE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// A command for a child process (rsync, ssh, ssh-keygen) that starts
/// clean: without the service variables above (a child that inherited
/// NOTIFY_SOCKET could tell systemd it is ready, or stopping, on our
/// behalf), and with no signal blocked. Our programs block SIGTERM, SIGINT,
/// SIGHUP and SIGUSR1 to read them from a signalfd, and std does not reset
/// the mask for a child (checked on this kind of machine: the child's
/// SigBlk showed them), so an rsync would otherwise ignore the SIGTERM that
/// `systemctl stop` sends to the whole unit.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    for var in SERVICE_ENV {
        cmd.env_remove(var);
    }
    unblock_signals_in_child(&mut cmd);
    cmd
}

#[allow(unsafe_code)]
fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: sigprocmask is one, and
    // nothing is allocated or locked.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_start_with_no_signal_blocked() {
        // A thread of its own, so blocking here leaves the test harness alone.
        std::thread::spawn(|| {
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(nix::sys::signal::Signal::SIGTERM);
            set.thread_block().unwrap();
            let out = command("grep")
                .args(["SigBlk", "/proc/self/status"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(text.trim(), "SigBlk:\t0000000000000000", "{text}");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn children_do_not_inherit_systemd_variables() {
        let cmd = command("rsync");
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for var in SERVICE_ENV {
            assert!(removed.iter().any(|r| r == var), "{var} kept");
        }
    }
}
