//! `relayd`: the bridge between the syncpipe stream and NATS JetStream. The
//! only module that uses an async runtime (tokio, which the NATS client
//! needs); it starts and ends inside [`run`], behind the `relay` feature.

mod connect;
mod out;
mod publish;
pub mod resume;
mod subscribe;
pub mod url;

pub use connect::Auth;
pub use publish::{PublishConfig, Retention};
pub use subscribe::SubscribeConfig;
pub use url::Broker;

use anyhow::Context;

/// The NATS headers every message carries (docs/protocol.md, "On NATS").
pub mod headers {
    /// The syncpipe stream id.
    pub const STREAM: &str = "Syncpipe-Stream";
    /// The record's seq (the last seq before it, for records without one).
    pub const SEQ: &str = "Syncpipe-Seq";
    /// `header`, `seq` (an event or end) or `other`.
    pub const TYPE: &str = "Syncpipe-Type";
    /// The current syncpipe header line, base64: any message is enough to
    /// start a consumer downstream.
    pub const HEADER: &str = "Syncpipe-Header";
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Common {
    pub broker: Broker,
    pub auth: Auth,
}

/// Which direction.
#[derive(Clone, Debug)]
pub enum Command {
    Publish(PublishConfig),
    Subscribe(SubscribeConfig),
}

/// A signal the main loops act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Usr1,
    Stop,
}

/// Sleeps for `d`; false when a stop signal came first.
async fn pause(
    d: std::time::Duration,
    signals: &mut tokio::sync::mpsc::UnboundedReceiver<Signal>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        s = signals.recv() => !matches!(s, Some(Signal::Stop) | None),
    }
}

/// Waits for a stop signal (SIGUSR1 meanwhile is only logged).
async fn stopped(signals: &mut tokio::sync::mpsc::UnboundedReceiver<Signal>) {
    while let Some(Signal::Usr1) = signals.recv().await {
        crate::log_notice!("not connected to a stream yet");
    }
}

/// Runs one direction on a single-threaded runtime, until stdin ends
/// (publish), or SIGTERM/SIGINT.
pub fn run(command: Command) -> anyhow::Result<()> {
    let signals = watch_signals()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Publish(c) => publish::run(c, signals).await,
            Command::Subscribe(c) => subscribe::run(c, signals).await,
        }
    })
}

/// Blocks SIGTERM, SIGINT, SIGHUP and SIGUSR1 and hands them to the loops
/// from a plain thread (no tokio signal driver needed).
fn watch_signals() -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<Signal>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signal::Signal as S;
    use std::os::fd::AsFd;
    let mut signals = crate::os::signals::Signals::standard()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            while let Ok(Some(s)) = signals.pending() {
                let signal = match s {
                    S::SIGUSR1 => Signal::Usr1,
                    S::SIGHUP => continue,
                    _ => Signal::Stop,
                };
                if tx.send(signal).is_err() {
                    return;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(rx)
}
