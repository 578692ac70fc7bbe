//! The pushd agent's protocol (docs/protocol.md, "pushd --serve"): JSON
//! lines, one request per line, a `put`'s bytes raw right after its line;
//! every request but `hello` and `bye` carries an `id`, answered by exactly
//! one reply line with that id, in order. Lines are framed as in
//! [`crate::bisync::proto`].

use serde::{Deserialize, Serialize};

use crate::wire::path::WirePath;

/// The protocol spoken. 2 added what the agent last applied (the hello's
/// `applied`, the `applied` request). The agent also serves a pusher of
/// [`OLDEST`] on; a pusher meeting an agent that refuses its version falls
/// back to rsync, saying which to install.
pub const VERSION: u32 = 2;

/// The oldest pusher protocol the agent still serves (without records).
pub const OLDEST: u32 = 1;

/// What a created or updated entry gets: permission bits, modification
/// time and (as root, when the pusher asks for owners) its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub mode: u32,
    /// Seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
    pub uid: u32,
    pub gid: u32,
}

impl Meta {
    /// `meta`'s mode, times and owner.
    pub fn of(meta: &std::fs::Metadata) -> Meta {
        use std::os::unix::fs::MetadataExt;
        Meta {
            mode: meta.mode() & 0o7777,
            mtime: (meta.mtime(), meta.mtime_nsec()),
            uid: meta.uid(),
            gid: meta.gid(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// First: the pusher's protocol version and whether owners are kept.
    Hello {
        v: u32,
        producer: String,
        #[serde(default)]
        owners: bool,
    },
    /// A regular file of `size` bytes, which follow this line raw; written
    /// to a temporary name and renamed over whatever is at `path`.
    Put {
        id: u64,
        path: WirePath,
        size: u64,
        meta: Meta,
    },
    /// A symlink to `to` (bytes, never resolved), replacing what is there.
    Symlink {
        id: u64,
        path: WirePath,
        to: WirePath,
        meta: Meta,
    },
    /// A directory (anything else in the way is removed), with `meta`.
    Mkdir {
        id: u64,
        path: WirePath,
        meta: Meta,
    },
    /// Mode, times and owner of what is at `path` now (chmod, touch).
    SetMeta {
        id: u64,
        path: WirePath,
        meta: Meta,
    },
    /// Moves `from` to `to`, replacing what is at `to`. An error when
    /// `from` is not there: the pusher then sends `to`'s data instead.
    Rename {
        id: u64,
        from: WirePath,
        to: WirePath,
        /// Whether a directory moved on the source: `from` of another type
        /// on the target (a target ahead of the source) is refused, so a
        /// file's rename never carries a directory's contents along.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<bool>,
    },
    /// Removes `path` and everything below it; done when it is not there.
    Delete {
        id: u64,
        path: WirePath,
    },
    /// No data: if `path` is a regular file of `size` bytes and META's
    /// mtime (a file this batch just renamed there), set META and answer
    /// done; otherwise answer an error and the pusher sends the data.
    Same {
        id: u64,
        path: WirePath,
        size: u64,
        meta: Meta,
    },
    /// Everything of `stream` up to `seq` is applied on the target: the
    /// agent records it (outside DIR) before answering; its answer names
    /// the record (`record`). Version 2.
    Applied {
        id: u64,
        stream: String,
        seq: u64,
    },
    /// Whether DIR is still the directory the agent opened (not removed or
    /// replaced); when not, the agent answers an error and exits, so
    /// nothing after it lands in a deleted directory.
    Check {
        id: u64,
    },
    Bye,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    pub v: u32,
    pub producer: String,
    /// The agent runs as root (owners can be kept).
    pub root_user: bool,
    /// What the last `applied` recorded for DIR as it is now (version 2);
    /// `None`: nothing recorded, or DIR is another directory than then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Recorded>,
}

/// The agent's record of what was last applied beneath DIR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// Made at random when the record was first written for this directory:
    /// another machine, or DIR removed and made again, has another one.
    pub record: String,
    pub stream: String,
    pub seq: u64,
}

/// A refused hello: what the agent speaks, and why.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloRefused {
    pub error: String,
    pub v: u32,
}

/// The answer to one request. `bytes`: data written (a put).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
    /// The record an `applied` wrote to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Request {
    /// The id a reply to this request carries.
    pub fn id(&self) -> Option<u64> {
        match self {
            Request::Hello { .. } | Request::Bye => None,
            Request::Put { id, .. }
            | Request::Symlink { id, .. }
            | Request::Mkdir { id, .. }
            | Request::SetMeta { id, .. }
            | Request::Rename { id, .. }
            | Request::Delete { id, .. }
            | Request::Same { id, .. }
            | Request::Applied { id, .. }
            | Request::Check { id } => Some(*id),
        }
    }
}
