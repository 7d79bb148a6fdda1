//! SCRAM-SHA-1 and SCRAM-SHA-256, with and without `-PLUS` (RFC 5802, RFC 7677), server side.
//!
//! The server keeps only
//! [`ScramCredentials`](crate::sasl2::credentials::ScramCredentials) (salt, iteration count,
//! StoredKey, ServerKey); it never sees or stores the password. One [`ScramProvider`] is
//! registered per mechanism name.
//!
//! # Failure conditions
//! | Situation | Condition |
//! |---|---|
//! | Syntax error, unknown mandatory extension (`m=`), `-PLUS` without `p=`, `p=` on a non-PLUS mechanism, a step after completion | `malformed-request` |
//! | `p=` names a channel-binding type this stream does not have (RFC 5802 `e=unsupported-channel-binding-type`) | `not-authorized` |
//! | `y` flag while the server offers `-PLUS` on this stream (downgrade, RFC 5802 §6) | `not-authorized` |
//! | Username that is not a valid localpart, unknown account, wrong proof, `c=` or `r=` mismatch | `not-authorized` |
//! | Authorization identity other than the user's own (bare) JID | `invalid-authzid` |
//! | Account backend error, unusable stored verifier, OS random generator failure | `temporary-auth-failure` |
//!
//! Unknown accounts get a normal-looking challenge (a salt and iteration count derived from a
//! per-process random key and the username), so the exchange does not reveal which accounts
//! exist (S-29).

mod exchange;
mod message;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use super::accounts::AccountStore;
use super::credentials::{ScramHash, UnknownAccounts};
use super::{AuthenticateRequest, Mechanism, MechanismProvider, StreamInfo};
use exchange::{ScramMechanism, State};

/// Iteration count announced for unknown accounts unless changed with
/// [`ScramProvider::with_fake_iterations`]. Set it to the count your real accounts use.
pub const DEFAULT_FAKE_ITERATIONS: u32 = 4096;

/// The mechanism name of a SCRAM family.
pub(crate) fn mechanism_name(hash: ScramHash, plus: bool) -> &'static str {
    match (hash, plus) {
        (ScramHash::Sha1, false) => "SCRAM-SHA-1",
        (ScramHash::Sha1, true) => "SCRAM-SHA-1-PLUS",
        (ScramHash::Sha256, false) => "SCRAM-SHA-256",
        (ScramHash::Sha256, true) => "SCRAM-SHA-256-PLUS",
    }
}

/// A SCRAM mechanism provider: one of `SCRAM-SHA-1`, `SCRAM-SHA-1-PLUS`, `SCRAM-SHA-256`,
/// `SCRAM-SHA-256-PLUS`.
///
/// ```
/// use std::sync::Arc;
/// use sasl2_fast::sasl2::MechanismProvider as _;
/// use sasl2_fast::sasl2::ScramHash;
/// use sasl2_fast::sasl2::accounts::{AccountStore, MemoryAccounts};
/// use sasl2_fast::sasl2::scram::ScramProvider;
///
/// let accounts: Arc<dyn AccountStore> = Arc::new(MemoryAccounts::new());
/// let plus = ScramProvider::new(ScramHash::Sha256, true, accounts.clone());
/// let plain = ScramProvider::new(ScramHash::Sha256, false, accounts);
/// assert_eq!(plus.name(), "SCRAM-SHA-256-PLUS");
/// assert_eq!(plain.name(), "SCRAM-SHA-256");
/// ```
pub struct ScramProvider {
    hash: ScramHash,
    plus: bool,
    plus_offered: bool,
    unknown: UnknownAccounts,
    fixed_nonce_suffix: Option<String>,
    accounts: Arc<dyn AccountStore>,
}

impl fmt::Debug for ScramProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramProvider")
            .field("name", &self.name())
            .field("plus_offered", &self.plus_offered)
            .field("unknown", &self.unknown)
            .field("fixed_nonce", &self.fixed_nonce_suffix.is_some())
            .field("accounts", &self.accounts)
            .finish()
    }
}

impl ScramProvider {
    /// A provider for `SCRAM-<hash>` (or `SCRAM-<hash>-PLUS` when `plus`), verifying against
    /// `accounts`.
    pub fn new(hash: ScramHash, plus: bool, accounts: Arc<dyn AccountStore>) -> Self {
        ScramProvider {
            hash,
            plus,
            plus_offered: true,
            // Its key is created now so its first use costs nothing measurable.
            unknown: UnknownAccounts::default(),
            fixed_nonce_suffix: None,
            accounts,
        }
    }

    /// For a non-PLUS provider: whether the server also registers the `-PLUS` variant. When it
    /// does (the default) and the stream has channel binding, a client sending the `y` GS2
    /// flag ("I support channel binding, the server does not") is rejected as a downgrade
    /// (RFC 5802 §6). Set `false` if `-PLUS` is not registered. Ignored by PLUS providers.
    pub fn with_plus_offered(mut self, offered: bool) -> Self {
        self.plus_offered = offered;
        self
    }

    /// How unknown accounts are answered (S-29): the iteration count announced for them (use
    /// the count of your real accounts, so the challenge does not tell them apart) and the
    /// key their salts are derived from. Give a stable key
    /// ([`FakeKey::load_or_create`](super::credentials::FakeKey::load_or_create)): the
    /// default is per process, so across a restart an unknown account's salt changes while a
    /// real one's does not.
    pub fn with_unknown_accounts(mut self, unknown: UnknownAccounts) -> Self {
        self.unknown = unknown;
        self
    }

    /// **Testing only.** Uses `suffix` as the server part of the nonce instead of random
    /// bytes, so published test vectors can be replayed. A fixed nonce makes every exchange
    /// replayable: never use this outside tests.
    #[doc(hidden)]
    pub fn dangerous_fixed_nonce_for_tests(mut self, suffix: impl Into<String>) -> Self {
        self.fixed_nonce_suffix = Some(suffix.into());
        self
    }

    /// The hash family.
    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    /// True for the `-PLUS` variant.
    pub fn is_plus(&self) -> bool {
        self.plus
    }
}

impl MechanismProvider for ScramProvider {
    fn name(&self) -> &str {
        mechanism_name(self.hash, self.plus)
    }

    fn available(&self, stream: &StreamInfo) -> bool {
        !self.plus || stream.has_channel_binding()
    }

    fn start(&self, stream: &StreamInfo, _request: &AuthenticateRequest) -> Box<dyn Mechanism> {
        Box::new(ScramMechanism {
            hash: self.hash,
            plus: self.plus,
            plus_offered_here: !self.plus && self.plus_offered && stream.has_channel_binding(),
            unknown: self.unknown.clone(),
            fixed_nonce_suffix: self.fixed_nonce_suffix.clone(),
            accounts: self.accounts.clone(),
            stream: stream.clone(),
            state: State::Start {
                sent_empty_challenge: false,
            },
        })
    }
}
