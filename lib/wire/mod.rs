//! What every program speaks: the stream's records, paths as bytes on the
//! wire, reading and writing lines, and the sockets a stream travels over.
//!
//! - [`event`]: the schema, version 1 (`docs/protocol.md` is its prose twin);
//! - [`path`]: a path as `{"text": …}` or `{"bytes": …}`, nothing lost;
//! - [`reader`]: bounded line reading into records;
//! - [`writer`]: one flushed line per record;
//! - [`transport`]: `--listen`/`--connect` sockets, backlog, activation.

pub mod event;
pub mod path;
pub mod reader;
pub mod transport;
pub(crate) mod writer;
