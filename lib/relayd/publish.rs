//! `relayd publish`: every stream record on stdin becomes one JetStream
//! message, its syncpipe identity in headers, refusing to share the stream
//! with a second live publisher.

use std::io::BufRead;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use async_nats::HeaderMap;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;

use super::resume::Kind;
use super::{headers, Common, Signal};
use crate::cli::exit::{coded, Code};
use crate::wire::event::Record;
use crate::{log_info, log_notice, log_warn};

/// Retention of a stream `relayd publish` creates (an existing stream keeps
/// its own settings). Discard is always "old": a slow replica never blocks
/// the source; it meets a gap and does a full sync instead.
#[derive(Clone, Debug, Default)]
pub struct Retention {
    pub max_msgs: Option<i64>,
    pub max_bytes: Option<i64>,
    pub max_age: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct PublishConfig {
    pub common: Common,
    pub retention: Retention,
}

/// What the publisher knows about the records it has passed on.
#[derive(Default)]
struct Position {
    stream: String,
    header: Option<String>,
    seq: u64,
    others: u64,
}

impl Position {
    /// Classifies `line`, updates the position, and returns the record's
    /// kind and its message id (`Nats-Msg-Id`: stream id + seq, so a
    /// republish of the same records is dropped by the server's dedup window).
    fn advance(&mut self, line: &[u8]) -> (Kind, String) {
        match Record::parse(line) {
            Ok(Record::Header(h)) => {
                self.stream = h.stream;
                self.header = Some(base64::engine::general_purpose::STANDARD.encode(line));
                self.seq = 0;
                self.others = 0;
                (Kind::Header, format!("{}-h", self.stream))
            }
            Ok(Record::Event(e)) => self.with_seq(e.seq),
            Ok(Record::End(e)) => self.with_seq(e.seq),
            _ => {
                self.others += 1;
                (
                    Kind::Other,
                    format!("{}-{}.{}", self.stream, self.seq, self.others),
                )
            }
        }
    }

    fn with_seq(&mut self, seq: u64) -> (Kind, String) {
        self.seq = seq;
        self.others = 0;
        (Kind::Seq, format!("{}-{seq}", self.stream))
    }
}

pub(super) async fn run(
    config: PublishConfig,
    mut signals: tokio::sync::mpsc::UnboundedReceiver<Signal>,
) -> anyhow::Result<()> {
    let broker = &config.common.broker;
    let client = super::connect::connect(broker, &config.common.auth, "relayd publish").await?;
    refuse_if_owned(&client, broker.owner_subject()).await?;
    let js = jetstream::new(client.clone());
    let mut last = ensure_stream(&js, &config).await?;
    let owner = tokio::spawn(answer_owner(client.clone(), broker.owner_subject()));

    let (tx, mut lines) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(tx))
        .context("starting the stdin reader")?;

    let mut sd = crate::os::systemd::Systemd::from_env();
    sd.ready(&format!("publishing to {}", broker.stream));
    let mut pos = Position::default();
    let mut published = 0u64;
    loop {
        let line = tokio::select! {
            line = lines.recv() => line,
            signal = signals.recv() => match signal {
                Some(Signal::Usr1) => {
                    log_notice!("published {published} records; JetStream last seq {last}; syncpipe stream {} seq {}", pos.stream, pos.seq);
                    continue;
                }
                _ => break,
            },
        };
        let Some(line) = line else { break };
        let (kind, msg_id) = pos.advance(&line);
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", msg_id.as_str());
        h.insert(headers::STREAM, pos.stream.as_str());
        h.insert(headers::SEQ, pos.seq.to_string().as_str());
        h.insert(headers::TYPE, kind.as_str());
        if let Some(header) = &pos.header {
            h.insert(headers::HEADER, header.as_str());
        }
        let payload = Bytes::from(line);
        last = match publish_one(&js, &config, h, payload, last, &mut signals).await? {
            Some(l) => l,
            None => {
                log_warn!(
                    "stopped while the server was away; the records not yet published are dropped with this stream (a new publisher's stream id makes subscribers do a full sync)"
                );
                break;
            }
        };
        published += 1;
        if sd.status_due() {
            sd.status(
                &format!(
                    "published {published}; stream {} seq {}; JetStream seq {last}",
                    pos.stream, pos.seq
                ),
                false,
            );
        }
        sd.tick();
    }
    owner.abort();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.flush()).await;
    log_info!("published {published} records");
    Ok(())
}

/// Publishes one message expecting the stream's last seq to be `last`,
/// retrying while the server is away; returns the new last seq.
async fn publish_one(
    js: &jetstream::Context,
    config: &PublishConfig,
    h: HeaderMap,
    payload: Bytes,
    last: u64,
    signals: &mut tokio::sync::mpsc::UnboundedReceiver<Signal>,
) -> anyhow::Result<Option<u64>> {
    let subject = config.common.broker.subject();
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    let mut last = last;
    loop {
        let mut hh = h.clone();
        hh.insert("Nats-Expected-Last-Sequence", last.to_string().as_str());
        let attempt = async {
            match js
                .publish_with_headers(subject.clone(), hh, payload.clone())
                .await
            {
                Ok(ack) => ack.await.map_err(|e| (e.kind(), e.to_string())),
                Err(e) => Err((e.kind(), e.to_string())),
            }
        };
        // A stop while waiting for the server's answer ends the wait; the
        // message may or may not be stored, which the next publisher's new
        // stream id makes harmless.
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            signal = signals.recv() => match signal {
                Some(Signal::Usr1) => continue,
                _ => return Ok(None),
            },
        };
        match outcome {
            Ok(ack) => {
                if warned {
                    log_notice!("publishing again");
                }
                return Ok(Some(last.max(ack.sequence)));
            }
            Err((PublishErrorKind::WrongLastSequence, _)) => {
                return Err(coded(
                    Code::Owned,
                    format!(
                        "another publisher wrote to JetStream stream {subject} (expected its last message to be {last}); refusing to interleave two syncpipe streams"
                    ),
                ))
            }
            Err((PublishErrorKind::StreamNotFound, _)) => {
                log_warn!(
                    "JetStream stream {} is gone; making it again (its subscribers will do a full sync)",
                    config.common.broker.stream
                );
                match ensure_stream(js, config).await {
                    Ok(l) => last = l,
                    Err(e) => {
                        log_warn!("{e:#}");
                        if !super::pause(backoff, signals).await {
                            return Ok(None);
                        }
                    }
                }
            }
            Err((_, why)) => {
                if !warned {
                    log_warn!("publishing failed ({why}); retrying until the server answers");
                    warned = true;
                }
                if !super::pause(backoff, signals).await {
                    return Ok(None);
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Opens the stream, making it when missing; returns its last seq.
async fn ensure_stream(js: &jetstream::Context, config: &PublishConfig) -> anyhow::Result<u64> {
    let broker = &config.common.broker;
    let r = &config.retention;
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: broker.stream.clone(),
            subjects: vec![broker.subject()],
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            max_messages: r.max_msgs.unwrap_or(-1),
            max_bytes: r.max_bytes.unwrap_or(-1),
            max_age: r.max_age.unwrap_or_default(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("opening JetStream stream {}", broker.stream))?;
    Ok(stream
        .info()
        .await
        .context("reading the stream's state")?
        .state
        .last_sequence)
}

/// Refuses to start when a live publisher answers on the owner subject.
async fn refuse_if_owned(client: &async_nats::Client, subject: String) -> anyhow::Result<()> {
    use async_nats::client::RequestErrorKind;
    let request = async_nats::Request::new().timeout(Some(Duration::from_secs(2)));
    match client.send_request(subject.clone(), request).await {
        Ok(reply) => Err(coded(
            Code::Owned,
            format!(
                "another relayd publish is live on this stream ({}); refusing to interleave two syncpipe streams",
                String::from_utf8_lossy(&reply.payload)
            ),
        )),
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(coded(
            Code::Owned,
            format!("could not tell whether another publisher is live ({e}); refusing"),
        )),
    }
}

/// Answers "who publishes here?" with this host and process.
async fn answer_owner(client: async_nats::Client, subject: String) {
    let Ok(mut sub) = client.subscribe(subject).await else {
        log_warn!(
            "cannot announce this publisher; a second one would only be caught by sequence checks"
        );
        return;
    };
    let me = format!(
        "host {}, pid {}",
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    );
    while let Some(msg) = sub.next().await {
        if let Some(reply) = msg.reply {
            client.publish(reply, me.clone().into()).await.ok();
        }
    }
}

/// Reads stdin line by line (bytes, newline removed, blank lines skipped)
/// into the channel; ends at EOF.
fn read_lines(tx: tokio::sync::mpsc::Sender<Vec<u8>>) {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log_warn!("reading stdin: {e}");
                return;
            }
        }
    }
}
