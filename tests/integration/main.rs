//! Integration tests: the real server stack, the real default model through mistralrs,
//! a real Postgres. Generation lengths stay small so the suite is quick on 2 cores.

mod common;

mod chat;
mod concurrency;
mod docker;
mod engines;
mod errors;
mod evals;
mod ops;
mod sdk;
mod selfinstruct;
mod selfloop;
mod selfreward;
mod swap;
mod train;
