//! The API Key Rotator server: an actix-web application that serves the admin API, the generic
//! and LLM proxies and the operations endpoints, over the ports of `domain` wired to the
//! adapters of the configured edition (`lightweight`: SQLite + in-process cache; `enterprise`:
//! adds MySQL + Redis).
//!
//! This crate may depend on every workspace crate and on the HTTP, configuration and telemetry
//! crates; `main.rs` stays thin, and `cfg(feature)` appears only in [`wiring`].

pub mod auth;
pub mod background;
pub mod cli;
pub mod client_keys;
pub mod completion;
pub mod config;
pub mod cors;
pub mod disconnect;
pub mod errors;
pub mod hop;
pub mod import_original;
pub mod inbound;
pub mod key_migration;
pub mod metrics;
pub mod openapi;
pub mod probe;
pub mod request_log;
pub mod resilience;
pub mod routes;
pub mod startup;
pub mod state;
pub mod streaming;
pub mod telemetry;
pub mod upstream;
pub mod upstream_body;
pub mod upstream_hosts;
pub mod wiring;

pub use startup::Application;
