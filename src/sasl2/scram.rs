//! SCRAM-SHA-1 and SCRAM-SHA-256, with and without `-PLUS` (RFC 5802, RFC 7677), server side.
//!
//! The server keeps only [`ScramCredentials`] (salt, iteration count, StoredKey, ServerKey); it
//! never sees or stores the password. One [`ScramProvider`] is registered per mechanism name.
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

use std::fmt;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::accounts::{AccountStore, ScramCredentials, ScramHash, normalize_username};
use super::{
    AuthenticateRequest, Authenticated, ChannelBindingType, Failure, MAX_SASL_PAYLOAD, Mechanism,
    MechanismProvider, SaslCondition, Step, StreamInfo,
};

/// Salt length used by [`derive_credentials`] and for the fake salts of unknown accounts.
pub const SALT_LEN: usize = 16;

/// Iteration count announced for unknown accounts unless changed with
/// [`ScramProvider::with_fake_iterations`]. Set it to the count your real accounts use.
pub const DEFAULT_FAKE_ITERATIONS: u32 = 4096;

/// Random bytes appended to the client nonce (RFC 5802 §5.1 `r=`).
const SERVER_NONCE_BYTES: usize = 24;

/// Longest accepted authorization identity (JID length limit, RFC 7622 §3.1).
pub(crate) const MAX_AUTHZID_BYTES: usize = 3071;

// ---------------------------------------------------------------------------------------------
// Primitives shared with PLAIN.

/// Output length of the hash in bytes.
pub(crate) fn hash_len(hash: ScramHash) -> usize {
    match hash {
        ScramHash::Sha1 => 20,
        ScramHash::Sha256 => 32,
    }
}

fn hash_name(hash: ScramHash) -> &'static str {
    match hash {
        ScramHash::Sha1 => "SHA-1",
        ScramHash::Sha256 => "SHA-256",
    }
}

/// `HMAC(key, data)` with the family's hash.
pub(crate) fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
    fn run<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
        mac.update(data);
        Zeroizing::new(mac.finalize().into_bytes().to_vec())
    }
    match hash {
        ScramHash::Sha1 => run::<Hmac<Sha1>>(key, data),
        ScramHash::Sha256 => run::<Hmac<Sha256>>(key, data),
    }
}

/// `H(data)` with the family's hash.
pub(crate) fn digest(hash: ScramHash, data: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    })
}

/// `SaltedPassword := Hi(Normalize(password), salt, i)` (RFC 5802 §3), with the password
/// already normalized.
pub(crate) fn salted_password(
    hash: ScramHash,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![0u8; hash_len(hash)]);
    match hash {
        ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
        ScramHash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
    }
    out
}

/// `(StoredKey, ServerKey)` from a SaltedPassword.
pub(crate) fn keys_from_salted(
    hash: ScramHash,
    salted: &[u8],
) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
    let client_key = hmac(hash, salted, b"Client Key");
    let stored_key = digest(hash, &client_key);
    let server_key = hmac(hash, salted, b"Server Key");
    (stored_key, server_key)
}

/// `Normalize(password)`: SASLprep (RFC 4013) as a stored string.
///
/// If SASLprep rejects the password (prohibited or unassigned characters, bidi violations), the
/// raw UTF-8 bytes are used instead. Refusing here is not an option because
/// [`derive_credentials`] cannot fail, and PLAIN uses the same function so that a password
/// set through it still verifies. SCRAM clients that apply SASLprep strictly cannot log in
/// with such a password; clients that fall back to the raw bytes (as RFC 5802 §2.2 lets
/// clients treat passwords as "query strings") can.
pub(crate) fn prepare_password(password: &str) -> Zeroizing<Vec<u8>> {
    match stringprep::saslprep(password) {
        Ok(p) => Zeroizing::new(p.into_owned().into_bytes()),
        Err(_) => Zeroizing::new(password.as_bytes().to_vec()),
    }
}

/// Derives SCRAM credentials for a password with a fresh random salt of [`SALT_LEN`] bytes.
///
/// The password is normalized with SASLprep; see [`derive_credentials_with_salt`].
///
/// # Panics
/// Panics if the operating system's random number generator fails (never on supported
/// platforms in practice; no attacker input reaches this function).
pub fn derive_credentials(hash: ScramHash, password: &str, iterations: u32) -> ScramCredentials {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).expect("OS random number generator failed");
    derive_credentials_with_salt(hash, password, &salt, iterations)
}

/// Derives SCRAM credentials for a password with a given salt.
///
/// The password is normalized with SASLprep (RFC 4013). If SASLprep rejects it (prohibited or
/// unassigned characters, bidi violations), its raw UTF-8 bytes are used instead: this function
/// cannot fail, and PLAIN applies the same rule, so such a password still works with PLAIN and
/// with SCRAM clients that fall back to the raw bytes, but not with clients that refuse it.
/// An iteration count of 0 is raised to 1, the minimum RFC 5802 allows.
pub fn derive_credentials_with_salt(
    hash: ScramHash,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> ScramCredentials {
    let iterations = iterations.max(1);
    let password = prepare_password(password);
    let salted = salted_password(hash, &password, salt, iterations);
    let (stored_key, server_key) = keys_from_salted(hash, &salted);
    ScramCredentials {
        salt: salt.to_vec(),
        iterations,
        stored_key,
        server_key,
    }
}

/// True if stored credentials can be used with `hash`.
pub(crate) fn credentials_usable(hash: ScramHash, creds: &ScramCredentials) -> bool {
    creds.iterations > 0
        && !creds.salt.is_empty()
        && creds.stored_key.len() == hash_len(hash)
        && creds.server_key.len() == hash_len(hash)
}

/// A per-process random key for the fake credentials of unknown accounts. `None` if the OS
/// random generator failed (then every attempt fails with `temporary-auth-failure`).
fn process_key() -> Option<&'static [u8; 32]> {
    static KEY: OnceLock<Option<[u8; 32]>> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).ok().map(|()| k)
    })
    .as_ref()
}

/// Deterministic, unguessable credentials for an account that does not exist (S-29): the same
/// username always gets the same salt, so repeated probes look like a real account.
pub(crate) fn fake_credentials(
    hash: ScramHash,
    username: &str,
    iterations: u32,
) -> Option<ScramCredentials> {
    let key = process_key()?;
    let derive = |label: &[u8], len: usize| {
        let mut data = Vec::with_capacity(label.len() + username.len() + 16);
        data.extend_from_slice(label);
        data.push(0);
        data.extend_from_slice(hash_name(hash).as_bytes());
        data.push(0);
        data.extend_from_slice(username.as_bytes());
        let mut out = hmac(ScramHash::Sha256, key, &data);
        out.truncate(len);
        out
    };
    Some(ScramCredentials {
        salt: derive(b"salt", SALT_LEN).to_vec(),
        iterations: iterations.max(1),
        stored_key: derive(b"stored-key", hash_len(hash)),
        server_key: derive(b"server-key", hash_len(hash)),
    })
}

/// Fills `n` random bytes, or `None` if the OS generator failed.
fn random_bytes(n: usize) -> Option<Vec<u8>> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).ok()?;
    Some(v)
}

// ---------------------------------------------------------------------------------------------
// Authorization identity (S-10, S-31), shared with PLAIN.

fn domain_eq(a: &str, b: &str) -> bool {
    fn norm(d: &str) -> Option<String> {
        let d = d.strip_suffix('.').unwrap_or(d);
        if d.is_empty() {
            return None;
        }
        stringprep::nameprep(d).ok().map(|c| c.into_owned())
    }
    match (norm(a), norm(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// True if `jid` names the account `username` on `domain`: `username@domain`, or (when
/// `allow_localpart`) just `username`. A resource is accepted only when `strip_resource`.
fn jid_names_user(
    jid: &str,
    username: &str,
    domain: &str,
    allow_localpart: bool,
    strip_resource: bool,
) -> bool {
    let bare = match jid.split_once('/') {
        Some((bare, _)) if strip_resource => bare,
        Some(_) => return false,
        None => jid,
    };
    match bare.split_once('@') {
        Some((local, dom)) => {
            normalize_username(local).as_deref() == Some(username) && domain_eq(dom, domain)
        }
        None => allow_localpart && normalize_username(bare).as_deref() == Some(username),
    }
}

/// Checks a client-supplied authorization identity.
///
/// An empty authzid means "the authenticated user". A non-empty one must be the user's own
/// bare JID (`username@domain`, domain from [`StreamInfo::domain`]) or the bare username;
/// proxy authorization is not supported. If the stream `from` is present it must name the
/// same user as well (S-10). Anything else fails with `invalid-authzid`.
pub(crate) fn check_authzid(
    authzid: &str,
    username: &str,
    stream: &StreamInfo,
) -> Result<(), Failure> {
    if authzid.is_empty() {
        return Ok(());
    }
    let invalid = || Failure::new(SaslCondition::InvalidAuthzid);
    if authzid.len() > MAX_AUTHZID_BYTES
        || !jid_names_user(authzid, username, &stream.domain, true, false)
    {
        return Err(invalid());
    }
    if let Some(from) = stream.from.as_deref().filter(|f| !f.is_empty())
        && !jid_names_user(from, username, &stream.domain, false, true)
    {
        return Err(invalid());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Message parsing (RFC 5802 §7).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CbFlag<'a> {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not.
    Yes,
    /// `p=<name>`: the client uses channel binding of that type.
    Type(&'a str),
}

#[derive(Debug)]
struct ClientFirst<'a> {
    cb: CbFlag<'a>,
    authzid: Option<String>,
    username: String,
    nonce: &'a str,
    gs2_header: &'a str,
    bare: &'a str,
}

#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    Malformed,
    /// A mandatory extension (`m=`) the server does not support.
    MandatoryExtension,
}

#[derive(Debug)]
struct ClientFinal<'a> {
    cbind: &'a str,
    nonce: &'a str,
    proof: &'a str,
    without_proof: &'a str,
}

/// `saslname`: 1*(value-safe-char / "=2C" / "=3D"), no NUL.
fn decode_saslname(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        let esc = rest.get(pos..pos + 3)?;
        match esc {
            "=2C" => out.push(','),
            "=3D" => out.push('='),
            _ => return None,
        }
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    if out.contains('\0') {
        return None;
    }
    Some(out)
}

/// `cb-name = 1*(ALPHA / DIGIT / "." / "-")`.
fn valid_cb_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// `printable = %x21-2B / %x2D-7E` (no comma).
fn valid_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// An optional extension `attr-val = ALPHA "=" value`. `m=` is mandatory and unsupported.
fn check_extension(s: &str) -> Result<(), ParseError> {
    let b = s.as_bytes();
    if b.len() < 3 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
        return Err(ParseError::Malformed);
    }
    if b[0] == b'm' {
        return Err(ParseError::MandatoryExtension);
    }
    Ok(())
}

fn parse_client_first(input: &str) -> Result<ClientFirst<'_>, ParseError> {
    use ParseError::Malformed;
    let (flag, rest) = input.split_once(',').ok_or(Malformed)?;
    let cb = match flag {
        "n" => CbFlag::No,
        "y" => CbFlag::Yes,
        f => {
            let name = f.strip_prefix("p=").ok_or(Malformed)?;
            if !valid_cb_name(name) {
                return Err(Malformed);
            }
            CbFlag::Type(name)
        }
    };
    let (authz, bare) = rest.split_once(',').ok_or(Malformed)?;
    let authzid = if authz.is_empty() {
        None
    } else {
        let a = authz.strip_prefix("a=").ok_or(Malformed)?;
        Some(decode_saslname(a).ok_or(Malformed)?)
    };
    let gs2_header = &input[..input.len() - bare.len()];
    let mut attrs = bare.split(',');
    let first = attrs.next().ok_or(Malformed)?;
    if first.starts_with("m=") {
        return Err(ParseError::MandatoryExtension);
    }
    let username = first
        .strip_prefix("n=")
        .and_then(decode_saslname)
        .ok_or(Malformed)?;
    let nonce = attrs
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .ok_or(Malformed)?;
    if !valid_nonce(nonce) {
        return Err(Malformed);
    }
    for ext in attrs {
        check_extension(ext)?;
    }
    Ok(ClientFirst {
        cb,
        authzid,
        username,
        nonce,
        gs2_header,
        bare,
    })
}

fn parse_client_final(input: &str) -> Result<ClientFinal<'_>, ParseError> {
    use ParseError::Malformed;
    let (without_proof, proof_attr) = input.rsplit_once(',').ok_or(Malformed)?;
    let proof = proof_attr.strip_prefix("p=").ok_or(Malformed)?;
    let mut attrs = without_proof.split(',');
    let cbind = attrs
        .next()
        .and_then(|c| c.strip_prefix("c="))
        .ok_or(Malformed)?;
    let nonce = attrs
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .ok_or(Malformed)?;
    if cbind.is_empty() || proof.is_empty() || !valid_nonce(nonce) {
        return Err(Malformed);
    }
    for ext in attrs {
        check_extension(ext)?;
    }
    Ok(ClientFinal {
        cbind,
        nonce,
        proof,
        without_proof,
    })
}

/// Validates size and encoding of a client message.
fn message_text(input: &[u8]) -> Option<&str> {
    if input.is_empty() || input.len() > MAX_SASL_PAYLOAD || input.contains(&0) {
        return None;
    }
    std::str::from_utf8(input).ok()
}

fn fail(condition: SaslCondition) -> Step {
    Step::Failure(Failure::new(condition))
}

fn fail_text(condition: SaslCondition, text: &str) -> Step {
    Step::Failure(Failure::with_text(condition, text))
}

// ---------------------------------------------------------------------------------------------
// Provider.

/// A SCRAM mechanism provider: one of `SCRAM-SHA-1`, `SCRAM-SHA-1-PLUS`, `SCRAM-SHA-256`,
/// `SCRAM-SHA-256-PLUS`.
///
/// ```
/// use std::sync::Arc;
/// use sasl2_fast::sasl2::MechanismProvider as _;
/// use sasl2_fast::sasl2::accounts::{AccountStore, MemoryAccounts, ScramHash};
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
    fake_iterations: u32,
    fixed_nonce_suffix: Option<String>,
    accounts: Arc<dyn AccountStore>,
}

impl fmt::Debug for ScramProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramProvider")
            .field("name", &self.name())
            .field("plus_offered", &self.plus_offered)
            .field("fake_iterations", &self.fake_iterations)
            .field("fixed_nonce", &self.fixed_nonce_suffix.is_some())
            .field("accounts", &self.accounts)
            .finish()
    }
}

impl ScramProvider {
    /// A provider for `SCRAM-<hash>` (or `SCRAM-<hash>-PLUS` when `plus`), verifying against
    /// `accounts`.
    pub fn new(hash: ScramHash, plus: bool, accounts: Arc<dyn AccountStore>) -> Self {
        // Create the fake-credential key now so its first use costs nothing measurable.
        let _ = process_key();
        ScramProvider {
            hash,
            plus,
            plus_offered: true,
            fake_iterations: DEFAULT_FAKE_ITERATIONS,
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

    /// The iteration count announced for unknown accounts (default
    /// [`DEFAULT_FAKE_ITERATIONS`]). Use the count of your real accounts, so the challenge does
    /// not tell unknown accounts apart.
    pub fn with_fake_iterations(mut self, iterations: u32) -> Self {
        self.fake_iterations = iterations.max(1);
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
        match (self.hash, self.plus) {
            (ScramHash::Sha1, false) => "SCRAM-SHA-1",
            (ScramHash::Sha1, true) => "SCRAM-SHA-1-PLUS",
            (ScramHash::Sha256, false) => "SCRAM-SHA-256",
            (ScramHash::Sha256, true) => "SCRAM-SHA-256-PLUS",
        }
    }

    fn available(&self, stream: &StreamInfo) -> bool {
        !self.plus || !stream.channel_binding_types().is_empty()
    }

    fn start(&self, stream: &StreamInfo, _request: &AuthenticateRequest) -> Box<dyn Mechanism> {
        Box::new(ScramMechanism {
            hash: self.hash,
            plus: self.plus,
            plus_offered_here: !self.plus
                && self.plus_offered
                && !stream.channel_binding_types().is_empty(),
            fake_iterations: self.fake_iterations,
            fixed_nonce_suffix: self.fixed_nonce_suffix.clone(),
            accounts: self.accounts.clone(),
            stream: stream.clone(),
            state: State::Start {
                sent_empty_challenge: false,
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// One attempt.

struct Pending {
    username: String,
    known: bool,
    creds: ScramCredentials,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// `gs2-header || cb-data`, what `c=` must decode to.
    expected_cbind: Zeroizing<Vec<u8>>,
}

enum State {
    Start { sent_empty_challenge: bool },
    WaitFinal(Box<Pending>),
    Done,
}

struct ScramMechanism {
    hash: ScramHash,
    plus: bool,
    /// Non-PLUS attempt on a stream where the server offers `-PLUS` (downgrade check).
    plus_offered_here: bool,
    fake_iterations: u32,
    fixed_nonce_suffix: Option<String>,
    accounts: Arc<dyn AccountStore>,
    stream: StreamInfo,
    state: State,
}

impl ScramMechanism {
    fn name(&self) -> &'static str {
        match (self.hash, self.plus) {
            (ScramHash::Sha1, false) => "SCRAM-SHA-1",
            (ScramHash::Sha1, true) => "SCRAM-SHA-1-PLUS",
            (ScramHash::Sha256, false) => "SCRAM-SHA-256",
            (ScramHash::Sha256, true) => "SCRAM-SHA-256-PLUS",
        }
    }

    async fn client_first(&mut self, input: &[u8]) -> Result<Pending, Step> {
        use SaslCondition::*;
        let text = message_text(input).ok_or_else(|| fail(MalformedRequest))?;
        let cf = match parse_client_first(text) {
            Ok(cf) => cf,
            Err(ParseError::MandatoryExtension) => {
                return Err(fail_text(
                    MalformedRequest,
                    "unsupported mandatory extension",
                ));
            }
            Err(ParseError::Malformed) => return Err(fail(MalformedRequest)),
        };

        // Channel binding (RFC 5802 §6).
        let cb_data: &[u8] = match (self.plus, cf.cb) {
            (true, CbFlag::Type(name)) => {
                match ChannelBindingType::from_name(name)
                    .and_then(|t| self.stream.channel_binding(t))
                {
                    Some(data) => data,
                    None => {
                        return Err(fail_text(NotAuthorized, "unsupported channel-binding type"));
                    }
                }
            }
            (true, _) => {
                return Err(fail_text(
                    MalformedRequest,
                    "-PLUS mechanism requires channel binding",
                ));
            }
            (false, CbFlag::Type(_)) => {
                return Err(fail_text(
                    MalformedRequest,
                    "channel binding requires a -PLUS mechanism",
                ));
            }
            (false, CbFlag::Yes) if self.plus_offered_here => {
                return Err(fail_text(NotAuthorized, "channel binding downgrade"));
            }
            (false, _) => &[],
        };

        let username = stringprep::saslprep(&cf.username)
            .ok()
            .and_then(|u| normalize_username(&u))
            .ok_or_else(|| fail(NotAuthorized))?;
        check_authzid(cf.authzid.as_deref().unwrap_or(""), &username, &self.stream)
            .map_err(Step::Failure)?;

        let suffix = match &self.fixed_nonce_suffix {
            Some(s) => s.clone(),
            None => B64.encode(
                random_bytes(SERVER_NONCE_BYTES).ok_or_else(|| fail(TemporaryAuthFailure))?,
            ),
        };
        let nonce = format!("{}{}", cf.nonce, suffix);

        let (creds, known) = match self.accounts.scram_credentials(&username, self.hash).await {
            Ok(Some(c)) if credentials_usable(self.hash, &c) => (c, true),
            Ok(Some(_)) => {
                tracing::warn!(
                    mechanism = self.name(),
                    "stored SCRAM verifier is unusable (bad lengths or iteration count)"
                );
                return Err(fail(TemporaryAuthFailure));
            }
            Ok(None) => (
                fake_credentials(self.hash, &username, self.fake_iterations)
                    .ok_or_else(|| fail(TemporaryAuthFailure))?,
                false,
            ),
            Err(e) => {
                tracing::warn!(mechanism = self.name(), error = %e, "account lookup failed");
                return Err(fail(TemporaryAuthFailure));
            }
        };

        let server_first = format!(
            "r={},s={},i={}",
            nonce,
            B64.encode(&creds.salt),
            creds.iterations
        );
        let mut expected_cbind =
            Zeroizing::new(Vec::with_capacity(cf.gs2_header.len() + cb_data.len()));
        expected_cbind.extend_from_slice(cf.gs2_header.as_bytes());
        expected_cbind.extend_from_slice(cb_data);
        Ok(Pending {
            username,
            known,
            creds,
            client_first_bare: cf.bare.to_owned(),
            server_first,
            nonce,
            expected_cbind,
        })
    }

    fn client_final(&self, p: &Pending, input: &[u8]) -> Step {
        use SaslCondition::*;
        let Some(text) = message_text(input) else {
            return fail(MalformedRequest);
        };
        let cf = match parse_client_final(text) {
            Ok(cf) => cf,
            Err(ParseError::MandatoryExtension) => {
                return fail_text(MalformedRequest, "unsupported mandatory extension");
            }
            Err(ParseError::Malformed) => return fail(MalformedRequest),
        };
        let (Ok(cbind), Ok(proof)) = (B64.decode(cf.cbind), B64.decode(cf.proof)) else {
            return fail(MalformedRequest);
        };
        let proof = Zeroizing::new(proof);
        if proof.len() != hash_len(self.hash) {
            return fail(MalformedRequest);
        }
        let cb_ok = cbind.len() == p.expected_cbind.len()
            && bool::from(cbind.as_slice().ct_eq(p.expected_cbind.as_slice()));
        if !cb_ok {
            return fail_text(NotAuthorized, "channel binding mismatch");
        }
        if cf.nonce != p.nonce {
            return fail_text(NotAuthorized, "nonce mismatch");
        }

        let mut auth_message = Vec::with_capacity(
            p.client_first_bare.len() + p.server_first.len() + cf.without_proof.len() + 2,
        );
        auth_message.extend_from_slice(p.client_first_bare.as_bytes());
        auth_message.push(b',');
        auth_message.extend_from_slice(p.server_first.as_bytes());
        auth_message.push(b',');
        auth_message.extend_from_slice(cf.without_proof.as_bytes());

        let client_signature = hmac(self.hash, &p.creds.stored_key, &auth_message);
        let client_key: Zeroizing<Vec<u8>> = Zeroizing::new(
            proof
                .iter()
                .zip(client_signature.iter())
                .map(|(a, b)| a ^ b)
                .collect(),
        );
        let computed = digest(self.hash, &client_key);
        let proof_ok = bool::from(computed.as_slice().ct_eq(p.creds.stored_key.as_slice()));
        if !(proof_ok && p.known) {
            return fail(NotAuthorized);
        }
        let server_signature = hmac(self.hash, &p.creds.server_key, &auth_message);
        let mut additional = b"v=".to_vec();
        additional.extend_from_slice(B64.encode(server_signature.as_slice()).as_bytes());
        Step::Success(Authenticated {
            username: p.username.clone(),
            additional_data: Some(additional),
            state: None,
        })
    }
}

#[async_trait]
impl Mechanism for ScramMechanism {
    async fn step(&mut self, input: Option<&[u8]>) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done);
        match (state, input) {
            // Client-first mechanism without an initial response: ask for it with an empty
            // challenge (RFC 4422 §5), once.
            (
                State::Start {
                    sent_empty_challenge: false,
                },
                None,
            ) => {
                self.state = State::Start {
                    sent_empty_challenge: true,
                };
                Step::Challenge(Vec::new())
            }
            (State::Start { .. }, Some(input)) => match self.client_first(input).await {
                Ok(pending) => {
                    let challenge = pending.server_first.clone().into_bytes();
                    self.state = State::WaitFinal(Box::new(pending));
                    Step::Challenge(challenge)
                }
                Err(step) => step,
            },
            (State::WaitFinal(pending), Some(input)) => self.client_final(&pending, input),
            _ => fail(SaslCondition::MalformedRequest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl2::accounts::{AccountError, MemoryAccounts};
    use crate::sasl2::{ChannelBindings, TlsInfo, TlsVersion};

    fn stream(cb: ChannelBindings) -> StreamInfo {
        StreamInfo {
            domain: "example.com".into(),
            from: None,
            tls: Some(TlsInfo {
                version: TlsVersion::Tls13,
                channel_bindings: cb,
            }),
            allow_plaintext: false,
            peer: None,
        }
    }

    fn exporter() -> Vec<u8> {
        (0u8..32).collect()
    }

    fn endpoint() -> Vec<u8> {
        vec![0xab; 32]
    }

    fn cb_stream() -> StreamInfo {
        stream(ChannelBindings {
            tls_exporter: Some(exporter()),
            tls_server_end_point: Some(endpoint()),
            tls_unique: None,
        })
    }

    fn plain_stream() -> StreamInfo {
        StreamInfo {
            domain: "example.com".into(),
            from: None,
            tls: None,
            allow_plaintext: true,
            peer: None,
        }
    }

    fn request(mech: &str) -> AuthenticateRequest {
        AuthenticateRequest {
            mechanism: mech.into(),
            initial_response: None,
            user_agent: None,
            inline: Vec::new(),
        }
    }

    const ITER: u32 = 64;

    fn accounts() -> Arc<MemoryAccounts> {
        let a = Arc::new(MemoryAccounts::new());
        a.set_password("user", "pencil", ITER);
        a
    }

    fn provider(hash: ScramHash, plus: bool, a: Arc<MemoryAccounts>) -> ScramProvider {
        ScramProvider::new(hash, plus, a).with_fake_iterations(ITER)
    }

    fn start(p: &ScramProvider, s: &StreamInfo) -> Box<dyn Mechanism> {
        p.start(s, &request(p.name()))
    }

    fn challenge(step: Step) -> String {
        match step {
            Step::Challenge(c) => String::from_utf8(c).unwrap(),
            other => panic!("expected challenge, got {other:?}"),
        }
    }

    fn condition(step: Step) -> SaslCondition {
        match step {
            Step::Failure(f) => f.condition,
            other => panic!("expected failure, got {other:?}"),
        }
    }

    fn success(step: Step) -> Authenticated {
        match step {
            Step::Success(a) => a,
            other => panic!("expected success, got {other:?}"),
        }
    }

    /// A minimal SCRAM client for the tests (the RFC vectors pin down the primitives, the
    /// `sasl` crate interop tests check against an independent client).
    struct Client {
        hash: ScramHash,
        password: String,
        gs2_header: String,
        cb_data: Vec<u8>,
        client_first_bare: String,
        server_signature: Option<Vec<u8>>,
        /// Sends this `r=` in the final message instead of the server's nonce.
        nonce_override: Option<String>,
    }

    impl Client {
        fn new(hash: ScramHash, user: &str, password: &str, gs2_header: &str, cb: &[u8]) -> Self {
            Client {
                hash,
                password: password.into(),
                gs2_header: gs2_header.into(),
                cb_data: cb.to_vec(),
                client_first_bare: format!("n={user},r=clientnonce123"),
                server_signature: None,
                nonce_override: None,
            }
        }

        fn first(&self) -> Vec<u8> {
            format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
        }

        /// The client-final message; `cbind` overrides the `c=` bytes.
        fn fin(&mut self, server_first: &str, cbind: Option<&[u8]>) -> Vec<u8> {
            let mut attrs = server_first.split(',');
            let nonce = attrs.next().unwrap().strip_prefix("r=").unwrap();
            let salt = B64
                .decode(attrs.next().unwrap().strip_prefix("s=").unwrap())
                .unwrap();
            let iters: u32 = attrs
                .next()
                .unwrap()
                .strip_prefix("i=")
                .unwrap()
                .parse()
                .unwrap();
            let mut c = self.gs2_header.as_bytes().to_vec();
            c.extend_from_slice(&self.cb_data);
            let c = cbind.map(<[u8]>::to_vec).unwrap_or(c);
            let nonce = self.nonce_override.as_deref().unwrap_or(nonce);
            let without_proof = format!("c={},r={}", B64.encode(&c), nonce);
            let salted =
                salted_password(self.hash, &prepare_password(&self.password), &salt, iters);
            let client_key = hmac(self.hash, &salted, b"Client Key");
            let stored = digest(self.hash, &client_key);
            let am = format!(
                "{},{},{}",
                self.client_first_bare, server_first, without_proof
            );
            let sig = hmac(self.hash, &stored, am.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(sig.iter())
                .map(|(a, b)| a ^ b)
                .collect();
            let server_key = hmac(self.hash, &salted, b"Server Key");
            self.server_signature = Some(hmac(self.hash, &server_key, am.as_bytes()).to_vec());
            format!("{},p={}", without_proof, B64.encode(proof)).into_bytes()
        }

        fn expected_v(&self) -> Vec<u8> {
            format!("v={}", B64.encode(self.server_signature.as_ref().unwrap())).into_bytes()
        }
    }

    async fn run_client(p: &ScramProvider, s: &StreamInfo, client: &mut Client) -> Step {
        let mut m = start(p, s);
        let sf = match m.step(Some(&client.first())).await {
            Step::Challenge(c) => String::from_utf8(c).unwrap(),
            other => return other,
        };
        let fin = client.fin(&sf, None);
        m.step(Some(&fin)).await
    }

    // --- RFC vectors --------------------------------------------------------------------

    #[tokio::test]
    async fn rfc5802_sha1_vector() {
        let a = Arc::new(MemoryAccounts::new());
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        a.set_credentials(
            "user",
            ScramHash::Sha1,
            derive_credentials_with_salt(ScramHash::Sha1, "pencil", &salt, 4096),
        );
        let p = ScramProvider::new(ScramHash::Sha1, false, a)
            .dangerous_fixed_nonce_for_tests("3rfcNHYJY1ZVvWVs7j");
        let mut m = start(&p, &plain_stream());
        let c = challenge(m.step(Some(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")).await);
        assert_eq!(
            c,
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let ok = success(
            m.step(Some(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            ))
            .await,
        );
        assert_eq!(ok.username, "user");
        assert_eq!(
            ok.additional_data.as_deref(),
            Some(&b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="[..])
        );
        assert!(ok.state.is_none());
        // Nothing may follow completion.
        assert_eq!(
            condition(m.step(Some(b"c=biws")).await),
            SaslCondition::MalformedRequest
        );
    }

    #[tokio::test]
    async fn rfc7677_sha256_vector() {
        let a = Arc::new(MemoryAccounts::new());
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        a.set_credentials(
            "user",
            ScramHash::Sha256,
            derive_credentials_with_salt(ScramHash::Sha256, "pencil", &salt, 4096),
        );
        let p = ScramProvider::new(ScramHash::Sha256, false, a)
            .dangerous_fixed_nonce_for_tests("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let mut m = start(&p, &plain_stream());
        let c = challenge(m.step(Some(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")).await);
        assert_eq!(
            c,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let ok = success(
            m.step(Some(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            ))
            .await,
        );
        assert_eq!(
            ok.additional_data.as_deref(),
            Some(&b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="[..])
        );
    }

    #[tokio::test]
    async fn rfc7677_vector_with_wrong_proof_fails() {
        let a = Arc::new(MemoryAccounts::new());
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        a.set_credentials(
            "user",
            ScramHash::Sha256,
            derive_credentials_with_salt(ScramHash::Sha256, "pencil", &salt, 4096),
        );
        let p = ScramProvider::new(ScramHash::Sha256, false, a)
            .dangerous_fixed_nonce_for_tests("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let mut m = start(&p, &plain_stream());
        challenge(m.step(Some(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")).await);
        // Last proof byte changed.
        let step = m
            .step(Some(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=",
            ))
            .await;
        assert_eq!(condition(step), SaslCondition::NotAuthorized);
    }

    // --- basic behaviour ------------------------------------------------------------------

    #[test]
    fn names_and_availability() {
        let a = accounts();
        let names: Vec<String> = [
            (ScramHash::Sha1, false),
            (ScramHash::Sha1, true),
            (ScramHash::Sha256, false),
            (ScramHash::Sha256, true),
        ]
        .into_iter()
        .map(|(h, p)| provider(h, p, a.clone()).name().to_owned())
        .collect();
        assert_eq!(
            names,
            [
                "SCRAM-SHA-1",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-256-PLUS"
            ]
        );
        let plus = provider(ScramHash::Sha256, true, a.clone());
        let non = provider(ScramHash::Sha256, false, a);
        assert!(plus.available(&cb_stream()));
        assert!(!plus.available(&plain_stream()));
        assert!(!plus.available(&stream(ChannelBindings::default())));
        assert!(non.available(&plain_stream()));
        assert!(non.available(&cb_stream()));
    }

    #[test]
    fn derive_credentials_uses_fresh_salt() {
        let a = derive_credentials(ScramHash::Sha256, "pencil", 16);
        let b = derive_credentials(ScramHash::Sha256, "pencil", 16);
        assert_eq!(a.salt.len(), SALT_LEN);
        assert_ne!(a.salt, b.salt);
        assert_ne!(*a.stored_key, *b.stored_key);
        assert_eq!(a.stored_key.len(), 32);
        let c = derive_credentials_with_salt(ScramHash::Sha1, "pencil", &a.salt, 0);
        assert_eq!(c.iterations, 1);
        assert_eq!(c.server_key.len(), 20);
    }

    #[test]
    fn saslprep_applies_to_passwords() {
        // U+00A0 (no-break space) maps to a space; U+00AD (soft hyphen) maps to nothing.
        let salt = [7u8; 16];
        let a = derive_credentials_with_salt(ScramHash::Sha256, "I\u{AD}X a", &salt, 2);
        let b = derive_credentials_with_salt(ScramHash::Sha256, "IX\u{A0}a", &salt, 2);
        assert_eq!(*a.stored_key, *b.stored_key);
        // A prohibited character (U+0007) falls back to the raw bytes instead of failing.
        let c = derive_credentials_with_salt(ScramHash::Sha256, "a\u{7}", &salt, 2);
        let d = derive_credentials_with_salt(ScramHash::Sha256, "a", &salt, 2);
        assert_ne!(*c.stored_key, *d.stored_key);
    }

    #[tokio::test]
    async fn own_client_round_trip_both_hashes() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let p = provider(hash, false, accounts());
            let mut c = Client::new(hash, "user", "pencil", "n,,", &[]);
            let ok = success(run_client(&p, &cb_stream(), &mut c).await);
            assert_eq!(ok.username, "user");
            assert_eq!(ok.additional_data.unwrap(), c.expected_v());
        }
    }

    #[tokio::test]
    async fn username_is_normalized() {
        let p = provider(ScramHash::Sha256, false, accounts());
        let mut c = Client::new(ScramHash::Sha256, "USER", "pencil", "n,,", &[]);
        assert_eq!(
            success(run_client(&p, &plain_stream(), &mut c).await).username,
            "user"
        );
    }

    #[tokio::test]
    async fn escaped_usernames() {
        let a = accounts();
        a.set_password("a,b=c", "pw", ITER);
        let p = provider(ScramHash::Sha256, false, a);
        let mut c = Client::new(ScramHash::Sha256, "a=2Cb=3Dc", "pw", "n,,", &[]);
        assert_eq!(
            success(run_client(&p, &plain_stream(), &mut c).await).username,
            "a,b=c"
        );
        for bad in [&b"n,,n=a=41,r=abc"[..], b"n,,n=a=,r=abc", b"n,,n=a=2,r=abc"] {
            let mut m = start(&p, &plain_stream());
            assert_eq!(
                condition(m.step(Some(bad)).await),
                SaslCondition::MalformedRequest
            );
        }
    }

    #[tokio::test]
    async fn invalid_username_not_authorized() {
        let p = provider(ScramHash::Sha256, false, accounts());
        for bad in [&b"n,,n=a@b,r=abc"[..], b"n,,n=a b,r=abc", b"n,,n=a/b,r=abc"] {
            let mut m = start(&p, &plain_stream());
            assert_eq!(
                condition(m.step(Some(bad)).await),
                SaslCondition::NotAuthorized
            );
        }
    }

    #[tokio::test]
    async fn wrong_password_not_authorized() {
        let p = provider(ScramHash::Sha256, false, accounts());
        let mut c = Client::new(ScramHash::Sha256, "user", "pencil2", "n,,", &[]);
        assert_eq!(
            condition(run_client(&p, &plain_stream(), &mut c).await),
            SaslCondition::NotAuthorized
        );
    }

    #[tokio::test]
    async fn unknown_user_gets_normal_challenge_then_not_authorized() {
        let p = provider(ScramHash::Sha256, false, accounts());
        let s = plain_stream();
        let mut real = start(&p, &s);
        let rc = challenge(real.step(Some(b"n,,n=user,r=abcdef")).await);
        let mut m = start(&p, &s);
        let fc = challenge(m.step(Some(b"n,,n=nobody,r=abcdef")).await);

        let shape = |c: &str| {
            let parts: Vec<&str> = c.split(',').collect();
            assert_eq!(parts.len(), 3);
            let r = parts[0].strip_prefix("r=abcdef").unwrap();
            let s = B64.decode(parts[1].strip_prefix("s=").unwrap()).unwrap();
            (r.len(), s.len(), parts[2].to_owned())
        };
        assert_eq!(shape(&rc), shape(&fc));
        assert_eq!(shape(&fc), (32, SALT_LEN, format!("i={ITER}")));

        // The fake salt is stable per username and differs between usernames.
        let salt_of = |c: &str| c.split(',').nth(1).unwrap().to_owned();
        let mut again = start(&p, &s);
        let fc2 = challenge(again.step(Some(b"n,,n=nobody,r=xyz")).await);
        assert_eq!(salt_of(&fc), salt_of(&fc2));
        let mut other = start(&p, &s);
        let oc = challenge(other.step(Some(b"n,,n=somebody,r=xyz")).await);
        assert_ne!(salt_of(&fc), salt_of(&oc));

        // Whatever password the client uses, it fails like a wrong password.
        let mut c = Client::new(ScramHash::Sha256, "nobody", "pencil", "n,,", &[]);
        c.client_first_bare = "n=nobody,r=abcdef".into();
        let fin = c.fin(&fc, None);
        assert_eq!(
            failure_text(m.step(Some(&fin)).await),
            (SaslCondition::NotAuthorized, None)
        );
        let mut c = Client::new(ScramHash::Sha256, "user", "wrong", "n,,", &[]);
        c.client_first_bare = "n=user,r=abcdef".into();
        let fin = c.fin(&rc, None);
        assert_eq!(
            failure_text(real.step(Some(&fin)).await),
            (SaslCondition::NotAuthorized, None)
        );
    }

    fn failure_text(step: Step) -> (SaslCondition, Option<String>) {
        match step {
            Step::Failure(f) => (f.condition, f.text),
            other => panic!("expected failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn no_initial_response_gets_empty_challenge_once() {
        let p = provider(ScramHash::Sha256, false, accounts());
        let mut m = start(&p, &plain_stream());
        assert!(matches!(m.step(None).await, Step::Challenge(c) if c.is_empty()));
        let mut c = Client::new(ScramHash::Sha256, "user", "pencil", "n,,", &[]);
        let sf = challenge(m.step(Some(&c.first())).await);
        let fin = c.fin(&sf, None);
        success(m.step(Some(&fin)).await);

        let mut m = start(&p, &plain_stream());
        assert!(matches!(m.step(None).await, Step::Challenge(_)));
        assert_eq!(
            condition(m.step(None).await),
            SaslCondition::MalformedRequest
        );
    }

    #[tokio::test]
    async fn tampered_cbind_rejected() {
        let p = provider(ScramHash::Sha256, false, accounts()).with_plus_offered(false);
        let s = plain_stream();
        // Client says n,, but claims y,, in c= (a MITM rewrote the header).
        let mut c = Client::new(ScramHash::Sha256, "user", "pencil", "n,,", &[]);
        let mut m = start(&p, &s);
        let sf = challenge(m.step(Some(&c.first())).await);
        let fin = c.fin(&sf, Some(b"y,,"));
        assert_eq!(
            condition(m.step(Some(&fin)).await),
            SaslCondition::NotAuthorized
        );

        // c= with trailing cb bytes on a non-PLUS attempt.
        let mut m = start(&p, &s);
        let sf = challenge(m.step(Some(&c.first())).await);
        let fin = c.fin(&sf, Some(b"n,,x"));
        assert_eq!(
            condition(m.step(Some(&fin)).await),
            SaslCondition::NotAuthorized
        );

        // c= that is not base64.
        let mut m = start(&p, &s);
        let sf = challenge(m.step(Some(&c.first())).await);
        let r = sf.split(',').next().unwrap();
        let bad = format!("c=!!!,{r},p={}", B64.encode([0u8; 32]));
        assert_eq!(
            condition(m.step(Some(bad.as_bytes())).await),
            SaslCondition::MalformedRequest
        );
    }

    #[tokio::test]
    async fn nonce_mismatch_rejected() {
        let p = provider(ScramHash::Sha256, false, accounts());
        let mut c = Client::new(ScramHash::Sha256, "user", "pencil", "n,,", &[]);
        let mut m = start(&p, &plain_stream());
        let sf = challenge(m.step(Some(&c.first())).await);
        // A valid proof over the real AuthMessage, but r= is not the nonce the server sent.
        c.nonce_override = Some("clientnonce123".into());
        let fin = c.fin(&sf, None);
        assert_eq!(
            failure_text(m.step(Some(&fin)).await),
            (SaslCondition::NotAuthorized, Some("nonce mismatch".into()))
        );
    }

    #[tokio::test]
    async fn plus_with_tls_exporter() {
        let p = provider(ScramHash::Sha256, true, accounts());
        let s = cb_stream();
        let mut c = Client::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "p=tls-exporter,,",
            &exporter(),
        );
        let ok = success(run_client(&p, &s, &mut c).await);
        assert_eq!(ok.additional_data.unwrap(), c.expected_v());

        // Client computed the binding over other TLS keying material (a MITM'd connection).
        let mut c = Client::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "p=tls-exporter,,",
            &[1; 32],
        );
        assert_eq!(
            condition(run_client(&p, &s, &mut c).await),
            SaslCondition::NotAuthorized
        );
    }

    #[tokio::test]
    async fn plus_with_tls_server_end_point() {
        let p = provider(ScramHash::Sha1, true, accounts());
        let s = cb_stream();
        let mut c = Client::new(
            ScramHash::Sha1,
            "user",
            "pencil",
            "p=tls-server-end-point,,",
            &endpoint(),
        );
        success(run_client(&p, &s, &mut c).await);
        // Exporter bytes presented as endpoint bytes.
        let mut c = Client::new(
            ScramHash::Sha1,
            "user",
            "pencil",
            "p=tls-server-end-point,,",
            &exporter(),
        );
        assert_eq!(
            condition(run_client(&p, &s, &mut c).await),
            SaslCondition::NotAuthorized
        );
    }

    #[tokio::test]
    async fn plus_rules() {
        let p = provider(ScramHash::Sha256, true, accounts());
        let only_endpoint = stream(ChannelBindings {
            tls_server_end_point: Some(endpoint()),
            ..Default::default()
        });
        let cases: [(&[u8], SaslCondition); 5] = [
            (
                b"p=tls-exporter,,n=user,r=abc",
                SaslCondition::NotAuthorized,
            ),
            (b"p=tls-unique,,n=user,r=abc", SaslCondition::NotAuthorized),
            (b"p=tls-foo,,n=user,r=abc", SaslCondition::NotAuthorized),
            (b"n,,n=user,r=abc", SaslCondition::MalformedRequest),
            (b"y,,n=user,r=abc", SaslCondition::MalformedRequest),
        ];
        for (msg, cond) in cases {
            let mut m = start(&p, &only_endpoint);
            assert_eq!(condition(m.step(Some(msg)).await), cond, "{msg:?}");
        }
        let mut m = start(&p, &only_endpoint);
        challenge(m.step(Some(b"p=tls-server-end-point,,n=user,r=abc")).await);
        let mut m = start(&p, &only_endpoint);
        assert_eq!(
            condition(m.step(Some(b"p=bad_name,,n=user,r=abc")).await),
            SaslCondition::MalformedRequest
        );
    }

    #[tokio::test]
    async fn non_plus_rejects_p_flag() {
        let p = provider(ScramHash::Sha256, false, accounts());
        let mut m = start(&p, &cb_stream());
        assert_eq!(
            condition(m.step(Some(b"p=tls-exporter,,n=user,r=abc")).await),
            SaslCondition::MalformedRequest
        );
    }

    #[tokio::test]
    async fn y_flag_downgrade_detection() {
        let a = accounts();
        // Server offers -PLUS on a stream with channel binding: `y` means a downgrade.
        let p = provider(ScramHash::Sha256, false, a.clone());
        let mut c = Client::new(ScramHash::Sha256, "user", "pencil", "y,,", &[]);
        assert_eq!(
            condition(run_client(&p, &cb_stream(), &mut c).await),
            SaslCondition::NotAuthorized
        );
        // No channel binding on the stream: `y` is honest.
        success(run_client(&p, &plain_stream(), &mut c).await);
        // -PLUS not registered: `y` is honest too.
        let p = provider(ScramHash::Sha256, false, a).with_plus_offered(false);
        success(run_client(&p, &cb_stream(), &mut c).await);
    }

    #[tokio::test]
    async fn authzid_rules() {
        let p = provider(ScramHash::Sha256, false, accounts());
        let run = |gs2: &'static str, from: Option<&'static str>| {
            let p = &p;
            async move {
                let mut s = plain_stream();
                s.from = from.map(str::to_owned);
                let mut c = Client::new(ScramHash::Sha256, "user", "pencil", gs2, &[]);
                run_client(p, &s, &mut c).await
            }
        };
        success(run("n,a=user@example.com,", None).await);
        success(run("n,a=User@Example.COM,", None).await);
        success(run("n,a=user,", None).await);
        success(run("n,a=user@example.com,", Some("user@example.com")).await);
        success(run("n,,", Some("other@example.com")).await);
        for (gs2, from) in [
            ("n,a=admin@example.com,", None),
            ("n,a=admin,", None),
            ("n,a=user@example.org,", None),
            ("n,a=user@example.com/res,", None),
            ("n,a=example.com,", None),
            ("n,a=user@example.com,", Some("other@example.com")),
        ] {
            assert_eq!(
                condition(run(gs2, from).await),
                SaslCondition::InvalidAuthzid,
                "{gs2} {from:?}"
            );
        }
        let mut m = start(&p, &plain_stream());
        assert_eq!(
            condition(m.step(Some(b"n,x=user,n=user,r=abc")).await),
            SaslCondition::MalformedRequest
        );
    }

    #[tokio::test]
    async fn malformed_client_first() {
        let p = provider(ScramHash::Sha256, false, accounts());
        let long = format!("n,,n=user,r={}", "a".repeat(MAX_SASL_PAYLOAD));
        let cases: Vec<&[u8]> = vec![
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"n,,n=,r=abc",
            b"n,,n=user,r=abc,m=foo",
            b"n,,m=foo,n=user,r=abc",
            b"n,,n=user,r=abc,1=x",
            b"n,,n=user,r=abc,",
            b"n,,n=us\0er,r=abc",
            b"n,,n=user,r=a\xffc",
            long.as_bytes(),
        ];
        for msg in cases {
            let mut m = start(&p, &plain_stream());
            assert_eq!(
                condition(m.step(Some(msg)).await),
                SaslCondition::MalformedRequest,
                "{:?}",
                String::from_utf8_lossy(msg)
            );
            // A failed attempt is over.
            assert_eq!(
                condition(m.step(Some(b"n,,n=user,r=abc")).await),
                SaslCondition::MalformedRequest
            );
        }
        // Optional extensions are ignored.
        let mut m = start(&p, &plain_stream());
        challenge(m.step(Some(b"n,,n=user,r=abc,x=1")).await);
    }

    #[tokio::test]
    async fn malformed_client_final() {
        let p = provider(ScramHash::Sha256, false, accounts());
        let s = plain_stream();
        let mut probe = start(&p, &s);
        let sf = challenge(probe.step(Some(b"n,,n=user,r=abc")).await);
        let r = sf.split(',').next().unwrap().to_owned();
        let proof = B64.encode([0u8; 32]);
        let cases = vec![
            String::new(),
            "c=biws".into(),
            format!("c=biws,{r}"),
            format!("{r},c=biws,p={proof}"),
            format!("c=biws,{r},p="),
            format!("c=biws,{r},p=***"),
            format!("c=biws,{r},p={}", B64.encode([0u8; 20])),
            format!("c=biws,{r},m=x,p={proof}"),
            format!("c=biws,p={proof}"),
            format!("c=,{r},p={proof}"),
        ];
        for msg in cases {
            let mut m = start(&p, &s);
            challenge(m.step(Some(b"n,,n=user,r=abc")).await);
            assert_eq!(
                condition(m.step(Some(msg.as_bytes())).await),
                SaslCondition::MalformedRequest,
                "{msg}"
            );
        }
        let mut m = start(&p, &s);
        challenge(m.step(Some(b"n,,n=user,r=abc")).await);
        assert_eq!(
            condition(m.step(None).await),
            SaslCondition::MalformedRequest
        );
    }

    #[derive(Debug)]
    struct Broken;

    #[async_trait]
    impl AccountStore for Broken {
        async fn scram_credentials(
            &self,
            _username: &str,
            _hash: ScramHash,
        ) -> Result<Option<ScramCredentials>, AccountError> {
            Err(AccountError("database down".into()))
        }
    }

    #[derive(Debug)]
    struct Corrupt;

    #[async_trait]
    impl AccountStore for Corrupt {
        async fn scram_credentials(
            &self,
            _username: &str,
            _hash: ScramHash,
        ) -> Result<Option<ScramCredentials>, AccountError> {
            let mut c = derive_credentials_with_salt(ScramHash::Sha1, "x", b"salt", 1);
            c.iterations = 0;
            Ok(Some(c))
        }
    }

    #[tokio::test]
    async fn backend_errors_are_temporary() {
        for store in [Arc::new(Broken) as Arc<dyn AccountStore>, Arc::new(Corrupt)] {
            let p = ScramProvider::new(ScramHash::Sha256, false, store);
            let mut m = start(&p, &plain_stream());
            assert_eq!(
                condition(m.step(Some(b"n,,n=user,r=abc")).await),
                SaslCondition::TemporaryAuthFailure
            );
        }
    }

    // --- interop with the `sasl` crate's client --------------------------------------------

    async fn sasl_interop<S: sasl::common::scram::ScramProvider>(
        hash: ScramHash,
        cb: sasl::common::ChannelBinding,
        plus: bool,
    ) {
        use sasl::client::Mechanism as _;
        use sasl::client::mechanisms::Scram;
        let p = provider(hash, plus, accounts());
        let mut client = Scram::<S>::new("user", "pencil", cb).unwrap();
        assert_eq!(client.name(), p.name());
        let mut m = start(&p, &cb_stream());
        let sf = match m.step(Some(&client.initial())).await {
            Step::Challenge(c) => c,
            other => panic!("{other:?}"),
        };
        let fin = client.response(&sf).unwrap();
        let ok = success(m.step(Some(&fin)).await);
        assert_eq!(ok.username, "user");
        client.success(&ok.additional_data.unwrap()).unwrap();

        // And a wrong password with the same client library.
        let mut client =
            Scram::<S>::new("user", "pencil!", sasl::common::ChannelBinding::None).unwrap();
        let p = provider(hash, false, accounts());
        let mut m = start(&p, &cb_stream());
        let sf = challenge(m.step(Some(&client.initial())).await);
        let fin = client.response(sf.as_bytes()).unwrap();
        assert_eq!(
            condition(m.step(Some(&fin)).await),
            SaslCondition::NotAuthorized
        );
    }

    #[tokio::test]
    async fn interop_sasl_crate() {
        use sasl::common::ChannelBinding as Cb;
        use sasl::common::scram::{Sha1 as S1, Sha256 as S256};
        sasl_interop::<S1>(ScramHash::Sha1, Cb::None, false).await;
        sasl_interop::<S256>(ScramHash::Sha256, Cb::None, false).await;
        sasl_interop::<S1>(ScramHash::Sha1, Cb::TlsExporter(exporter()), true).await;
        sasl_interop::<S256>(ScramHash::Sha256, Cb::TlsExporter(exporter()), true).await;
    }

    // --- robustness ---------------------------------------------------------------------

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn rt() -> tokio::runtime::Runtime {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        }

        fn scramish() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                "[npyacrsim=,0-9A-Za-z+/=_\\-\\.]{0,120}".prop_map(String::into_bytes),
                (
                    "(n|y|p=tls-exporter|p=tls-server-end-point|p=x),(a=[a-z=@.]{0,8})?,",
                    "n=[a-zA-Z=,@]{0,10},r=[a-z]{0,10}(,[a-z]=[a-z]{0,3}){0,2}"
                )
                    .prop_map(|(a, b)| format!("{a}{b}").into_bytes()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn any_input_never_panics(
                first in scramish(),
                second in scramish(),
                third in scramish(),
                plus in any::<bool>(),
                sha1 in any::<bool>(),
            ) {
                let hash = if sha1 { ScramHash::Sha1 } else { ScramHash::Sha256 };
                let p = provider(hash, plus, accounts());
                rt().block_on(async {
                    for s in [cb_stream(), plain_stream()] {
                        let mut m = start(&p, &s);
                        let _ = m.step(Some(&first)).await;
                        let _ = m.step(Some(&second)).await;
                        let _ = m.step(Some(&third)).await;
                        let _ = m.step(None).await;

                        // A valid first message followed by arbitrary finals.
                        let mut m = start(&p, &s);
                        let _ = m.step(Some(b"n,,n=user,r=abc")).await;
                        let _ = m.step(Some(&second)).await;
                        let _ = m.step(Some(&third)).await;
                    }
                });
            }

            #[test]
            fn client_final_mutations_never_succeed(
                idx in 0usize..200,
                byte in any::<u8>(),
            ) {
                let p = provider(ScramHash::Sha256, false, accounts());
                rt().block_on(async {
                    let s = plain_stream();
                    let mut c = Client::new(ScramHash::Sha256, "user", "pencil", "n,,", &[]);
                    let mut m = start(&p, &s);
                    let sf = challenge(m.step(Some(&c.first())).await);
                    let mut fin = c.fin(&sf, None);
                    let i = idx % fin.len();
                    prop_assume!(fin[i] != byte);
                    fin[i] = byte;
                    let step = m.step(Some(&fin)).await;
                    prop_assert!(matches!(step, Step::Failure(_)), "mutated final accepted");
                    Ok(())
                })?;
            }
        }
    }
}
