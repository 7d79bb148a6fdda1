//! One SCRAM exchange: server-first, then the proof check (RFC 5802 §5, §9).

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::super::accounts::{AccountStore, normalize_username};
use super::super::authzid::check_authzid;
use super::super::credentials::{
    ScramCredentials, ScramHash, UnknownAccounts, credentials_usable, digest, hash_len, hmac,
};
use super::super::{
    Authenticated, ChannelBindingType, CredentialCheck, Failure, Mechanism, SaslCondition, Step,
    StreamInfo,
};
use super::mechanism_name;
use super::message::{CbFlag, ParseError, message_text, parse_client_final, parse_client_first};

/// Random bytes appended to the client nonce (RFC 5802 §5.1 `r=`).
const SERVER_NONCE_BYTES: usize = 24;

/// Fills `n` random bytes, or `None` if the OS generator failed.
fn random_bytes(n: usize) -> Option<Vec<u8>> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).ok()?;
    Some(v)
}

fn fail(condition: SaslCondition) -> Step {
    Step::Failure(Failure::new(condition))
}

fn fail_text(condition: SaslCondition, text: &str) -> Step {
    Step::Failure(Failure::with_text(condition, text))
}

pub(super) struct Pending {
    username: String,
    known: bool,
    creds: ScramCredentials,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// `gs2-header || cb-data`, what `c=` must decode to.
    expected_cbind: Zeroizing<Vec<u8>>,
}

pub(super) enum State {
    Start {
        sent_empty_challenge: bool,
    },
    WaitFinal(Box<Pending>),
    /// client-final arrived and is well-formed; the proof check waits for the throttle
    /// ([`Step::Verify`]).
    Received(Box<Pending>, Box<ReceivedProof>),
    Done,
}

/// A parsed client-final: the proof and what it signs.
pub(super) struct ReceivedProof {
    proof: Zeroizing<Vec<u8>>,
    auth_message: Vec<u8>,
}

pub(super) struct ScramMechanism {
    pub(super) hash: ScramHash,
    pub(super) plus: bool,
    /// Non-PLUS attempt on a stream where the server offers `-PLUS` (downgrade check).
    pub(super) plus_offered_here: bool,
    pub(super) unknown: UnknownAccounts,
    pub(super) fixed_nonce_suffix: Option<String>,
    pub(super) accounts: Arc<dyn AccountStore>,
    pub(super) stream: StreamInfo,
    pub(super) state: State,
}

impl ScramMechanism {
    fn name(&self) -> &'static str {
        mechanism_name(self.hash, self.plus)
    }

    async fn client_first(&mut self, input: &[u8]) -> Result<Pending, Step> {
        use SaslCondition::*;
        let text = message_text(input).ok_or_else(|| fail(MalformedRequest))?;
        let cf = parse_client_first(text).map_err(unparsable)?;

        // Channel binding (RFC 5802 §6). R-6: a type this stream cannot produce (tls-unique:
        // rustls has no Finished message) fails, never succeeds unbound.
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
                self.unknown
                    .credentials(self.hash, &username)
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

    /// Parses client-final and checks what is not a credential (channel binding, nonce).
    fn client_final(&self, p: &Pending, input: &[u8]) -> Result<ReceivedProof, Step> {
        use SaslCondition::*;
        let Some(text) = message_text(input) else {
            return Err(fail(MalformedRequest));
        };
        let cf = parse_client_final(text).map_err(unparsable)?;
        let (Ok(cbind), Ok(proof)) = (B64.decode(cf.cbind), B64.decode(cf.proof)) else {
            return Err(fail(MalformedRequest));
        };
        let proof = Zeroizing::new(proof);
        if proof.len() != hash_len(self.hash) {
            return Err(fail(MalformedRequest));
        }
        let cb_ok = cbind.len() == p.expected_cbind.len()
            && bool::from(cbind.as_slice().ct_eq(p.expected_cbind.as_slice()));
        if !cb_ok {
            return Err(fail_text(NotAuthorized, "channel binding mismatch"));
        }
        if cf.nonce != p.nonce {
            return Err(fail_text(NotAuthorized, "nonce mismatch"));
        }

        let mut auth_message = Vec::with_capacity(
            p.client_first_bare.len() + p.server_first.len() + cf.without_proof.len() + 2,
        );
        auth_message.extend_from_slice(p.client_first_bare.as_bytes());
        auth_message.push(b',');
        auth_message.extend_from_slice(p.server_first.as_bytes());
        auth_message.push(b',');
        auth_message.extend_from_slice(cf.without_proof.as_bytes());
        Ok(ReceivedProof {
            proof,
            auth_message,
        })
    }

    /// The proof check (RFC 5802 §3): the credential, run only when the throttle admits it.
    fn check_proof(&self, p: &Pending, r: &ReceivedProof) -> Step {
        use SaslCondition::*;
        let (proof, auth_message) = (&r.proof, &r.auth_message);
        let client_signature = hmac(self.hash, &p.creds.stored_key, auth_message);
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
        let server_signature = hmac(self.hash, &p.creds.server_key, auth_message);
        let mut additional = b"v=".to_vec();
        additional.extend_from_slice(B64.encode(server_signature.as_slice()).as_bytes());
        Step::Success(Authenticated::new(p.username.clone(), Some(additional)))
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
            (State::WaitFinal(pending), Some(input)) => match self.client_final(&pending, input) {
                Ok(proof) => {
                    let check = CredentialCheck::new(pending.username.clone());
                    self.state = State::Received(pending, Box::new(proof));
                    Step::Verify(check)
                }
                Err(step) => step,
            },
            _ => fail(SaslCondition::MalformedRequest),
        }
    }

    async fn verify(&mut self) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Received(pending, proof) => self.check_proof(&pending, &proof),
            _ => fail(SaslCondition::MalformedRequest),
        }
    }
}

/// The failure for a message that did not parse: `malformed-request`, naming an unknown
/// mandatory extension (RFC 5802 §7) so the client can tell why.
fn unparsable(e: ParseError) -> Step {
    match e {
        ParseError::MandatoryExtension => fail_text(
            SaslCondition::MalformedRequest,
            "unsupported mandatory extension",
        ),
        ParseError::Malformed => fail(SaslCondition::MalformedRequest),
    }
}
