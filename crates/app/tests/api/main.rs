//! Integration tests of the server: every admin route, the generic proxy end to end against a
//! mock upstream, the operations endpoints, and a smoke test of the built binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

mod admin;
mod console;
#[cfg(feature = "enterprise")]
mod enterprise;
mod generic_proxy;
mod hardening;
mod helpers;
mod hot_path;
mod key_pages;
mod llm_proxy;
mod openai_sdk;
mod ops;
mod recovery;
#[cfg(feature = "enterprise")]
mod relay;
mod smoke;
