//! A socket reader for consumers that read a byte stream (pushd polls its
//! input descriptor next to its signals): a thread runs the [`Connector`]
//! and writes what it receives into a pipe, whose read end the consumer
//! reads as if it were stdin.
//!
//! A gap (the writer could not resume us) becomes a `rescan` event of the
//! root, with the seq reached so far: every consumer already answers that
//! with a full sync.

use std::io::{PipeReader, Write};
use std::path::Path;
use std::thread;

use anyhow::Context;

use super::client::Connector;
use crate::event::{Event, EventKind, Record, Timestamp};
use crate::stream::Item;
use crate::wirepath::WirePath;

/// Starts the connector thread; returns the pipe's read end.
pub fn connect_as_pipe(
    path: &Path,
    resume_from: Option<(String, u64)>,
) -> anyhow::Result<PipeReader> {
    let (reader, mut writer) = std::io::pipe().context("making a pipe")?;
    let mut connector = Connector::new(path, resume_from);
    thread::Builder::new()
        .name("connect".into())
        .spawn(move || {
            let mut line = Vec::new();
            loop {
                let record = match connector.next_item(&|| false) {
                    Ok(Some(Item::Record(record))) => record,
                    Ok(Some(Item::Gap { reason })) => {
                        crate::log_warn!("{reason}: asking for a full sync");
                        rescan(connector.seq())
                    }
                    Ok(Some(Item::Malformed { line_no, error })) => {
                        crate::log_warn!("line {line_no} from the writer is malformed ({error}): asking for a full sync");
                        rescan(connector.seq())
                    }
                    Ok(None) => return,
                    Err(e) => {
                        crate::log_error!("{e:#}");
                        return;
                    }
                };
                line.clear();
                if record.write_line(&mut line).is_err() || writer.write_all(&line).is_err() {
                    return; // the consumer has gone
                }
            }
        })
        .context("starting the connector thread")?;
    Ok(reader)
}

fn rescan(seq: u64) -> Record {
    Record::Event(Event {
        seq,
        ts: Timestamp::now(),
        kind: EventKind::Rescan,
        path: WirePath::root(),
        dir: true,
        from: None,
    })
}
