//! `syncpipe`, the operator's command: subcommands that look after the
//! pipelines rather than run them (`import-lsyncd`, `status`).

pub mod check;
pub mod excludes;
pub mod import;
pub mod lua;
pub mod status;
pub mod words;
