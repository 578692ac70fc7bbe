//! A socket reader for consumers that read a byte stream (pushd polls its
//! input descriptor next to its signals): a thread runs the [`Connector`]
//! and writes what it receives into a pipe, whose read end the consumer
//! reads as if it were stdin.
//!
//! A gap (the writer could not resume us) is handed on as the handshake's
//! own `{"type":"resume","full":true}` line, which [`RecordReader`] turns
//! back into [`Item::Gap`]; a malformed line from the writer likewise.
//!
//! [`RecordReader`]: crate::wire::reader::RecordReader

use std::io::{PipeReader, Write};
use std::path::Path;
use std::thread;

use anyhow::Context;

use super::client::Connector;
use crate::wire::reader::Item;

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
            // Signals are the consumer's to read (it blocks them for its own
            // threads later than this one starts): never take one here.
            let _ = nix::sys::signal::SigSet::all().thread_block();
            let mut line = Vec::new();
            loop {
                line.clear();
                let written = match connector.next_item(&|| false) {
                    Ok(Some(Item::Record(record))) => record.write_line(&mut line).map_err(|_| ()),
                    Ok(Some(Item::Gap { reason })) => {
                        crate::log_warn!("{reason}: asking for a full sync");
                        full_resume(&mut line)
                    }
                    Ok(Some(Item::Malformed { line_no, error })) => {
                        crate::log_warn!("line {line_no} from the writer is malformed ({error}): asking for a full sync");
                        full_resume(&mut line)
                    }
                    Ok(None) => return,
                    Err(e) => {
                        crate::log_error!("{e:#}");
                        return;
                    }
                };
                if written.is_err() || writer.write_all(&line).is_err() {
                    return; // the consumer has gone
                }
            }
        })
        .context("starting the connector thread")?;
    Ok(reader)
}

fn full_resume(line: &mut Vec<u8>) -> Result<(), ()> {
    line.extend_from_slice(b"{\"type\":\"resume\",\"full\":true}\n");
    Ok(())
}
