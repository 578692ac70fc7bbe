//! `relayd subscribe`: follows a JetStream stream through a durable pull
//! consumer and writes the syncpipe records on stdout, acknowledging each
//! only after it is written; gaps become a `rescan` of the root.

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
    /// How long stdout has not taken a line (downstream not reading).
    stdout_blocked: Option<Duration>,
    /// What the start-up replay did (status file `start`).
    start: String,
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
                    "stdout_blocked_seconds",
                    "How long writing stdout has waited for downstream to read (0: not waiting)",
                    self.stdout_blocked.map_or(0.0, |d| d.as_secs_f64()),
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
        doc.numbers
            .insert("start".into(), self.start.clone().into());
        (doc, metrics)
    }

    fn describe(&self, durable: &str) -> String {
        let blocked = match self.stdout_blocked {
            Some(d) => format!(
                "; blocked on stdout for {}s (downstream does not read)",
                d.as_secs()
            ),
            None => String::new(),
        };
        format!(
            "{durable}: wrote JetStream seq {} (stream {} seq {}); {} pending, {:.1}s behind{}{blocked}",
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

/// What to do once a message's lines are out: acknowledge it (a replay at
/// start has none) and count it as written.
struct Written {
    msg: Option<jetstream::Message>,
    js_seq: u64,
    stream: String,
    /// The record's seq, for records with one.
    seq: Option<u64>,
    /// A redelivery: acknowledged, nothing new written.
    duplicate: bool,
}

impl Written {
    async fn done(self, lag: &mut Lag) {
        if let Some(msg) = &self.msg {
            if let Err(e) = msg.ack().await {
                log_warn!("acknowledging JetStream message {}: {e}", self.js_seq);
            }
        }
        if !self.duplicate {
            lag.js_seq = self.js_seq;
            lag.stream = self.stream;
            if let Some(seq) = self.seq {
                lag.seq = seq;
            }
        }
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
    let mut out = super::out::Out::<Written>::start(std::io::stdout())?;
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
            let (lines, written) = replay(f, &stream, acked, &mut lag).await;
            out.send(lines, written)?;
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
                // No more is pulled while the writer has its fill.
                m = messages.next(), if out.has_room() => match m {
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
                        // The next refresh finds the oldest one left.
                        lag.pending = info.pending;
                        // A redelivery goes through the writer too (no
                        // lines): acknowledged only after what came before.
                        let written = Written {
                            js_seq: meta.js_seq,
                            seq: (meta.kind == Kind::Seq).then_some(meta.seq),
                            stream: meta.stream,
                            duplicate: step.duplicate,
                            msg: Some(msg),
                        };
                        out.send(step.lines, written)?;
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
                w = out.written() => w?.done(&mut lag).await,
                signal = signals.recv() => match signal {
                    Some(Signal::Usr1) => {
                        refresh(&stream, &consumer, &mut lag).await;
                        lag.stdout_blocked = out.blocked();
                        log_notice!("{}", lag.describe(&config.durable));
                    }
                    _ => {
                        sd.stopping("stopping");
                        // What the writer can still finish is acknowledged;
                        // the rest is delivered again at the next start.
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while out.waiting() > 0 {
                                match out.written().await {
                                    Ok(w) => w.done(&mut lag).await,
                                    Err(_) => break,
                                }
                            }
                        })
                        .await;
                        lag.stdout_blocked = out.blocked();
                        publisher.tick(true, |now| lag.views(durable, stream_name, ready, now));
                        // The last acknowledgements must reach the server,
                        // or the next start writes those records again.
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.flush()).await;
                        return Ok(());
                    }
                },
                _ = tick.tick() => {
                    refresh(&stream, &consumer, &mut lag).await;
                    lag.stdout_blocked = out.blocked();
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

/// At a process start on a consumer that had acknowledged up to `acked`:
/// the lines that write the last event acknowledged again, or, when it
/// cannot be found, what stands in for it — said in the log and in the
/// status file's `start`, never skipped without a word.
async fn replay(
    f: &mut Follower,
    stream: &jetstream::stream::Stream,
    acked: u64,
    lag: &mut Lag,
) -> (Vec<Vec<u8>>, Written) {
    let mut written = Written {
        msg: None,
        js_seq: acked,
        stream: String::new(),
        seq: None,
        duplicate: true,
    };
    let lines = match last_acknowledged(stream, acked).await {
        Found::Event(meta, payload) => {
            lag.start = format!(
                "wrote the last event acknowledged again (JetStream message {}, seq {})",
                meta.js_seq, meta.seq
            );
            log_info!(
                "{}: the pipeline that read it may not have applied it",
                lag.start
            );
            written = Written {
                js_seq: meta.js_seq,
                stream: meta.stream.clone(),
                seq: Some(meta.seq),
                duplicate: false,
                msg: None,
            };
            f.replayed(&meta, &payload).lines
        }
        Found::Nothing(why) => {
            lag.start = format!("nothing written again: {why}");
            log_notice!("{}", lag.start);
            Vec::new()
        }
        Found::Unknown(meta, why) => {
            lag.start = format!(
                "wrote a rescan of the root at seq {} (full sync): {why}",
                meta.seq
            );
            log_warn!(
                "full sync: the last event acknowledged before JetStream message {acked} is not found ({why}); writing a rescan of the root at seq {} in its place",
                meta.seq
            );
            lag.rescans += 1;
            f.replayed_rescan(&meta).lines
        }
    };
    (lines, written)
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

/// How far back the start-up replay looks for the last event (one
/// request per message).
const LOOKBACK: u64 = 4096;

/// What the look back for the last event acknowledged found.
enum Found {
    /// The last event at or before the cursor: written again.
    Event(Meta, Vec<u8>),
    /// Nothing to write again, and why (no change can be lost).
    Nothing(String),
    /// No event found, none ruled out: the message at the cursor (its
    /// stream, header and seq) and why. A rescan at its seq stands in.
    Unknown(Meta, String),
}

/// The last event at or before JetStream message `acked`, looking back past
/// pass-through records and `end`s, never past a header (nothing with a
/// change came since), for at most [`LOOKBACK`] messages.
async fn last_acknowledged(stream: &jetstream::stream::Stream, acked: u64) -> Found {
    let mut at_cursor: Option<Meta> = None;
    let oldest = acked.saturating_sub(LOOKBACK - 1).max(1);
    for js_seq in (oldest..=acked).rev() {
        let msg = match stream.get_raw_message(js_seq).await {
            Ok(m) => m,
            Err(e) => {
                return match at_cursor {
                    None => Found::Nothing(format!(
                        "the last message acknowledged ({js_seq}) cannot be read again ({e}); the next one shows whether anything was skipped"
                    )),
                    Some(meta) => Found::Unknown(
                        meta,
                        format!("JetStream message {js_seq} is gone ({e}) before an event was found"),
                    ),
                };
            }
        };
        let meta = meta_of(Some(&msg.headers), js_seq);
        match meta.kind {
            Kind::Header => {
                return Found::Nothing(format!(
                    "no event since the stream's header (JetStream message {js_seq})"
                ))
            }
            Kind::Seq if matches!(Record::parse(&msg.payload), Ok(Record::Event(_))) => {
                return Found::Event(meta, msg.payload.to_vec())
            }
            _ => {}
        }
        at_cursor.get_or_insert(meta);
    }
    match at_cursor {
        Some(meta) if meta.header.is_some() && meta.seq == 0 => {
            Found::Nothing("no event in the stream since its header".into())
        }
        Some(meta) if meta.header.is_some() && oldest > 1 => {
            Found::Unknown(meta, format!("no event among the last {LOOKBACK} messages"))
        }
        Some(_) if oldest > 1 => Found::Nothing(format!(
            "the last {LOOKBACK} messages are not syncpipe records"
        )),
        _ => Found::Nothing("no event in the stream before the cursor".into()),
    }
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
