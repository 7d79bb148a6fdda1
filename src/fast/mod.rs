//! The FAST plugin (XEP-0484): HT mechanisms, the `<fast>` inline feature, the two-slot token
//! lifecycle, sealed tokens, rotation hooks and configuration.
//!
//! - [`ht`]: the HT mechanism family (hash × channel binding) and its wire format.
//! - [`token`]: token secrets, the pepper, sealing at rest.
//! - [`tokens`]: the lifecycle over a [`crate::store::TokenStore`]; [`login`]: a FAST login's
//!   one read and one write.
//! - [`plugin`]: the SASL2 inline feature a host registers; [`open`]: its start-up from a
//!   config (the store it names, the pepper beside it).
//! - `known_devices`: FAST's client records tell the login throttle which devices are the
//!   owner's ([`crate::sasl2::KnownDevices`]).
//! - [`standalone`]: the same FAST pieces for a server that keeps its own SASL2 code.
//! - [`cam`]: XEP-0494 Client Access Management (the owner lists and revokes clients).
//! - [`hooks`]: observers of lifecycle events; [`config`]: options and validation.

pub mod cam;
pub mod clock;
pub mod config;
pub mod hooks;
pub mod ht;
mod known_devices;
pub mod login;
pub mod open;
pub mod plugin;
pub mod standalone;
pub mod token;
pub mod tokens;

pub use config::FastConfig;
pub use hooks::{FastMetrics, FastObserver, RevokedBy};
pub use ht::HtMechanism;
pub use plugin::FastPlugin;
pub use token::{FastToken, Pepper};
pub use tokens::FastTokens;
