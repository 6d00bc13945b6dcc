//! Integration tests of the server: every admin route, the generic proxy end to end against a
//! mock upstream, the operations endpoints, and a smoke test of the built binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

mod admin;
mod client_keys;
mod console;
mod cors;
mod encryption;
#[cfg(feature = "enterprise")]
mod enterprise;
#[cfg(feature = "enterprise")]
mod enterprise_postgres;
mod failover;
mod generic_proxy;
mod hardening;
mod helpers;
mod hot_path;
mod key_pages;
mod keys_command;
mod llm_proxy;
mod openai_sdk;
mod ops;
mod original;
mod recovery;
#[cfg(feature = "enterprise")]
mod relay;
mod request_log;
mod smoke;
