//! sasl2-fast: FAST (XEP-0484) for XMPP servers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fast;
pub mod sasl2;
pub mod store;
pub mod xml;
