//! Checkpoint files: GGUF reading, writing and conversion between weight types.

pub mod import;
