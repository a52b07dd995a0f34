//! srlm: the Self-Rewarding Language Model loop as infrastructure.
//!
//! `api` (HTTP) uses `engine` (the model) and `store` (Postgres); `serve` wires them
//! into the running server; `bench` is the load generator.

pub mod api;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod engine;
pub mod eval;
pub mod judge;
pub mod metrics;
pub mod progress;
pub mod selfinstruct;
pub mod selfloop;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod train;
pub mod verify;

pub use api::{app, AppState, Limits};
