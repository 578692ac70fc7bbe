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
