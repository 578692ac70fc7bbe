//! A reader that stops at SIGTERM or SIGINT: input (usually stdin) is
//! polled together with a signalfd, so a program blocked waiting for the
//! next record still ends cleanly, and a periodic callback (the systemd
//! watchdog) runs while the input is quiet.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use crate::os::signals::Signals;

/// The error a read returns once a termination signal arrived; recognise it
/// with [`is_stop`].
#[derive(Debug, thiserror::Error)]
#[error("stopped by {0}")]
pub struct Stopped(pub Signal);

/// True when `err` (anywhere in its chain) is a [`Stopped`].
pub fn is_stop(err: &io::Error) -> Option<Signal> {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<Stopped>())
        .map(|s| s.0)
}

pub struct Interruptible<R> {
    input: R,
    signals: Signals,
    idle: Box<dyn FnMut() + Send>,
    every: Duration,
    /// What to do with a signal other than SIGTERM/SIGINT.
    other: Option<Box<dyn FnMut(Signal) + Send>>,
}

impl<R: Read + AsFd> Interruptible<R> {
    /// `signals` must have been blocked before any other thread started.
    /// `idle` runs before every read and at least every `every` while waiting.
    pub fn new(input: R, signals: Signals, every: Duration, idle: Box<dyn FnMut() + Send>) -> Self {
        Interruptible {
            input,
            signals,
            idle,
            every,
            other: None,
        }
    }

    /// Hands every other blocked signal (SIGHUP, SIGUSR1, SIGUSR2) to
    /// `handler` instead of ignoring it.
    pub fn on_signal(mut self, handler: Box<dyn FnMut(Signal) + Send>) -> Self {
        self.other = Some(handler);
        self
    }
}

/// The handler [`Interruptible::on_signal`] takes.
pub type OnSignal = Option<Box<dyn FnMut(Signal) + Send>>;

impl<R> Interruptible<R> {
    /// The signals and their handler, to keep watching them once the input
    /// has ended (a program still finishing its work must stop on SIGTERM too).
    pub fn into_parts(self) -> (Signals, OnSignal) {
        (self.signals, self.other)
    }
}

/// Waits up to `timeout` for SIGTERM or SIGINT on `signals`; others go to
/// `other` (or are logged and ignored). For a loop with no input left to poll.
pub fn wait_for_stop(
    signals: &mut Signals,
    other: &mut OnSignal,
    timeout: Duration,
) -> io::Result<Option<Signal>> {
    let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(io::Error::from(e)),
    }
    while let Some(signal) = signals.pending().map_err(io::Error::other)? {
        match signal {
            Signal::SIGTERM | Signal::SIGINT => return Ok(Some(signal)),
            signal => match other {
                Some(handler) => handler(signal),
                None => crate::log_info!("ignoring {signal}"),
            },
        }
    }
    Ok(None)
}

impl<R: Read + AsFd> Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Also on a busy input: the watchdog must hear from us either way.
            (self.idle)();
            let (input_ready, signal_ready) = {
                let mut fds = [
                    PollFd::new(self.input.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                ];
                let timeout = PollTimeout::try_from(self.every).unwrap_or(PollTimeout::MAX);
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(io::Error::from(e)),
                }
                let ready = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
                (
                    !ready(&fds[0]).is_empty(),
                    ready(&fds[1]).contains(PollFlags::POLLIN),
                )
            };
            if signal_ready {
                while let Some(signal) = self.signals.pending().map_err(io::Error::other)? {
                    match signal {
                        Signal::SIGTERM | Signal::SIGINT => {
                            return Err(io::Error::other(Stopped(signal)))
                        }
                        other => match &mut self.other {
                            Some(handler) => handler(other),
                            None => crate::log_info!("ignoring {other}"),
                        },
                    }
                }
            }
            if input_ready {
                return self.input.read(buf);
            }
        }
    }
}
