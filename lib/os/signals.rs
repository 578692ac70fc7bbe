//! Termination signals as a file descriptor, so a `poll` loop sees SIGTERM,
//! SIGINT and SIGHUP next to its other inputs instead of being interrupted
//! at an arbitrary point. The mask is inherited by children: start them
//! with `os::child::command`, which clears it.

use std::os::fd::{AsFd, BorrowedFd};

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks `signals` for this thread (and threads it starts later) and
    /// returns a descriptor that becomes readable when one arrives.
    pub fn block(signals: &[Signal]) -> anyhow::Result<Self> {
        let mut set = SigSet::empty();
        for &s in signals {
            set.add(s);
        }
        set.thread_block().context("blocking signals")?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("creating signalfd")?;
        Ok(Signals { fd })
    }

    /// The standard set: SIGTERM and SIGINT stop, SIGHUP and SIGUSR1 are for
    /// the program to interpret.
    pub fn standard() -> anyhow::Result<Self> {
        Self::block(&[
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGUSR1,
        ])
    }

    /// A signal that has arrived, if any (never blocks).
    pub fn pending(&mut self) -> anyhow::Result<Option<Signal>> {
        match self.fd.read_signal().context("reading signalfd")? {
            Some(info) => Ok(Signal::try_from(info.ssi_signo as i32).ok()),
            None => Ok(None),
        }
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
