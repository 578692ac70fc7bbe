//! Linux plumbing every program uses: signals through a signalfd, talking
//! to systemd, the one child-process builder, mounts,
//! waits a signal can cut short, and opening beneath a root.

pub mod beneath;
pub mod child;
pub mod interruptible;
pub mod mounts;
pub mod signals;
pub mod systemd;
