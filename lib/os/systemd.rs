//! Talking to systemd: `READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`.
//!
//! Every call is a no-op without `NOTIFY_SOCKET`, so the same binary runs
//! unchanged from a shell. Errors are logged once and otherwise ignored: a
//! broken notify socket must not stop a sync. sd-notify treats an abstract
//! socket (`@name`) as a path, so those are sent here directly.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

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
pub fn child_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
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

/// How often `STATUS=` may change: a person reads it, a busy watcher must not
/// spend a syscall per event on it.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

pub struct Systemd {
    socket: Option<std::ffi::OsString>,
    watchdog: Option<Duration>,
    last_ping: Instant,
    last_status: Option<Instant>,
    warned: bool,
}

impl Systemd {
    pub fn from_env() -> Self {
        Systemd {
            socket: std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()),
            watchdog: sd_notify::watchdog_enabled(),
            last_ping: Instant::now(),
            last_status: None,
            warned: false,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        self.last_status = Some(Instant::now());
    }

    /// Updates `STATUS=` at most every couple of seconds unless `force`.
    pub fn status(&mut self, status: &str, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last_status
                .is_some_and(|t| now.duration_since(t) < STATUS_INTERVAL)
        {
            return;
        }
        self.last_status = Some(now);
        self.send(&[NotifyState::Status(status)]);
    }

    /// True when a status update would be sent now (lets callers skip
    /// formatting the text).
    pub fn status_due(&self) -> bool {
        self.is_enabled()
            && self
                .last_status
                .is_none_or(|t| t.elapsed() >= STATUS_INTERVAL)
    }

    pub fn stopping(&mut self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Asks for more start-up time while a long initial scan runs.
    pub fn extend_timeout(&mut self, by: Duration) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
    }

    /// Pings the watchdog when half its interval has passed. Call from the
    /// main loop; [`poll_timeout`](Self::poll_timeout) says how long it may sleep.
    pub fn tick(&mut self) {
        if let Some(interval) = self.watchdog {
            if self.last_ping.elapsed() >= interval / 2 {
                self.last_ping = Instant::now();
                self.send(&[NotifyState::Watchdog]);
            }
        }
    }

    /// The longest a main loop may block before it must call [`tick`](Self::tick).
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.watchdog
            .map(|interval| (interval / 2).saturating_sub(self.last_ping.elapsed()))
    }

    fn send(&mut self, states: &[NotifyState]) {
        let Some(socket) = &self.socket else { return };
        let result = match socket.as_encoded_bytes().strip_prefix(b"@") {
            Some(name) => send_abstract(name, states),
            None => sd_notify::notify(states),
        };
        if let Err(e) = result {
            if !self.warned {
                self.warned = true;
                crate::log_warn!("cannot notify systemd at {socket:?}: {e} (carrying on)");
            }
        }
    }
}

fn send_abstract(name: &[u8], states: &[NotifyState]) -> std::io::Result<()> {
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    let addr = SocketAddr::from_abstract_name(name)?;
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
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
            let out = child_command("grep")
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
        let cmd = child_command("rsync");
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
