//! PLAIN (RFC 4616), verified against the stored SCRAM credentials.
//!
//! The server stores no password: the offered password is run through the same derivation as
//! SCRAM (SASLprep, PBKDF2 with the stored salt and iteration count) and the resulting StoredKey
//! is compared with the stored one in constant time. SCRAM-SHA-256 credentials are preferred;
//! SCRAM-SHA-1 ones are used when the account has no SHA-256 verifier.
//!
//! PLAIN sends the password itself, so it is offered only on TLS streams (or where the host
//! explicitly allows plaintext, for loopback tests). XEP-0388 recommends not offering it at
//! all unless the backend needs it (S-28).
//!
//! Conditions: syntax errors and a step after completion give `malformed-request`; a bad
//! username, unknown account or wrong password give `not-authorized`; an authorization
//! identity other than the user's own JID gives `invalid-authzid`; backend errors give
//! `temporary-auth-failure`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::accounts::{AccountStore, MAX_USERNAME_BYTES, normalize_username};
use super::authzid::{MAX_AUTHZID_BYTES, check_authzid};
use super::credentials::{
    ScramCredentials, ScramHash, UnknownAccounts, credentials_usable, keys_from_salted,
    prepare_password, salted_password,
};
use super::{
    AuthenticateRequest, Authenticated, CredentialCheck, Failure, MAX_SASL_PAYLOAD, Mechanism,
    MechanismProvider, SaslCondition, Step, StreamInfo,
};

/// Longest accepted password in bytes (RFC 4616 suggests servers accept at least 255 octets).
pub const MAX_PLAIN_PASSWORD_BYTES: usize = 1024;

/// The PLAIN mechanism provider.
pub struct PlainProvider {
    accounts: Arc<dyn AccountStore>,
    unknown: UnknownAccounts,
}

impl fmt::Debug for PlainProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainProvider")
            .field("unknown", &self.unknown)
            .field("accounts", &self.accounts)
            .finish()
    }
}

impl PlainProvider {
    /// A PLAIN provider verifying against `accounts`.
    pub fn new(accounts: Arc<dyn AccountStore>) -> Self {
        PlainProvider {
            accounts,
            unknown: UnknownAccounts::default(),
        }
    }

    /// How unknown accounts are answered: the PBKDF2 iterations spent on them (so they take
    /// as long as real ones) and the key of their fake credentials. Default:
    /// [`UnknownAccounts::default`]; give the one the server's SCRAM providers have.
    pub fn with_unknown_accounts(mut self, unknown: UnknownAccounts) -> Self {
        self.unknown = unknown;
        self
    }
}

impl MechanismProvider for PlainProvider {
    fn name(&self) -> &str {
        "PLAIN"
    }

    fn available(&self, stream: &StreamInfo) -> bool {
        stream.may_authenticate()
    }

    fn start(&self, stream: &StreamInfo, _request: &AuthenticateRequest) -> Box<dyn Mechanism> {
        Box::new(PlainMechanism {
            accounts: self.accounts.clone(),
            unknown: self.unknown.clone(),
            stream: stream.clone(),
            state: State::Start,
        })
    }
}

enum State {
    Start,
    SentEmptyChallenge,
    /// The credentials arrived; the check waits for the throttle ([`Step::Verify`]).
    Received {
        username: String,
        password: Zeroizing<Vec<u8>>,
    },
    Done,
}

struct PlainMechanism {
    accounts: Arc<dyn AccountStore>,
    unknown: UnknownAccounts,
    stream: StreamInfo,
    state: State,
}

/// `authzid NUL authcid NUL passwd`, each part UTF-8 and within bounds.
struct PlainMessage<'a> {
    authzid: &'a str,
    authcid: &'a str,
    password: &'a str,
}

fn parse(input: &[u8]) -> Option<PlainMessage<'_>> {
    if input.len() > MAX_SASL_PAYLOAD || input.iter().filter(|&&b| b == 0).count() != 2 {
        return None;
    }
    let mut parts = input.split(|&b| b == 0);
    let (authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
    if authcid.is_empty()
        || password.is_empty()
        || authzid.len() > MAX_AUTHZID_BYTES
        || authcid.len() > MAX_USERNAME_BYTES
        || password.len() > MAX_PLAIN_PASSWORD_BYTES
    {
        return None;
    }
    Some(PlainMessage {
        authzid: std::str::from_utf8(authzid).ok()?,
        authcid: std::str::from_utf8(authcid).ok()?,
        password: std::str::from_utf8(password).ok()?,
    })
}

/// True if `password` (already prepared) matches `creds`.
fn verify(hash: ScramHash, password: &[u8], creds: &ScramCredentials) -> bool {
    let salted = salted_password(hash, password, &creds.salt, creds.iterations);
    let (stored_key, _server_key) = keys_from_salted(hash, &salted);
    stored_key.len() == creds.stored_key.len()
        && bool::from(stored_key.as_slice().ct_eq(creds.stored_key.as_slice()))
}

fn fail(condition: SaslCondition) -> Step {
    Step::Failure(Failure::new(condition))
}

impl PlainMechanism {
    async fn credentials(
        &self,
        username: &str,
    ) -> Result<(ScramHash, ScramCredentials, bool), Step> {
        let mut found = None;
        for hash in [ScramHash::Sha256, ScramHash::Sha1] {
            match self.accounts.scram_credentials(username, hash).await {
                Ok(Some(c)) => {
                    found = Some((hash, c));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(mechanism = "PLAIN", error = %e, "account lookup failed");
                    return Err(fail(SaslCondition::TemporaryAuthFailure));
                }
            }
        }
        match found {
            Some((hash, c)) if credentials_usable(hash, &c) => Ok((hash, c, true)),
            Some(_) => {
                tracing::warn!(
                    mechanism = "PLAIN",
                    "stored SCRAM verifier is unusable (bad lengths or iteration count)"
                );
                Err(fail(SaslCondition::TemporaryAuthFailure))
            }
            None => {
                let c = self
                    .unknown
                    .credentials(ScramHash::Sha256, username)
                    .ok_or_else(|| fail(SaslCondition::TemporaryAuthFailure))?;
                Ok((ScramHash::Sha256, c, false))
            }
        }
    }

    /// Parses the message; the password waits, prepared, for [`Mechanism::verify`].
    fn receive(&mut self, input: &[u8]) -> Step {
        let Some(msg) = parse(input) else {
            return fail(SaslCondition::MalformedRequest);
        };
        let Some(username) = stringprep::saslprep(msg.authcid)
            .ok()
            .and_then(|u| normalize_username(&u))
        else {
            return fail(SaslCondition::NotAuthorized);
        };
        if let Err(f) = check_authzid(msg.authzid, &username, &self.stream) {
            return Step::Failure(f);
        }
        let password: Zeroizing<Vec<u8>> = prepare_password(msg.password);
        let check = CredentialCheck::new(username.clone());
        self.state = State::Received { username, password };
        Step::Verify(check)
    }

    async fn check(&self, username: String, password: Zeroizing<Vec<u8>>) -> Step {
        let (hash, creds, known) = match self.credentials(&username).await {
            Ok(c) => c,
            Err(step) => return step,
        };
        let Some(matches) =
            crate::blocking::run_blocking(move || verify(hash, &password, &creds)).await
        else {
            return fail(SaslCondition::TemporaryAuthFailure);
        };
        if !(matches && known) {
            return fail(SaslCondition::NotAuthorized);
        }
        Step::Success(Authenticated::new(username, None))
    }
}

#[async_trait]
impl Mechanism for PlainMechanism {
    async fn step(&mut self, input: Option<&[u8]>) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done);
        match (state, input) {
            // No initial response: ask for the credentials with an empty challenge, once.
            (State::Start, None) => {
                self.state = State::SentEmptyChallenge;
                Step::Challenge(Vec::new())
            }
            (State::Start | State::SentEmptyChallenge, Some(input)) => self.receive(input),
            _ => fail(SaslCondition::MalformedRequest),
        }
    }

    async fn verify(&mut self) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Received { username, password } => self.check(username, password).await,
            _ => fail(SaslCondition::MalformedRequest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl2::accounts::{AccountError, MemoryAccounts};
    use crate::sasl2::credentials::derive_credentials;
    use crate::sasl2::{ChannelBindings, TlsInfo, TlsVersion};

    const ITER: u32 = 64;

    fn tls_stream() -> StreamInfo {
        StreamInfo {
            domain: "example.com".into(),
            from: None,
            tls: Some(TlsInfo {
                version: TlsVersion::Tls13,
                channel_bindings: ChannelBindings::default(),
            }),
            allow_plaintext: false,
            peer: None,
            zero_rtt: false,
            early_data: false,
        }
    }

    fn provider() -> PlainProvider {
        let a = Arc::new(MemoryAccounts::new());
        a.set_password("user", "pencil", ITER);
        PlainProvider::new(a)
            .with_unknown_accounts(UnknownAccounts::default().with_iterations(ITER))
    }

    fn request() -> AuthenticateRequest {
        AuthenticateRequest::new("PLAIN")
    }

    async fn run(p: &PlainProvider, s: &StreamInfo, msg: &[u8]) -> Step {
        let mut m = p.start(s, &request());
        crate::sasl2::step_unthrottled(&mut *m, Some(msg)).await
    }

    fn condition(step: Step) -> SaslCondition {
        step.failure_condition()
    }

    fn success(step: Step) -> Authenticated {
        step.authenticated()
    }

    #[test]
    fn availability() {
        let p = provider();
        assert_eq!(p.name(), "PLAIN");
        assert!(p.available(&tls_stream()));
        let mut s = tls_stream();
        s.tls = None;
        assert!(!p.available(&s));
        s.allow_plaintext = true;
        assert!(p.available(&s));
    }

    #[tokio::test]
    async fn success_and_wrong_password() {
        let p = provider();
        let s = tls_stream();
        let ok = success(run(&p, &s, b"\0user\0pencil").await);
        assert_eq!(ok.username, "user");
        assert!(ok.additional_data.is_none());
        assert!(ok.state.is_none());
        assert_eq!(
            success(run(&p, &s, b"\0USER\0pencil").await).username,
            "user"
        );
        assert_eq!(
            condition(run(&p, &s, b"\0user\0pencil2").await),
            SaslCondition::NotAuthorized
        );
        assert_eq!(
            condition(run(&p, &s, b"\0user\0Pencil").await),
            SaslCondition::NotAuthorized
        );
    }

    #[tokio::test]
    async fn unknown_and_invalid_users() {
        let p = provider();
        let s = tls_stream();
        assert_eq!(
            condition(run(&p, &s, b"\0nobody\0pencil").await),
            SaslCondition::NotAuthorized
        );
        assert_eq!(
            condition(run(&p, &s, b"\0a@b\0pencil").await),
            SaslCondition::NotAuthorized
        );
    }

    /// S-31: a non-empty authzid is a JID, compared after RFC 7622 normalisation (case folded,
    /// a final dot of the domain dropped); it may only name the user. S-10: when the stream
    /// `from` is present, an authzid that does not match it fails.
    #[tokio::test]
    async fn authzid_rules() {
        let p = provider();
        let s = tls_stream();
        success(run(&p, &s, b"user@example.com\0user\0pencil").await);
        success(run(&p, &s, b"user\0user\0pencil").await);
        success(run(&p, &s, b"User@EXAMPLE.com\0user\0pencil").await);
        success(run(&p, &s, b"user@example.com.\0user\0pencil").await);
        for msg in [
            &b"admin@example.com\0user\0pencil"[..],
            b"admin\0user\0pencil",
            b"user@evil.example\0user\0pencil",
        ] {
            assert_eq!(
                condition(run(&p, &s, msg).await),
                SaslCondition::InvalidAuthzid
            );
        }
        let from = |f: &str| {
            let mut s = tls_stream();
            s.from = Some(jid::BareJid::new(f).unwrap());
            s
        };
        let msg = b"user@example.com\0user\0pencil";
        success(run(&p, &from("user@example.com"), msg).await);
        assert_eq!(
            condition(run(&p, &from("other@example.com"), msg).await),
            SaslCondition::InvalidAuthzid
        );
        // An empty authzid asks for nothing: `from` is only a hint then.
        success(run(&p, &from("other@example.com"), b"\0user\0pencil").await);
    }

    #[tokio::test]
    async fn malformed() {
        let p = provider();
        let s = tls_stream();
        let long_pw = [
            b"\0user\0".as_slice(),
            &[b'a'; MAX_PLAIN_PASSWORD_BYTES + 1],
        ]
        .concat();
        let cases: Vec<&[u8]> = vec![
            b"",
            b"user",
            b"\0user",
            b"\0user\0pencil\0",
            b"\0\0pencil",
            b"\0user\0",
            b"\0us\xffer\0pencil",
            b"\0user\0pen\xffcil",
            &long_pw,
        ];
        for msg in cases {
            assert_eq!(
                condition(run(&p, &s, msg).await),
                SaslCondition::MalformedRequest,
                "{msg:?}"
            );
        }
    }

    #[tokio::test]
    async fn empty_challenge_then_credentials_and_nothing_after() {
        let p = provider();
        let mut m = p.start(&tls_stream(), &request());
        assert!(
            matches!(crate::sasl2::step_unthrottled(&mut *m, None).await, Step::Challenge(c) if c.is_empty())
        );
        success(crate::sasl2::step_unthrottled(&mut *m, Some(b"\0user\0pencil")).await);
        assert_eq!(
            condition(crate::sasl2::step_unthrottled(&mut *m, Some(b"\0user\0pencil")).await),
            SaslCondition::MalformedRequest
        );
        let mut m = p.start(&tls_stream(), &request());
        condition(crate::sasl2::step_unthrottled(&mut *m, Some(b"\0user\0bad")).await);
        assert_eq!(
            condition(crate::sasl2::step_unthrottled(&mut *m, Some(b"\0user\0pencil")).await),
            SaslCondition::MalformedRequest
        );
    }

    #[tokio::test]
    async fn sha1_only_accounts_and_saslprep() {
        let a = Arc::new(MemoryAccounts::new());
        // Password set with a no-break space, which SASLprep maps to a space.
        a.set_credentials(
            "old",
            ScramHash::Sha1,
            derive_credentials(ScramHash::Sha1, "pass\u{A0}word", ITER),
        );
        let p = PlainProvider::new(a);
        let s = tls_stream();
        success(run(&p, &s, b"\0old\0pass word").await);
        assert_eq!(
            condition(run(&p, &s, b"\0old\0password").await),
            SaslCondition::NotAuthorized
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
            Err(AccountError("down".into()))
        }
    }

    #[tokio::test]
    async fn backend_error_is_temporary() {
        let p = PlainProvider::new(Arc::new(Broken));
        assert_eq!(
            condition(run(&p, &tls_stream(), b"\0user\0pencil").await),
            SaslCondition::TemporaryAuthFailure
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn any_input_never_panics(
                first in prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..200),
                    "[a-z@.\\x00]{0,40}".prop_map(String::into_bytes),
                ],
                second in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let p = provider();
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                rt.block_on(async {
                    let mut m = p.start(&tls_stream(), &request());
                    let _ = crate::sasl2::step_unthrottled(&mut *m, Some(&first)).await;
                    let _ = crate::sasl2::step_unthrottled(&mut *m, Some(&second)).await;
                    let _ = crate::sasl2::step_unthrottled(&mut *m, None).await;
                });
            }
        }
    }
}
