//! SCRAM tests: RFC 5802 / RFC 7677 vectors, the `sasl` crate as an independent client,
//! every failure condition, and properties over arbitrary input.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::*;
use crate::sasl2::accounts::{AccountError, MemoryAccounts};
use crate::sasl2::credentials::{
    SALT_LEN, ScramCredentials, derive_credentials, derive_credentials_with_salt, digest, hmac,
    prepare_password, salted_password,
};
use crate::sasl2::{
    Authenticated, ChannelBindings, MAX_SASL_PAYLOAD, SaslCondition, Step, TlsInfo, TlsVersion,
};

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
        zero_rtt: false,
        early_data: false,
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
        zero_rtt: false,
        early_data: false,
    }
}

fn request(mech: &str) -> AuthenticateRequest {
    AuthenticateRequest::new(mech)
}

const ITER: u32 = 64;

fn accounts() -> Arc<MemoryAccounts> {
    let a = Arc::new(MemoryAccounts::new());
    a.set_password("user", "pencil", ITER);
    a
}

fn provider(hash: ScramHash, plus: bool, a: Arc<MemoryAccounts>) -> ScramProvider {
    ScramProvider::new(hash, plus, a)
        .with_unknown_accounts(UnknownAccounts::default().with_iterations(ITER))
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
    step.failure_condition()
}

fn success(step: Step) -> Authenticated {
    step.authenticated()
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
        let salted = salted_password(self.hash, &prepare_password(&self.password), &salt, iters);
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
    let sf = match crate::sasl2::step_unthrottled(&mut *m, Some(&client.first())).await {
        Step::Challenge(c) => String::from_utf8(c).unwrap(),
        other => return other,
    };
    let fin = client.fin(&sf, None);
    crate::sasl2::step_unthrottled(&mut *m, Some(&fin)).await
}

// --- RFC vectors --------------------------------------------------------------------

/// The provider of the RFC test vectors: `user` with password `pencil`, 4096 iterations and
/// `salt_b64`, and the vector's server nonce part.
fn vector_provider(hash: ScramHash, salt_b64: &str, nonce_suffix: &str) -> ScramProvider {
    let a = Arc::new(MemoryAccounts::new());
    let salt = B64.decode(salt_b64).unwrap();
    a.set_credentials(
        "user",
        hash,
        derive_credentials_with_salt(hash, "pencil", &salt, 4096),
    );
    ScramProvider::new(hash, false, a).dangerous_fixed_nonce_for_tests(nonce_suffix)
}

#[tokio::test]
async fn rfc5802_sha1_vector() {
    let p = vector_provider(ScramHash::Sha1, "QSXCR+Q6sek8bf92", "3rfcNHYJY1ZVvWVs7j");
    let mut m = start(&p, &plain_stream());
    let c = challenge(
        crate::sasl2::step_unthrottled(&mut *m, Some(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"))
            .await,
    );
    assert_eq!(
        c,
        "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    );
    let ok = success(
        crate::sasl2::step_unthrottled(&mut *m, Some(
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
        condition(crate::sasl2::step_unthrottled(&mut *m, Some(b"c=biws")).await),
        SaslCondition::MalformedRequest
    );
}

#[tokio::test]
async fn rfc7677_sha256_vector() {
    let p = vector_provider(
        ScramHash::Sha256,
        "W22ZaJ0SNY7soEsUEjb6gQ==",
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    );
    let mut m = start(&p, &plain_stream());
    let c = challenge(
        crate::sasl2::step_unthrottled(&mut *m, Some(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")).await,
    );
    assert_eq!(
        c,
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let ok = success(
        crate::sasl2::step_unthrottled(&mut *m, Some(
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
    let p = vector_provider(
        ScramHash::Sha256,
        "W22ZaJ0SNY7soEsUEjb6gQ==",
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    );
    let mut m = start(&p, &plain_stream());
    challenge(
        crate::sasl2::step_unthrottled(&mut *m, Some(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")).await,
    );
    // Last proof byte changed.
    let step = crate::sasl2::step_unthrottled(&mut *m, Some(
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
            condition(crate::sasl2::step_unthrottled(&mut *m, Some(bad)).await),
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
            condition(crate::sasl2::step_unthrottled(&mut *m, Some(bad)).await),
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

/// S-29: the answers do not reveal whether an account exists: an unknown user gets a challenge
/// of the same shape as a real one (stable fake salt, same iteration count), then the same
/// `not-authorized` as a wrong password.
#[tokio::test]
async fn unknown_user_gets_normal_challenge_then_not_authorized() {
    let p = provider(ScramHash::Sha256, false, accounts());
    let s = plain_stream();
    let mut real = start(&p, &s);
    let rc =
        challenge(crate::sasl2::step_unthrottled(&mut *real, Some(b"n,,n=user,r=abcdef")).await);
    let mut m = start(&p, &s);
    let fc =
        challenge(crate::sasl2::step_unthrottled(&mut *m, Some(b"n,,n=nobody,r=abcdef")).await);

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
    let fc2 =
        challenge(crate::sasl2::step_unthrottled(&mut *again, Some(b"n,,n=nobody,r=xyz")).await);
    assert_eq!(salt_of(&fc), salt_of(&fc2));
    let mut other = start(&p, &s);
    let oc =
        challenge(crate::sasl2::step_unthrottled(&mut *other, Some(b"n,,n=somebody,r=xyz")).await);
    assert_ne!(salt_of(&fc), salt_of(&oc));

    // Whatever password the client uses, it fails like a wrong password.
    let mut c = Client::new(ScramHash::Sha256, "nobody", "pencil", "n,,", &[]);
    c.client_first_bare = "n=nobody,r=abcdef".into();
    let fin = c.fin(&fc, None);
    assert_eq!(
        failure_text(crate::sasl2::step_unthrottled(&mut *m, Some(&fin)).await),
        (SaslCondition::NotAuthorized, None)
    );
    let mut c = Client::new(ScramHash::Sha256, "user", "wrong", "n,,", &[]);
    c.client_first_bare = "n=user,r=abcdef".into();
    let fin = c.fin(&rc, None);
    assert_eq!(
        failure_text(crate::sasl2::step_unthrottled(&mut *real, Some(&fin)).await),
        (SaslCondition::NotAuthorized, None)
    );
}

/// Issue 11 item 7: fake salts come from a key kept in a file, so an unknown account's salt is
/// the same after a restart (as a real account's is); with a fresh key it would change.
#[tokio::test]
async fn fake_salts_survive_a_restart_with_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scram-fake-key");
    let salt = async |key: crate::sasl2::credentials::FakeKey| {
        let p = provider(ScramHash::Sha256, false, accounts())
            .with_unknown_accounts(UnknownAccounts::new(key, ITER));
        let mut m = start(&p, &plain_stream());
        let c =
            challenge(crate::sasl2::step_unthrottled(&mut *m, Some(b"n,,n=nobody,r=abc")).await);
        c.split(',').nth(1).unwrap().to_owned()
    };
    use crate::sasl2::credentials::FakeKey;
    let first = salt(FakeKey::load_or_create(&path).unwrap()).await;
    // "Restart": the key is read back from the file.
    let again = salt(FakeKey::load_or_create(&path).unwrap()).await;
    assert_eq!(first, again);
    // A different key (what a restart without the file would give) changes the salt.
    let other = salt(FakeKey::from_bytes([0x42; 32])).await;
    assert_ne!(first, other);
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
    assert!(
        matches!(crate::sasl2::step_unthrottled(&mut *m, None).await, Step::Challenge(c) if c.is_empty())
    );
    let mut c = Client::new(ScramHash::Sha256, "user", "pencil", "n,,", &[]);
    let sf = challenge(crate::sasl2::step_unthrottled(&mut *m, Some(&c.first())).await);
    let fin = c.fin(&sf, None);
    success(crate::sasl2::step_unthrottled(&mut *m, Some(&fin)).await);

    let mut m = start(&p, &plain_stream());
    assert!(matches!(
        crate::sasl2::step_unthrottled(&mut *m, None).await,
        Step::Challenge(_)
    ));
    assert_eq!(
        condition(crate::sasl2::step_unthrottled(&mut *m, None).await),
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
    let sf = challenge(crate::sasl2::step_unthrottled(&mut *m, Some(&c.first())).await);
    let fin = c.fin(&sf, Some(b"y,,"));
    assert_eq!(
        condition(crate::sasl2::step_unthrottled(&mut *m, Some(&fin)).await),
        SaslCondition::NotAuthorized
    );

    // c= with trailing cb bytes on a non-PLUS attempt.
    let mut m = start(&p, &s);
    let sf = challenge(crate::sasl2::step_unthrottled(&mut *m, Some(&c.first())).await);
    let fin = c.fin(&sf, Some(b"n,,x"));
    assert_eq!(
        condition(crate::sasl2::step_unthrottled(&mut *m, Some(&fin)).await),
        SaslCondition::NotAuthorized
    );

    // c= that is not base64.
    let mut m = start(&p, &s);
    let sf = challenge(crate::sasl2::step_unthrottled(&mut *m, Some(&c.first())).await);
    let r = sf.split(',').next().unwrap();
    let bad = format!("c=!!!,{r},p={}", B64.encode([0u8; 32]));
    assert_eq!(
        condition(crate::sasl2::step_unthrottled(&mut *m, Some(bad.as_bytes())).await),
        SaslCondition::MalformedRequest
    );
}

#[tokio::test]
async fn nonce_mismatch_rejected() {
    let p = provider(ScramHash::Sha256, false, accounts());
    let mut c = Client::new(ScramHash::Sha256, "user", "pencil", "n,,", &[]);
    let mut m = start(&p, &plain_stream());
    let sf = challenge(crate::sasl2::step_unthrottled(&mut *m, Some(&c.first())).await);
    // A valid proof over the real AuthMessage, but r= is not the nonce the server sent.
    c.nonce_override = Some("clientnonce123".into());
    let fin = c.fin(&sf, None);
    assert_eq!(
        failure_text(crate::sasl2::step_unthrottled(&mut *m, Some(&fin)).await),
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
        assert_eq!(
            condition(crate::sasl2::step_unthrottled(&mut *m, Some(msg)).await),
            cond,
            "{msg:?}"
        );
    }
    let mut m = start(&p, &only_endpoint);
    challenge(
        crate::sasl2::step_unthrottled(&mut *m, Some(b"p=tls-server-end-point,,n=user,r=abc"))
            .await,
    );
    let mut m = start(&p, &only_endpoint);
    assert_eq!(
        condition(crate::sasl2::step_unthrottled(&mut *m, Some(b"p=bad_name,,n=user,r=abc")).await),
        SaslCondition::MalformedRequest
    );
}

#[tokio::test]
async fn non_plus_rejects_p_flag() {
    let p = provider(ScramHash::Sha256, false, accounts());
    let mut m = start(&p, &cb_stream());
    assert_eq!(
        condition(
            crate::sasl2::step_unthrottled(&mut *m, Some(b"p=tls-exporter,,n=user,r=abc")).await
        ),
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

/// S-31: a non-empty authzid is a JID compared after RFC 7622 normalisation and may only name
/// the user. S-10: an authzid that does not match a present stream `from` fails.
#[tokio::test]
async fn authzid_rules() {
    let p = provider(ScramHash::Sha256, false, accounts());
    let run = |gs2: &'static str, from: Option<&'static str>| {
        let p = &p;
        async move {
            let mut s = plain_stream();
            s.from = from.map(|f| jid::BareJid::new(f).unwrap());
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
        condition(crate::sasl2::step_unthrottled(&mut *m, Some(b"n,x=user,n=user,r=abc")).await),
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
            condition(crate::sasl2::step_unthrottled(&mut *m, Some(msg)).await),
            SaslCondition::MalformedRequest,
            "{:?}",
            String::from_utf8_lossy(msg)
        );
        // A failed attempt is over.
        assert_eq!(
            condition(crate::sasl2::step_unthrottled(&mut *m, Some(b"n,,n=user,r=abc")).await),
            SaslCondition::MalformedRequest
        );
    }
    // Optional extensions are ignored.
    let mut m = start(&p, &plain_stream());
    challenge(crate::sasl2::step_unthrottled(&mut *m, Some(b"n,,n=user,r=abc,x=1")).await);
}

#[tokio::test]
async fn malformed_client_final() {
    let p = provider(ScramHash::Sha256, false, accounts());
    let s = plain_stream();
    let mut probe = start(&p, &s);
    let sf = challenge(crate::sasl2::step_unthrottled(&mut *probe, Some(b"n,,n=user,r=abc")).await);
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
        challenge(crate::sasl2::step_unthrottled(&mut *m, Some(b"n,,n=user,r=abc")).await);
        assert_eq!(
            condition(crate::sasl2::step_unthrottled(&mut *m, Some(msg.as_bytes())).await),
            SaslCondition::MalformedRequest,
            "{msg}"
        );
    }
    let mut m = start(&p, &s);
    challenge(crate::sasl2::step_unthrottled(&mut *m, Some(b"n,,n=user,r=abc")).await);
    assert_eq!(
        condition(crate::sasl2::step_unthrottled(&mut *m, None).await),
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
            condition(crate::sasl2::step_unthrottled(&mut *m, Some(b"n,,n=user,r=abc")).await),
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
    let sf = match crate::sasl2::step_unthrottled(&mut *m, Some(&client.initial())).await {
        Step::Challenge(c) => c,
        other => panic!("{other:?}"),
    };
    let fin = client.response(&sf).unwrap();
    let ok = success(crate::sasl2::step_unthrottled(&mut *m, Some(&fin)).await);
    assert_eq!(ok.username, "user");
    client.success(&ok.additional_data.unwrap()).unwrap();

    // And a wrong password with the same client library.
    let mut client =
        Scram::<S>::new("user", "pencil!", sasl::common::ChannelBinding::None).unwrap();
    let p = provider(hash, false, accounts());
    let mut m = start(&p, &cb_stream());
    let sf = challenge(crate::sasl2::step_unthrottled(&mut *m, Some(&client.initial())).await);
    let fin = client.response(sf.as_bytes()).unwrap();
    assert_eq!(
        condition(crate::sasl2::step_unthrottled(&mut *m, Some(&fin)).await),
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
                    let _ = crate::sasl2::step_unthrottled(&mut *m, Some(&first)).await;
                    let _ = crate::sasl2::step_unthrottled(&mut *m, Some(&second)).await;
                    let _ = crate::sasl2::step_unthrottled(&mut *m, Some(&third)).await;
                    let _ = crate::sasl2::step_unthrottled(&mut *m, None).await;

                    // A valid first message followed by arbitrary finals.
                    let mut m = start(&p, &s);
                    let _ = crate::sasl2::step_unthrottled(&mut *m, Some(b"n,,n=user,r=abc")).await;
                    let _ = crate::sasl2::step_unthrottled(&mut *m, Some(&second)).await;
                    let _ = crate::sasl2::step_unthrottled(&mut *m, Some(&third)).await;
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
                let sf = challenge(crate::sasl2::step_unthrottled(&mut *m, Some(&c.first())).await);
                let mut fin = c.fin(&sf, None);
                let i = idx % fin.len();
                prop_assume!(fin[i] != byte);
                fin[i] = byte;
                let step = crate::sasl2::step_unthrottled(&mut *m, Some(&fin)).await;
                prop_assert!(matches!(step, Step::Failure(_)), "mutated final accepted");
                Ok(())
            })?;
        }
    }
}
