//! `srlm eval`: the paper's measurements of a checkpoint.

pub mod rm;
