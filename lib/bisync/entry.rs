//! What bisync knows about one path on one replica: its kind, content
//! identity (size, mtime, inode, optional hash) and metadata (mode, owner).
//! Shared by the scanner, the archive, the planner and the wire protocol.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::wire::path::WirePath;

/// One of the two replicas, in the order given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// A BLAKE3 content hash, behind an `Arc`: most entries have none (an
/// `Option<Hash>` is then one word), and both sides of an archive entry
/// share one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Hash(pub std::sync::Arc<[u8; 32]>);

impl Hash {
    pub fn of(data: &[u8]) -> Hash {
        Hash::from(blake3::hash(data))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<Hash> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Hash(std::sync::Arc::new(out)))
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Hash {
        Hash(std::sync::Arc::new(*h.as_bytes()))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Hash::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("bad hash: want 64 hex digits"))
    }
}

/// The state of one path on one replica, as a scan saw it.
///
/// Content identity follows unison's fastcheck: a file whose size, mtime and
/// inode are what the archive recorded is unchanged. ctime is not used: a
/// chmod or a rename changes it without touching the content, and mode is
/// compared on its own. A hash, when known, overrides the fast check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    /// Bytes, for files (0 otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Modification time in nanoseconds since the epoch, for files and
    /// symlinks (directories' times are not synchronised: every change
    /// inside one moves it).
    #[serde(default, skip_serializing_if = "is_zero_i")]
    pub mtime: i64,
    /// Permission bits (`0o7777`); 0 for symlinks.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub gid: u32,
    /// Inode number on this replica (meaningless on the other one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ino: u64,
    /// A symlink's target, as bytes (boxed: most entries are not links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Box<WirePath>>,
    /// Content hash of a file, when it was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<Hash>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

impl Entry {
    pub fn dir(mode: u32) -> Entry {
        Entry {
            kind: Kind::Dir,
            size: 0,
            mtime: 0,
            mode,
            uid: 0,
            gid: 0,
            ino: 0,
            target: None,
            hash: None,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    /// Whether this entry still has the content `old` had on the same
    /// replica: the hashes when this one is known, else fastcheck (size,
    /// mtime, inode). Metadata is not compared.
    pub fn same_content_as_before(&self, old: &Entry) -> bool {
        if self.kind != old.kind {
            return false;
        }
        match self.kind {
            Kind::Dir => true,
            Kind::Symlink => self.target == old.target,
            Kind::File => {
                if self.size != old.size {
                    return false;
                }
                match (&self.hash, &old.hash) {
                    (Some(x), Some(y)) => x == y,
                    // Hashed now (--checksum) but not then: nothing says the
                    // content is the same, so it counts as changed.
                    (Some(_), None) => false,
                    _ => self.mtime == old.mtime && self.ino == old.ino,
                }
            }
        }
    }

    /// Whether two entries (on different replicas) hold the same content.
    /// Files need both hashes for a yes; without them the answer is no.
    pub fn same_content_as(&self, other: &Entry) -> bool {
        if self.kind != other.kind {
            return false;
        }
        match self.kind {
            Kind::Dir => true,
            Kind::Symlink => self.target == other.target,
            Kind::File => {
                self.size == other.size
                    && matches!((&self.hash, &other.hash), (Some(x), Some(y)) if x == y)
            }
        }
    }

    /// Mode, times of files and (when `owners`) owner and group agree.
    pub fn same_meta(&self, other: &Entry, owners: bool) -> bool {
        self.mode == other.mode
            && (self.kind != Kind::File || self.mtime == other.mtime)
            && (!owners || (self.uid == other.uid && self.gid == other.gid))
    }
}

/// Writes what passes through and hashes it: the archive's trailer, and a
/// copy's content under `--checksum`.
pub(crate) struct HashingWriter<W: std::io::Write> {
    pub(crate) out: W,
    pub(crate) hasher: blake3::Hasher,
}

impl<W: std::io::Write> HashingWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        HashingWriter {
            out,
            hasher: blake3::Hasher::new(),
        }
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
