//! Checkpoint files: GGUF reading, writing and conversion between weight types.

pub mod export;
pub mod gguf;
pub mod import;
