//! The srlm API's wire types: every request and response body of the HTTP routes, as
//! serde and OpenAPI (utoipa) types. The server (`api`) validates and answers them; the
//! client (`client`) sends and reads them. Nothing here knows HTTP.

pub mod admin;
pub mod chat;
pub mod completions;
pub mod error;
pub mod generate;
pub mod health;
pub mod judge;
pub mod logprobs;
pub mod models;
pub mod sampling;
pub mod stream;
