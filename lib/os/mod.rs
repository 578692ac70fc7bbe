//! Linux plumbing every program uses: signals through a signalfd, talking
//! to systemd (and starting children without its variables), mounts,
//! waits a signal can cut short, and opening beneath a root.

pub mod beneath;
pub mod interruptible;
pub mod mounts;
pub mod signals;
pub mod systemd;
