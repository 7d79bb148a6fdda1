//! # sasl2-fast
//!
//! FAST (XEP-0484) token authentication for XMPP servers, as a SASL2 (XEP-0388) inline feature.
//!
//! Every public signature that carries XML speaks [`minidom::Element`] or an [`xmpp_parsers`]
//! type, so a Rust XMPP server embeds the crate without converting anything; the README shows
//! a whole password login, token issue and FAST login written that way.
//!
//! ## Layout
//! - [`sasl2`]: the extension layer a host embeds. It knows nothing about FAST: traits for a
//!   server-side SASL mechanism ([`sasl2::Mechanism`], [`sasl2::MechanismProvider`]), an inline
//!   feature ([`sasl2::InlineFeature`]) and a SASL2 task ([`sasl2::Sasl2Task`]), the sans-IO
//!   [`sasl2::Negotiator`] (SASL2 and RFC 6120 SASL), Bind 2, the password mechanisms every host
//!   needs (PLAIN, SCRAM-SHA-1, SCRAM-SHA-256, `-PLUS`), and what the host supplies
//!   ([`sasl2::accounts::AccountStore`], [`sasl2::StreamInfo`]).
//! - [`fast`]: the FAST plugin. HT mechanisms, the `<fast>` inline feature, the two-slot token
//!   lifecycle, sealed tokens, observers ([`fast::FastObserver`]) and configuration.
//! - [`store`]: token persistence behind [`store::TokenStore`]: memory, sled, PostgreSQL
//!   (feature `postgres`), and the public conformance suite (feature `test-kit`).
//! - [`stream`]: a bounded, sans-IO XMPP stream reader over rxml that yields one
//!   [`minidom::Element`] per top-level element, and the writer.
//! - `rustls` (feature `rustls`): channel bindings from a rustls server connection
//!   ([`sasl2::TlsInfo`] for the negotiator) and a rustls config fit for them.
//! - `prometheus` (feature `prometheus`): the FAST lifecycle and token-store latency as
//!   prometheus-client metrics, for the embedding server's own registry (no HTTP server).
//! - [`xmpp`]: namespaces and [`xmpp::Redacted`], which keeps tokens and SASL payloads out of
//!   `Debug` output and logs.
//!
//! Arrows point one way: `fast -> sasl2`, `fast -> store`, everything `-> xmpp`; `sasl2` imports
//! neither `fast` nor `store`. The example server (the `sasl2-fast-host` crate in `host/`)
//! shows a complete server: TLS, STARTTLS, Bind 2, routing.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod blocking;
pub mod fast;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod mutation;
#[cfg(feature = "prometheus")]
pub mod prometheus;
#[cfg(feature = "rustls")]
pub mod rustls;
pub mod sasl2;
pub mod secret_file;
pub mod store;
pub mod stream;
pub mod xmpp;

// The xmpp-rs crates every public signature speaks, re-exported so a host uses the very same
// versions (an `Element` from another minidom version would be a different type).
pub use jid;
pub use minidom;
pub use xmpp_parsers;

/// A boxed error kept as the source of this crate's errors (store and account backends,
/// inline features).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The README's code samples are compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
