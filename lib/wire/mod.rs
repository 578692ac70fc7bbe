//! What every program speaks: the stream's records, paths as bytes on the
//! wire, reading and writing lines, and the sockets a stream travels over.
//!
//! - [`event`]: the schema, version 1 (`docs/protocol.md` is its prose twin);
//! - [`path`]: a path as `{"text": …}` or `{"bytes": …}`, nothing lost;
//! - [`reader`]: bounded line reading into records;
//! - [`writer`]: `event` lines written by hand, byte for byte serde's;
//! - [`scan`]: `event` lines of the writer's shape read by hand (serde for the rest);
//! - [`transport`]: `--listen`/`--connect` sockets, backlog, activation.

pub mod event;
pub mod path;
pub mod reader;
pub(crate) mod scan;
pub mod transport;
pub(crate) mod writer;
