//! The sea-orm entities of the store's tables (`proxy_configs`, `api_keys`, `client_keys`,
//! `request_logs`), one row type each.
//!
//! They mirror the schema the migrations create, column for column, and hold plain database
//! types (strings, integers, timestamps): turning a row into a validated domain type, and
//! rejecting a corrupt one, is the job of the `convert` module.

pub mod api_key;
pub mod client_key;
pub mod proxy_config;
pub mod request_log;
