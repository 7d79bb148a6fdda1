//! The SASL2 (XEP-0388) extension layer. It knows nothing about FAST.
//!
//! A host server embeds a [`Sasl2Server`] (the registered mechanisms, inline features and
//! tasks) and runs one [`Negotiator`] per stream. Plugins extend it through small traits,
//! without editing the negotiator:
//!
//! - [`MechanismProvider`] / [`Mechanism`]: a server-side SASL mechanism, one object per
//!   attempt.
//! - [`InlineFeature`]: something advertised inside `<inline>` that may claim an
//!   `<authenticate>` (supplying the mechanism) and add results to `<success>`, typed values
//!   for the host included ([`Extensions`]). [`bind2::Bind2`] is one.
//! - [`Sasl2Task`] / [`TaskSession`]: a step after the mechanism (`<continue>`, `<next>`,
//!   `<task-data>`), such as a second factor.
//! - [`LoginThrottle`]: the policy on password guessing, asked before every credential check
//!   ([`BackoffThrottle`] unless the host installs another).
//!
//! Everything on the wire is a [`minidom::Element`] built from, or parsed into,
//! [`xmpp_parsers`] types where one fits (see [`request`] for where it does not). The same
//! mechanisms also serve RFC 6120 SASL when [`Sasl2ServerBuilder::rfc6120_sasl`] is on.
//!
//! The host supplies what only it knows: accounts ([`accounts::AccountStore`]), and per stream
//! the [`StreamInfo`] (TLS version, channel-binding bytes, stream `from`/`to`). What every
//! host does the same way is here too: judging the client's stream header
//! ([`ClientStreamHeader`]), and what to write for each negotiator event, in order
//! ([`Reply`], [`PostLoginFeatures`], [`Negotiator::stream_features`]).

pub mod accounts;
mod authzid;
pub mod bind2;
mod condition;
pub mod credentials;
mod inline;
mod mechanism;
pub mod negotiator;
mod offers;
pub mod plain;
mod reply;
pub mod request;
pub mod scram;
mod server;
mod stream_header;
mod stream_info;
pub mod task;
pub mod throttle;

pub use condition::{Failure, SaslCondition};
pub use credentials::{ScramCredentials, ScramHash, UnknownAccounts};
pub use inline::{
    ClaimContext, Extensions, InlineError, InlineFeature, InlineOrder, Offer, SessionResumed,
    SharedInlineFeature, SuccessBuilder, SuccessContext,
};
pub use mechanism::{
    Authenticated, CredentialCheck, Mechanism, MechanismProvider, Step, step_unthrottled,
};
pub use negotiator::{
    AuthenticatedSession, Negotiator, NegotiatorEvent, Sasl2Server, Sasl2ServerBuilder,
};
pub use reply::{Next, PostLoginFeatures, Reply};
pub use request::{AuthenticateRequest, SaslProfile, UserAgent};
pub use stream_header::{ClientStreamHeader, check_stream_to, stream_from};
pub use stream_info::{ChannelBindingType, ChannelBindings, StreamInfo, TlsInfo, TlsVersion};
pub use task::{Sasl2Task, TaskContext, TaskInput, TaskSession, TaskStep};
pub use throttle::{
    Admission, BackoffThrottle, CheckOutcome, CheckReport, CredentialAttempt, KnownDevices,
    LoginThrottle, Ticket, Verdict,
};

/// Upper bound on a decoded `<initial-response>` / `<response>` payload. SCRAM messages are a
/// few hundred bytes, HT messages at most 1 KiB plus a 64-byte MAC; anything much larger is an
/// attack on memory, answered with `malformed-request`.
pub const MAX_SASL_PAYLOAD: usize = 4096;
