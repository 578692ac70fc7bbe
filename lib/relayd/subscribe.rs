//! `relayd subscribe`: follows a JetStream stream through a durable pull
//! consumer and writes the syncpipe records on stdout, acknowledging each
//! only after it is written; gaps become a `rescan` of the root.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use base64::Engine;
use futures_util::StreamExt;

use super::resume::{Follower, Kind, Meta, Start};
use super::{headers, Common, Signal};
use crate::wire::event::Record;
use crate::{log_info, log_notice, log_warn};

#[derive(Clone, Debug)]
pub struct SubscribeConfig {
    pub common: Common,
    /// The durable consumer's name: one per replica.
    pub durable: String,
    /// `--log-lag`: also log the lag this often (where `STATUS=` is taken
    /// by another stage, as in syncpipe-replica@.service).
    pub log_lag: Option<Duration>,
    /// `--status-file`, `--metrics-file`: the lag for `syncpipe status`
    /// and node_exporter (lib/health/).
    pub health: crate::health::publish::HealthFiles,
}

/// How far this replica is behind, as the server counts it.
#[derive(Debug, Default)]
struct Lag {
    /// Messages not yet delivered plus delivered but unacknowledged.
    pending: u64,
    /// The last message written: JetStream seq, syncpipe stream and seq.
    js_seq: u64,
    stream: String,
    seq: u64,
    /// When the server stored the oldest message this consumer has not
    /// acknowledged (None: nothing pending, or not known yet).
    oldest_ns: Option<i128>,
    /// Rescans of the root written after gaps.
    rescans: u64,
    /// The server answered the last look at the consumer.
    reachable: bool,
}

impl Lag {
    /// Age of the oldest message not acknowledged: 0 when nothing is pending.
    fn seconds(&self, now: std::time::SystemTime) -> f64 {
        match (self.pending, self.oldest_ns) {
            (0, _) | (_, None) => 0.0,
            (_, Some(t)) => {
                let now = now
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128);
                ((now - t) as f64 / 1e9).max(0.0)
            }
        }
    }

    /// The status file and metrics: the consumer's own numbers.
    fn views(
        &self,
        durable: &str,
        stream: &str,
        ready: bool,
        now: std::time::SystemTime,
    ) -> (crate::health::status::StatusDoc, String) {
        use crate::health::status::{program_views, Number, StatusDoc};
        let mut doc = StatusDoc::new("relayd", now, ready, self.describe(durable));
        let metrics = program_views(
            &mut doc,
            &[("durable", durable), ("stream", stream)],
            &[
                Number::gauge(
                    "pending_messages",
                    "Messages of the stream this replica's consumer has not acknowledged (num_pending + num_ack_pending)",
                    self.pending as f64,
                ),
                Number::gauge(
                    "behind_seconds",
                    "Age of the oldest message not acknowledged (0 when none is pending)",
                    self.seconds(now),
                ),
                Number::gauge(
                    "written_jetstream_seq",
                    "JetStream sequence of the last message written downstream",
                    self.js_seq as f64,
                ),
                Number::gauge(
                    "written_seq",
                    "syncpipe seq of the last record with a seq written downstream",
                    self.seq as f64,
                ),
                Number::counter(
                    "rescans_total",
                    "Full syncs asked for (a rescan of the root written after a gap)",
                    self.rescans,
                ),
                Number::gauge(
                    "broker_up",
                    "1 when the server answered the last look at the consumer (every 2 s)",
                    f64::from(u8::from(self.reachable)),
                ),
            ],
        );
        // Who this is, for `syncpipe status`.
        doc.numbers.insert("durable".into(), durable.into());
        doc.numbers.insert("stream".into(), stream.into());
        (doc, metrics)
    }

    fn describe(&self, durable: &str) -> String {
        format!(
            "{durable}: wrote JetStream seq {} (stream {} seq {}); {} pending, {:.1}s behind{}",
            self.js_seq,
            self.stream,
            self.seq,
            self.pending,
            self.seconds(std::time::SystemTime::now()),
            if self.reachable {
                ""
            } else {
                "; the server does not answer"
            }
        )
    }
}

pub(super) async fn run(
    config: SubscribeConfig,
    mut signals: tokio::sync::mpsc::UnboundedReceiver<Signal>,
) -> anyhow::Result<()> {
    let broker = &config.common.broker;
    let client = super::connect::connect(broker, &config.common.auth, "relayd subscribe").await?;
    let js = jetstream::new(client.clone());
    let mut sd = crate::os::systemd::Systemd::from_env();
    let mut lag = Lag::default();
    let mut follower: Option<Follower> = None;
    let mut ready = false;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut logged = std::time::Instant::now();
    let mut out = std::io::stdout().lock();
    let mut publisher = crate::health::publish::Publisher::new(&config.health);
    let (durable, stream_name) = (config.durable.as_str(), broker.stream.as_str());
    loop {
        let (stream, consumer, start) = tokio::select! {
            r = setup(&js, &config) => r?,
            _ = super::stopped(&mut signals) => return Ok(()),
        };
        let process_start = follower.is_none();
        match &mut follower {
            None => follower = Some(Follower::new(start)),
            Some(f) => f.restart(start),
        }
        let f = follower.as_mut().expect("set above");
        if let (true, Start::After(acked)) = (process_start, start) {
            if let Some((meta, payload)) = last_acknowledged(&stream, acked).await {
                log_info!(
                    "writing the last event acknowledged (JetStream message {}, seq {}) again: the pipeline that read it may not have applied it",
                    meta.js_seq,
                    meta.seq
                );
                write_lines(&mut out, &f.replayed(&meta, &payload).lines)?;
                lag.js_seq = meta.js_seq;
                lag.seq = meta.seq;
                lag.stream = meta.stream;
            }
        }
        let mut messages = consumer
            .messages()
            .await
            .context("pulling from the consumer")?;
        if !ready {
            refresh(&stream, &consumer, &mut lag).await;
            sd.ready(&lag.describe(&config.durable));
            ready = true;
        }
        log_info!(
            "following {} as {} ({start:?})",
            broker.stream,
            config.durable
        );
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(Ok(msg)) => {
                        let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
                        let meta = meta_of(msg.headers.as_ref(), info.stream_sequence);
                        let step = f.accept(&meta, &msg.payload);
                        if let Some(why) = &step.rescan {
                            log_warn!("full sync: {why}; writing a rescan of the root");
                            lag.rescans += 1;
                        }
                        if let Some(why) = &step.warning {
                            log_notice!("{why}");
                        }
                        write_lines(&mut out, &step.lines)?;
                        if let Err(e) = msg.ack().await {
                            log_warn!("acknowledging JetStream message {}: {e}", meta.js_seq);
                        }
                        if !step.duplicate {
                            lag.js_seq = meta.js_seq;
                            lag.stream = meta.stream;
                            if meta.kind == Kind::Seq { lag.seq = meta.seq; }
                        }
                        // The next refresh finds the oldest one left.
                        lag.pending = info.pending;
                    }
                    Some(Err(e)) => {
                        use consumer::pull::MessagesErrorKind as K;
                        match e.kind() {
                            K::MissingHeartbeat => log_info!("no heartbeat from the server; waiting"),
                            _ => {
                                log_warn!("consumer {}: {e}; setting up again", config.durable);
                                if !super::pause(Duration::from_secs(1), &mut signals).await {
                                    return Ok(());
                                }
                                break;
                            }
                        }
                    }
                    None => break,
                },
                signal = signals.recv() => match signal {
                    Some(Signal::Usr1) => {
                        refresh(&stream, &consumer, &mut lag).await;
                        log_notice!("{}", lag.describe(&config.durable));
                    }
                    _ => {
                        sd.stopping("stopping");
                        publisher.tick(true, |now| lag.views(durable, stream_name, ready, now));
                        // The last acknowledgements must reach the server,
                        // or the next start writes those records again.
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.flush()).await;
                        return Ok(());
                    }
                },
                _ = tick.tick() => {
                    refresh(&stream, &consumer, &mut lag).await;
                    sd.status(&lag.describe(&config.durable), false);
                    sd.tick();
                    publisher.changed();
                    publisher.tick(false, |now| lag.views(durable, stream_name, ready, now));
                    if config.log_lag.is_some_and(|every| logged.elapsed() >= every) {
                        logged = std::time::Instant::now();
                        log_notice!("{}", lag.describe(&config.durable));
                    }
                }
            }
        }
    }
}

/// The consumer's own numbers: what it has yet to deliver and what awaits
/// acks, and when the server stored the oldest of them (the message after
/// the ack floor, or the stream's first when that one was trimmed).
/// Bounded in time: while the server is away the loop must stay responsive.
async fn refresh(
    stream: &jetstream::stream::Stream,
    consumer: &consumer::PullConsumer,
    lag: &mut Lag,
) {
    let mut consumer = consumer.clone();
    let numbers = async {
        let info = consumer.info().await.ok()?;
        let pending = info.num_pending + info.num_ack_pending as u64;
        if pending == 0 {
            return Some((0, None));
        }
        let next = info.ack_floor.stream_sequence + 1;
        let oldest = match stream.get_raw_message(next).await {
            Ok(m) => Some(m.time),
            Err(_) => {
                let first = stream.clone().info().await.ok()?.state.first_sequence;
                stream
                    .get_raw_message(first.max(next))
                    .await
                    .ok()
                    .map(|m| m.time)
            }
        };
        Some((pending, oldest.map(|t| t.unix_timestamp_nanos())))
    };
    match tokio::time::timeout(Duration::from_secs(1), numbers).await {
        Ok(Some((pending, oldest))) => {
            lag.pending = pending;
            lag.oldest_ns = oldest;
            lag.reachable = true;
        }
        _ => lag.reachable = false,
    }
}

/// Writes `lines` and flushes: acknowledging comes after.
fn write_lines(out: &mut impl Write, lines: &[Vec<u8>]) -> anyhow::Result<()> {
    for line in lines {
        out.write_all(line).context("writing stdout")?;
        out.write_all(b"\n").context("writing stdout")?;
    }
    out.flush().context("writing stdout")
}

/// The last event at or before JetStream message `acked`, looking back past
/// pass-through records and `end`s (at most 64 messages, and never past a
/// header: nothing with a change came since). `None` when there is none or
/// it is gone (trimmed): then the next message proves continuity or not.
async fn last_acknowledged(
    stream: &jetstream::stream::Stream,
    acked: u64,
) -> Option<(Meta, Vec<u8>)> {
    for js_seq in (acked.saturating_sub(63).max(1)..=acked).rev() {
        let msg = match stream.get_raw_message(js_seq).await {
            Ok(m) => m,
            Err(e) => {
                log_notice!(
                    "the last message acknowledged ({js_seq}) cannot be read again ({e}); the next one shows whether anything was skipped"
                );
                return None;
            }
        };
        let meta = meta_of(Some(&msg.headers), js_seq);
        match meta.kind {
            Kind::Header => return None,
            Kind::Seq if matches!(Record::parse(&msg.payload), Ok(Record::Event(_))) => {
                return Some((meta, msg.payload.to_vec()))
            }
            _ => {}
        }
    }
    None
}

/// The syncpipe identity relayd publish put in the headers; a message from
/// elsewhere counts as a pass-through record of no stream.
fn meta_of(headers: Option<&async_nats::HeaderMap>, js_seq: u64) -> Meta {
    let get = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    Meta {
        js_seq,
        stream: get(headers::STREAM).unwrap_or_default(),
        seq: get(headers::SEQ).and_then(|s| s.parse().ok()).unwrap_or(0),
        kind: get(headers::TYPE)
            .map(|t| Kind::parse(&t))
            .unwrap_or(Kind::Other),
        header: get(headers::HEADER)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok()),
    }
}

/// Finds the stream (waiting for a publisher to make it) and the durable
/// consumer, and says whether its cursor can be trusted: a consumer made for
/// an earlier incarnation of the stream (recreated: a different creation
/// time) is replaced and starts [`Start::Fresh`].
async fn setup(
    js: &jetstream::Context,
    config: &SubscribeConfig,
) -> anyhow::Result<(jetstream::stream::Stream, consumer::PullConsumer, Start)> {
    let name = &config.common.broker.stream;
    let mut waited = false;
    let mut stream = loop {
        match js.get_stream(name).await {
            Ok(s) => break s,
            Err(e) => {
                if !waited {
                    log_notice!("waiting for JetStream stream {name} ({e})");
                    waited = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let created = stream.info().await.context("reading the stream")?.created;
    let description = format!(
        "syncpipe relayd replica of stream {name} created {}",
        created.unix_timestamp_nanos()
    );
    let start = match stream.consumer_info(&config.durable).await {
        Ok(info) if info.config.description.as_deref() == Some(description.as_str()) => {
            Start::After(info.ack_floor.stream_sequence)
        }
        Ok(_) => {
            log_warn!(
                "consumer {} was made for another incarnation of stream {name}; replacing it (full sync)",
                config.durable
            );
            stream
                .delete_consumer(&config.durable)
                .await
                .context("deleting the stale consumer")?;
            Start::Fresh
        }
        Err(e) => {
            log_info!("creating consumer {} ({e})", config.durable);
            Start::Fresh
        }
    };
    let consumer = stream
        .get_or_create_consumer(
            &config.durable,
            consumer::pull::Config {
                durable_name: Some(config.durable.clone()),
                description: Some(description),
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("creating consumer {}", config.durable))?;
    Ok((stream, consumer, start))
}
