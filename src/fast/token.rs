//! FAST token secrets and how they are sealed at rest.
//!
//! A token handed to a client is `secret-token:fast-` + base64url(HMAC-SHA-256(pepper,
//! context || nonce || account || client-hash)). The store keeps only the random nonce; the
//! pepper lives in a separate file (mode 0600). A copy of the database alone therefore cannot
//! log anyone in, and losing the pepper invalidates every token (docs/security.md).
//!
//! The `secret-token:` prefix (RFC 8959) lets secret scanners find leaked tokens.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::secret_file::SecretFileError;
use crate::store::ClientKey;

/// Prefix of every token (RFC 8959 + a FAST marker, as Prosody uses).
pub const TOKEN_PREFIX: &str = "secret-token:fast-";
/// Domain separation for the derivation, so the pepper is never used for anything else.
const DERIVATION_CONTEXT: &[u8] = b"sasl2-fast token v1\0";
/// Pepper size in bytes.
pub const PEPPER_LEN: usize = 32;

/// A FAST token: password-equivalent (F-24).
///
/// Zeroized on drop; `Debug` and `Display` print `[redacted]`. The only way to see the value
/// is [`FastToken::expose`], which the plugin calls exactly once, when it writes `<token>`.
#[derive(Clone, PartialEq, Eq)]
pub struct FastToken(Zeroizing<String>);

impl FastToken {
    /// Wraps a token string (e.g. one a test client received).
    pub fn new(s: impl Into<String>) -> Self {
        FastToken(Zeroizing::new(s.into()))
    }

    /// The token string: the HMAC key of the HT mechanisms (as UTF-8 bytes).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FastToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FastToken([redacted])")
    }
}

impl fmt::Display for FastToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The server-side secret from which tokens are derived.
#[derive(Clone)]
pub struct Pepper(Zeroizing<[u8; PEPPER_LEN]>);

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper([redacted])")
    }
}

impl Pepper {
    /// A fresh random pepper.
    pub fn generate() -> Self {
        let mut p = Zeroizing::new([0u8; PEPPER_LEN]);
        fill_random(&mut p[..]);
        Pepper(p)
    }

    /// A pepper from bytes (tests, or a host that keeps it in a KMS).
    pub fn from_bytes(bytes: [u8; PEPPER_LEN]) -> Self {
        Pepper(Zeroizing::new(bytes))
    }

    /// Loads the pepper from `path`, creating it with mode 0600 if it does not exist.
    ///
    /// Creation uses `create_new`, so two processes racing on first start cannot end up with
    /// different peppers: the loser reads the winner's file. A file of the wrong size, or one
    /// that group or others can read, is an error, never silently replaced or accepted.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretFileError> {
        crate::secret_file::load_or_create(path, || Self::generate().0).map(Pepper)
    }

    /// Loads an existing pepper file (its permissions checked).
    pub fn load(path: &Path) -> Result<Self, SecretFileError> {
        crate::secret_file::load(path).map(Pepper)
    }

    /// Creates a new pepper file (mode 0600); fails if one exists.
    pub fn create(path: &Path) -> Result<Self, SecretFileError> {
        crate::secret_file::create(path, &Self::generate().0).map(Pepper)
    }

    /// Derives the token for one slot nonce of one client.
    pub fn derive_token(&self, nonce: &[u8; 32], key: &ClientKey) -> FastToken {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..]).expect("any key length");
        mac.update(DERIVATION_CONTEXT);
        mac.update(nonce);
        // Length-prefixed so (account, hash) pairs cannot collide.
        mac.update(&(key.account().len() as u32).to_be_bytes());
        mac.update(key.account().as_bytes());
        mac.update(key.client_hash());
        let mut tag: [u8; 32] = mac.finalize().into_bytes().into();
        let mut s = String::with_capacity(TOKEN_PREFIX.len() + 43);
        s.push_str(TOKEN_PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(tag, &mut s);
        tag.zeroize();
        FastToken::new(s)
    }
}

impl Pepper {
    /// A stable, opaque reference to one client for its owner's client list (XEP-0494 `id`):
    /// HMAC-SHA-256 under the pepper with its own context string, 96 bits, base64url. Keyed, so
    /// it cannot be matched against a guessed user-agent id; domain-separated from token
    /// derivation, so it says nothing about any token.
    pub fn client_ref(&self, key: &ClientKey) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..]).expect("any key length");
        mac.update(CLIENT_REF_CONTEXT);
        mac.update(&(key.account().len() as u32).to_be_bytes());
        mac.update(key.account().as_bytes());
        mac.update(key.client_hash());
        let tag = mac.finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..12])
    }
}

/// Context of [`Pepper::client_ref`], distinct from token derivation's.
const CLIENT_REF_CONTEXT: &[u8] = b"sasl2-fast client-access-management id v1\0";

/// Fills `buf` from the OS CSPRNG (H-9).
///
/// # Panics
/// If the operating system cannot provide randomness; continuing would hand out guessable
/// tokens, which is worse than stopping.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// A fresh 256-bit slot nonce.
pub fn new_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    fill_random(&mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_printable_and_carry_256_bits() {
        let p = Pepper::generate();
        let key = ClientKey::new("alice", "ua").unwrap();
        let t = p.derive_token(&new_nonce(), &key);
        let s = t.expose();
        assert!(s.starts_with("secret-token:fast-"));
        let body = &s[TOKEN_PREFIX.len()..];
        assert_eq!(body.len(), 43, "32 bytes base64url without padding");
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn derivation_depends_on_every_input() {
        let p = Pepper::from_bytes([1; 32]);
        let q = Pepper::from_bytes([2; 32]);
        let n = [9u8; 32];
        let a = ClientKey::new("alice", "ua").unwrap();
        let b = ClientKey::new("alice", "ub").unwrap();
        let c = ClientKey::new("alicf", "ua").unwrap();
        let base = p.derive_token(&n, &a);
        assert_eq!(base, p.derive_token(&n, &a));
        assert_ne!(base, q.derive_token(&n, &a));
        assert_ne!(base, p.derive_token(&[8; 32], &a));
        assert_ne!(base, p.derive_token(&n, &b));
        assert_ne!(base, p.derive_token(&n, &c));
    }

    #[test]
    fn secrets_are_redacted() {
        let t = FastToken::new("secret-token:fast-abc");
        assert_eq!(format!("{t:?}"), "FastToken([redacted])");
        assert_eq!(format!("{t}"), "[redacted]");
        assert_eq!(format!("{:?}", Pepper::generate()), "Pepper([redacted])");
    }

    #[test]
    fn pepper_file_is_created_once_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/pepper");
        let a = Pepper::load_or_create(&path).unwrap();
        let b = Pepper::load_or_create(&path).unwrap();
        assert_eq!(a.0[..], b.0[..]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(Pepper::load_or_create(&path).is_err());
    }
}
