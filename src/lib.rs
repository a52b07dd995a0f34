//! srlm: the Self-Rewarding Language Model loop as infrastructure.
//!
//! The parts are layered, each using only its own layer and those below (see
//! ARCHITECTURE.md; `tests/layering.rs` checks it): foundations (`metrics`, `progress`,
//! `telemetry`, `verify`, `client`) → `store` → the model (`engine`, `train`,
//! `checkpoint`) → `judge` → the pipeline (`eval`, `data`, `selfinstruct`, `selfloop`)
//! → `api` → the commands (`cli`, `serve`, `bench`).

pub mod api;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod client;
pub mod data;
pub mod engine;
pub mod eval;
pub mod generation;
pub mod judge;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod protocol;
pub mod selfinstruct;
pub mod selfloop;
pub mod serve;
pub mod store;
pub mod swap;
pub mod telemetry;
pub mod train;
pub mod verify;

pub use api::{app, AppState, Limits};
