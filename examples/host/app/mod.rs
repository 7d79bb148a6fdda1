//! The example XMPP host, as a module so integration tests can include it in-process:
//!
//! ```ignore
//! #[path = "../examples/host/app/mod.rs"]
//! mod app;
//! let host = app::Host::start(app::HostConfig::from_toml_str(toml, dir)?).await?;
//! ```
#![allow(dead_code, unused_imports)]

pub mod accounts;
pub mod bind;
pub mod config;
pub mod connection;
pub mod router;
pub mod server;
pub mod tls;

pub use accounts::HostAccounts;
pub use config::{ConfigError, HostConfig};
pub use server::{Host, HostError};
