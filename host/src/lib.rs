//! # sasl2-fast-host
//!
//! The example XMPP server of `sasl2-fast`, as a library that tests and the `host` binary
//! share, and (feature `testing`) the SASL2/FAST test client that drives it.
//!
//! - [`run`] / [`Host::start`]: serve [`Listeners`] with a typed [`HostConfig`] until
//!   shutdown (mini-redis style). TLS (STARTTLS and direct TLS, rustls), SASL2 with FAST and
//!   Bind 2, RFC 6120 SASL and resource binding, iq ping, routing between local sessions.
//! - [`config`]: the TOML configuration (serde, every key checked).
//! - [`cli`]: the `host` command line (clap).
//! - [`metrics`], [`metrics_server`]: the prometheus-client registry (FAST lifecycle, store
//!   latency, logins, connections) and the loopback `GET /metrics` listener (`metrics_listen`).
//! - [`admin`]: the admin Unix socket of a running host and `host ctl`.
//! - [`request_slots`]: the connection slots of those two listeners (a newcomer evicts the
//!   oldest connection still waiting for its request).
//! - `harness` (feature `testing`): a throw-away host on loopback for tests and measurements.
//! - `client` (feature `testing`): a small SASL2/FAST client over TCP/TLS with real channel binding, which
//!   parses what it receives with minidom and xmpp-parsers (not with the server's reader), for
//!   the integration tests and the load generator.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accept;
pub mod accounts;
pub mod admin;
pub mod audit;
pub mod cli;
#[cfg(feature = "testing")]
pub mod client;
pub mod config;
mod connection;
#[cfg(feature = "testing")]
pub mod harness;
pub mod listeners;
pub mod log_budget;
pub mod metrics;
pub mod metrics_server;
pub mod pre_auth;
pub mod request_slots;
pub mod router;
pub mod server;
pub mod setup;
mod shared;
pub mod tls;

pub use accounts::HostAccounts;
pub use config::{ConfigError, HostConfig, ServerConfig};
pub use listeners::Listeners;
pub use server::{Host, HostError, run};
