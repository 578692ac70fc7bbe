//! Health that never lies: what state each target (or program) is in, and
//! the three ways it is said — `STATUS=` words, a JSON status file, and
//! Prometheus text metrics — written the same way by every program.
//!
//! Its own folder rather than lib/os/: the target state model and the
//! words are pure (no I/O, `now` passed in) and belong to no one program;
//! only [`publish`] touches the file system, and `syncpipe status` reads
//! what it writes through the same types ([`status`]).

pub mod metrics;
pub mod publish;
pub mod status;
pub mod target;
