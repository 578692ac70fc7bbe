//! The pushd agent (issue 15): `pushd --serve DIR` on the far side of one
//! ssh connection, applying pushd's changes beneath DIR as they arrive —
//! small files inline, renames, deletions, directories and metadata — each
//! acknowledged by id so a pusher can pipeline them and still know exactly
//! which paths landed. The protocol is in [`proto`] and docs/protocol.md,
//! the serving side in [`serve`] (its record of what was applied in
//! [`record`]), the pushing side in [`client`] and [`push`].
//!
//! Why not `bisync --serve`: its verbs are compare-and-swap on a scanned
//! state (every change names the entry it expects; a rename needs a free
//! destination; a removal refuses directories), which is right for a
//! two-way merge but would cost pushd a stat round trip per path, and pushd
//! never knows what the target holds. pushd's verbs say "make it so". The
//! framing (JSON lines, raw bytes after a header) is shared with it.

pub mod client;
pub mod proto;
pub mod push;
pub mod record;
pub mod serve;
