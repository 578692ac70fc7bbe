//! ssh keys without hand edits (`keysetup`): the authorized_keys, known_hosts
//! and ssh_config files as data, restricted-key options, safe writes, and
//! the ssh runs that install, check and revoke the kit's key.

pub(crate) mod authkeys;
pub mod check;
pub mod knownhosts;
pub(crate) mod remote;
pub mod restrict;
pub(crate) mod safefile;
pub mod setup;
pub(crate) mod ssh;
pub mod sshconfig;

pub use setup::run;
