//! srlm's own Llama-family model on candle: its configuration, weights (from GGUF or
//! HF safetensors) and the forward pass. The native engine serves with it; the trainer
//! (SFT, DPO) will train it.

pub mod config;
pub mod weights;
