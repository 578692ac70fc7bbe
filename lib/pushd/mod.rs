//! pushd's own parts (the rest of pushd still lives in lib/push.rs,
//! lib/apply.rs and friends until the move of issue 12).

pub mod excluded;
