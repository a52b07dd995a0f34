//! `srlm data`: getting data in (Open Assistant) and out (pairs for TRL).

pub mod oasst;
pub mod pairs;
