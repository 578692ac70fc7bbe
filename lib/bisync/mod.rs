//! `bisync`: two-way synchronisation of two replicas (what unison does), as
//! a pure planner between a scanner and an executor.
//!
//! - [`entry`]: what is known about one path on one replica;
//! - [`planner`]: archive + two scans -> a plan of actions (pure);

pub mod entry;
pub mod planner;
