//! The mechanisms, inline features, tasks and login throttle a host offers: one
//! [`Sasl2Server`] per host, shared by every stream's [`super::Negotiator`].

use std::fmt;
use std::sync::Arc;

use super::offers::OfferCache;
use super::throttle::{BackoffThrottle, LoginThrottle};
use super::{InlineFeature, MechanismProvider, Sasl2Task, SharedInlineFeature};

/// Default number of failed attempts before the stream is closed (R-2, RFC 6120 §6.4.5: 2 to
/// 5).
pub const DEFAULT_MAX_FAILURES: u32 = 3;

/// The mechanisms, inline features and tasks a host offers; shared by all its streams.
pub struct Sasl2Server {
    pub(super) mechanisms: Vec<Arc<dyn MechanismProvider>>,
    pub(super) inline: Vec<SharedInlineFeature>,
    pub(super) tasks: Vec<Arc<dyn Sasl2Task>>,
    pub(super) max_failures: u32,
    pub(super) rfc6120: bool,
    pub(super) throttle: Arc<dyn LoginThrottle>,
    /// What streams with the same [`OfferFacts`] are offered, computed once (None = off,
    /// [`Sasl2ServerBuilder::cache_offers`]).
    pub(super) offer_cache: Option<OfferCache>,
}

impl fmt::Debug for Sasl2Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl2Server")
            .field(
                "mechanisms",
                &self.mechanisms.iter().map(|m| m.name()).collect::<Vec<_>>(),
            )
            .field("inline", &self.inline)
            .field("tasks", &self.tasks)
            .field("max_failures", &self.max_failures)
            .field("rfc6120", &self.rfc6120)
            .field("throttle", &self.throttle)
            .finish()
    }
}

/// Builds a [`Sasl2Server`].
#[derive(Default)]
pub struct Sasl2ServerBuilder {
    mechanisms: Vec<Arc<dyn MechanismProvider>>,
    inline: Vec<SharedInlineFeature>,
    tasks: Vec<Arc<dyn Sasl2Task>>,
    max_failures: Option<u32>,
    rfc6120: bool,
    no_offer_cache: bool,
    throttle: Option<Arc<dyn LoginThrottle>>,
}

impl Sasl2ServerBuilder {
    /// Adds a password (or other top-level) mechanism. Order of registration is the order of
    /// advertisement: register the strongest first.
    pub fn mechanism(mut self, m: Arc<dyn MechanismProvider>) -> Self {
        self.mechanisms.push(m);
        self
    }

    /// Adds an inline feature (FAST, Bind 2, ...). Results go into `<success>` in
    /// [`super::InlineOrder`], whatever the order of registration.
    pub fn inline_feature(mut self, f: Arc<dyn InlineFeature>) -> Self {
        self.inline.push(f);
        self
    }

    /// Adds a SASL2 task (2FA, password change, ...).
    pub fn task(mut self, t: Arc<dyn Sasl2Task>) -> Self {
        self.tasks.push(t);
        self
    }

    /// Failed attempts allowed on one stream before it is closed (clamped to 1..=10).
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = Some(n.clamp(1, 10));
        self
    }

    /// Also offer RFC 6120 SASL (`<mechanisms>`, `<auth>`) with the same mechanisms, for
    /// clients without SASL2. Inline features and tasks are SASL2-only (FAST among them).
    pub fn rfc6120_sasl(mut self, enabled: bool) -> Self {
        self.rfc6120 = enabled;
        self
    }

    /// The policy on password guessing, asked before every credential check (see
    /// [`super::throttle`]). Without this call the server gets a [`BackoffThrottle`] with its
    /// defaults (5 failures, backoff up to 300 s); `BackoffThrottle::new(0, ..)` turns
    /// throttling off.
    pub fn login_throttle(mut self, throttle: Arc<dyn LoginThrottle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// Whether offers are computed once per distinct set of stream facts (the domain, the TLS
    /// version, the channel-binding types available, whether plaintext is allowed) and reused
    /// for every stream with the same facts, together with the serialized features (on by
    /// default: building and writing `<stream:features>` was a fifth of the server's
    /// non-TLS work per login). Turn it off only for a mechanism or inline feature whose
    /// offer depends on something else of the stream (the unauthenticated `from`, the peer
    /// address), which the trait contracts rule out.
    pub fn cache_offers(mut self, enabled: bool) -> Self {
        self.no_offer_cache = !enabled;
        self
    }

    /// The server.
    pub fn build(self) -> Sasl2Server {
        let mut inline = self.inline;
        // Stable sort: features with the same order keep their registration order.
        inline.sort_by_key(|f| f.order());
        Sasl2Server {
            mechanisms: self.mechanisms,
            inline,
            tasks: self.tasks,
            max_failures: self.max_failures.unwrap_or(DEFAULT_MAX_FAILURES),
            rfc6120: self.rfc6120,
            throttle: self
                .throttle
                .unwrap_or_else(|| Arc::new(BackoffThrottle::default())),
            offer_cache: (!self.no_offer_cache).then(|| std::sync::Mutex::new(Vec::new())),
        }
    }
}

impl Sasl2Server {
    /// Starts building a server.
    pub fn builder() -> Sasl2ServerBuilder {
        Sasl2ServerBuilder::default()
    }

    /// The policy on password guessing this server's negotiators ask.
    pub fn login_throttle(&self) -> &Arc<dyn LoginThrottle> {
        &self.throttle
    }
}
