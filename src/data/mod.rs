//! `srlm data`: getting data in (Open Assistant) and out (pairs for TRL), and the
//! requests with checkable instructions.

pub mod eft;
pub mod ifeval;
pub mod oasst;
pub mod pairs;
