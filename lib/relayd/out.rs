//! stdout off the async loop: a plain thread writes and flushes each
//! message's lines, and the loop acknowledges a message only once the
//! thread says its lines are out. While downstream does not read, the loop
//! keeps answering signals and keeps `STATUS=` and the status file fresh,
//! saying that it waits on stdout.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Messages handed to the writer and not yet confirmed, at most: the loop
/// pulls no more meanwhile, so a stalled reader holds back the consumer
/// (the broker keeps the rest), not relayd's memory.
const IN_FLIGHT: usize = 256;

/// The writer thread's end, and what waits for it in order.
pub(super) struct Out<T> {
    lines: tokio::sync::mpsc::Sender<Vec<Vec<u8>>>,
    written: tokio::sync::mpsc::UnboundedReceiver<std::io::Result<()>>,
    /// One entry per batch handed over: what to do once it is written.
    waiting: VecDeque<T>,
    /// The last time the writer finished a batch, or the queue went from
    /// empty to busy.
    moved: Instant,
}

impl<T> Out<T> {
    /// Starts the thread writing to `out`.
    pub(super) fn start(out: impl Write + Send + 'static) -> anyhow::Result<Self> {
        let (lines, mut rx) = tokio::sync::mpsc::channel::<Vec<Vec<u8>>>(IN_FLIGHT);
        let (done, written) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                let mut out = out;
                while let Some(batch) = rx.blocking_recv() {
                    let r = write_lines(&mut out, &batch);
                    let failed = r.is_err();
                    if done.send(r).is_err() || failed {
                        return;
                    }
                }
            })
            .context("starting the stdout writer")?;
        Ok(Out {
            lines,
            written,
            waiting: VecDeque::new(),
            moved: Instant::now(),
        })
    }

    /// Room for another batch without waiting.
    pub(super) fn has_room(&self) -> bool {
        self.waiting.len() < IN_FLIGHT
    }

    /// Hands `lines` to the writer; `then` comes back from [`written`](Self::written)
    /// once they are out. Call only when [`has_room`](Self::has_room).
    pub(super) fn send(&mut self, lines: Vec<Vec<u8>>, then: T) -> anyhow::Result<()> {
        if self.waiting.is_empty() {
            self.moved = Instant::now();
        }
        self.lines
            .try_send(lines)
            .map_err(|_| anyhow::anyhow!("writing stdout: the writer stopped"))?;
        self.waiting.push_back(then);
        Ok(())
    }

    /// The next batch written, oldest first (pending forever while none is
    /// waiting); an error once stdout failed.
    pub(super) async fn written(&mut self) -> anyhow::Result<T> {
        if self.waiting.is_empty() {
            return std::future::pending().await;
        }
        match self.written.recv().await {
            Some(Ok(())) => {
                self.moved = Instant::now();
                Ok(self.waiting.pop_front().expect("one was waiting"))
            }
            Some(Err(e)) => Err(e).context("writing stdout"),
            None => anyhow::bail!("writing stdout: the writer stopped"),
        }
    }

    /// How long the writer has been stuck on a batch (downstream not
    /// reading), once that is longer than a moment.
    pub(super) fn blocked(&self) -> Option<Duration> {
        let stuck = self.moved.elapsed();
        (!self.waiting.is_empty() && stuck >= Duration::from_secs(1)).then_some(stuck)
    }

    /// Batches handed over and not yet written.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// Writes `lines` and flushes: acknowledging comes after.
fn write_lines(out: &mut impl Write, lines: &[Vec<u8>]) -> std::io::Result<()> {
    for line in lines {
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that blocks until told, standing in for a full pipe.
    struct Gate(
        std::sync::mpsc::Receiver<()>,
        std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    );

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.recv().map_err(std::io::Error::other)
        }
    }

    #[test]
    fn batches_come_back_in_order_once_written_and_a_stall_is_seen() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (open, gate) = std::sync::mpsc::channel();
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut out = Out::start(Gate(gate, seen.clone())).unwrap();
            out.send(vec![b"a".to_vec()], 1).unwrap();
            out.send(vec![b"b".to_vec(), b"c".to_vec()], 2).unwrap();
            // Nothing written while the reader stalls: the loop is not held.
            let early = tokio::time::timeout(Duration::from_millis(50), out.written()).await;
            assert!(early.is_err());
            assert_eq!(out.waiting(), 2);
            tokio::time::sleep(Duration::from_millis(1100)).await;
            assert!(out.blocked().is_some());
            open.send(()).unwrap();
            assert_eq!(out.written().await.unwrap(), 1);
            open.send(()).unwrap();
            assert_eq!(out.written().await.unwrap(), 2);
            assert_eq!(seen.lock().unwrap().as_slice(), b"a\nb\nc\n");
            // Nothing waits now: not blocked, however slow this machine is.
            assert!(out.blocked().is_none());
        });
    }
}
