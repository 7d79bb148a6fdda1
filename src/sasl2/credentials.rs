//! SCRAM credentials (RFC 5802 §3): the salt, iteration count, StoredKey and ServerKey a
//! server keeps instead of a password, how they are derived, and the primitives the password
//! mechanisms (SCRAM, PLAIN) share.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Salt length used by [`derive_credentials`] and for the fake salts of unknown accounts.
pub const SALT_LEN: usize = 16;

/// The hash of a SCRAM family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

/// SCRAM verifier for one account and hash (RFC 5802 §3).
#[derive(Clone)]
pub struct ScramCredentials {
    /// Salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Zeroizing<Vec<u8>>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("iterations", &self.iterations)
            .field("keys", &"[redacted]")
            .finish()
    }
}

/// Output length of the hash in bytes.
pub(crate) fn hash_len(hash: ScramHash) -> usize {
    match hash {
        ScramHash::Sha1 => 20,
        ScramHash::Sha256 => 32,
    }
}

pub(crate) fn hash_name(hash: ScramHash) -> &'static str {
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

/// The key the fake credentials of unknown accounts are derived from (S-29), and the salts of
/// accounts whose password comes from configuration ([`FakeKey::salt`]).
///
/// Keep it stable across restarts ([`FakeKey::load_or_create`]): with a key that changes on
/// every start, an unknown account's salt changes with it while a stored account's stays, so
/// two probes across a restart tell them apart.
#[derive(Clone)]
pub struct FakeKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for FakeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FakeKey([redacted])")
    }
}

impl FakeKey {
    /// A key from bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        FakeKey(Zeroizing::new(bytes))
    }

    /// Loads the key from `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, crate::secret_file::SecretFileError> {
        crate::secret_file::load_or_create(path, || {
            let mut k = Zeroizing::new([0u8; 32]);
            getrandom::fill(&mut k[..]).expect("OS random number generator failed");
            k
        })
        .map(FakeKey)
    }

    /// A random key for this process only: what providers use unless given one. Stable while
    /// the process runs, not across restarts. `None` if the OS random generator failed (then
    /// every attempt fails with `temporary-auth-failure`).
    pub fn per_process() -> Option<FakeKey> {
        static KEY: OnceLock<Option<[u8; 32]>> = OnceLock::new();
        KEY.get_or_init(|| {
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).ok().map(|()| k)
        })
        .map(FakeKey::from_bytes)
    }

    /// `HMAC-SHA-256(key, label || 0 || hash name || 0 || username)`, truncated to `len`.
    fn derive(
        &self,
        label: &[u8],
        hash: ScramHash,
        username: &str,
        len: usize,
    ) -> Zeroizing<Vec<u8>> {
        let mut data = Vec::with_capacity(label.len() + username.len() + 16);
        data.extend_from_slice(label);
        data.push(0);
        data.extend_from_slice(hash_name(hash).as_bytes());
        data.push(0);
        data.extend_from_slice(username.as_bytes());
        let mut out = hmac(ScramHash::Sha256, &self.0[..], &data);
        out.truncate(len);
        out
    }

    /// The salt ([`SALT_LEN`] bytes) this key gives `username` for `hash`: the one an unknown
    /// account's fake credentials carry (S-29).
    ///
    /// Derive the credentials of accounts whose password comes from configuration with it
    /// ([`derive_credentials_with_salt`]): their salt is then stable across restarts, has the
    /// form and length of the fake ones, and is the very salt the name had before the account
    /// existed and keeps after it is deleted, so comparing salts tells nothing about which
    /// names are accounts. (A password changed at run time gets a fresh random salt instead,
    /// stored with it.)
    pub fn salt(&self, hash: ScramHash, username: &str) -> Vec<u8> {
        self.derive(b"salt", hash, username, SALT_LEN).to_vec()
    }

    /// Deterministic, unguessable credentials for an account that does not exist: the same
    /// username always gets the same salt, so repeated probes look like a real account.
    pub(crate) fn credentials(
        &self,
        hash: ScramHash,
        username: &str,
        iterations: u32,
    ) -> ScramCredentials {
        ScramCredentials {
            salt: self.salt(hash, username),
            iterations: iterations.max(1),
            stored_key: self.derive(b"stored-key", hash, username, hash_len(hash)),
            server_key: self.derive(b"server-key", hash, username, hash_len(hash)),
        }
    }
}

/// How the password mechanisms answer for an account that does not exist (S-29): with fake
/// credentials derived from a [`FakeKey`] and the iteration count of real accounts, so a probe
/// cannot tell a name without an account from one with it, by salt, count or time. One value
/// for every provider of a server (`with_unknown_accounts` on the SCRAM and PLAIN providers).
#[derive(Clone)]
pub struct UnknownAccounts {
    key: Option<FakeKey>,
    iterations: u32,
}

impl fmt::Debug for UnknownAccounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnknownAccounts")
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("iterations", &self.iterations)
            .finish()
    }
}

impl UnknownAccounts {
    /// Fake credentials from `key` (give a stable one: [`FakeKey::load_or_create`]) with
    /// `iterations` (use the count of your real accounts; at least 1).
    pub fn new(key: FakeKey, iterations: u32) -> Self {
        UnknownAccounts {
            key: Some(key),
            iterations: iterations.max(1),
        }
    }

    /// The same, with the key kept and `iterations` instead.
    pub fn with_iterations(mut self, iterations: u32) -> Self {
        self.iterations = iterations.max(1);
        self
    }

    /// The fake credentials of `username` for `hash`; `None` when there is no key (the OS
    /// random generator failed at start: every attempt then fails with
    /// `temporary-auth-failure`).
    pub(crate) fn credentials(&self, hash: ScramHash, username: &str) -> Option<ScramCredentials> {
        self.key
            .as_ref()
            .map(|k| k.credentials(hash, username, self.iterations))
    }
}

impl Default for UnknownAccounts {
    /// A key for this process only ([`FakeKey::per_process`]: an unknown account's salt then
    /// changes across a restart while a real one's does not) and
    /// [`crate::sasl2::scram::DEFAULT_FAKE_ITERATIONS`].
    fn default() -> Self {
        UnknownAccounts {
            key: FakeKey::per_process(),
            iterations: crate::sasl2::scram::DEFAULT_FAKE_ITERATIONS,
        }
    }
}
