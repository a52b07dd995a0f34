//! srlm's own Llama-family model on candle and the trainer built on it: configuration
//! and weights (from GGUF or HF safetensors), the differentiable model, DPO and SFT,
//! and the `srlm train` commands. The native engine serves from the same weights.

pub mod data;
pub mod dpo;
pub mod fast;
pub mod model;
pub mod optim;
pub mod run;
pub mod settings;
pub mod trainer;
