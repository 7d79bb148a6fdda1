//! XEP-0494 Client Access Management (`urn:xmpp:cam:0`): the account owner lists what has
//! access to the account and revokes one entry.
//!
//! Host-agnostic and sans-IO towards the network: [`ClientAccess::handle`] takes the request
//! `<iq>` and the authenticated account, and returns the answer `<iq>`. The FAST clients come
//! from the token store ([`FastTokens::clients`]); the live sessions come from the host through
//! the small [`LiveSessions`] trait, which also closes one. Elements are xmpp-parsers' `cam`
//! types (0.23), so the wire format is the XEP's, not a look-alike.
//!
//! What is listed (XEP-0494 §3.1):
//! - every FAST client with a valid token as `type='access'`, id `fast/<ref>`, `<auth><fast/>`,
//!   `<software>`/`<device>` from its SASL2 `<user-agent>` (S-12: shown to its owner only),
//!   `<first-seen>` = first token, `<last-seen>` = last FAST login (coarse) or now when
//!   connected; `connected='true'` when a live session logged in with that client;
//! - every live session that is not one of those FAST clients as `type='session'`, id
//!   `session/<host id>`, `connected='true'`, `<auth>` saying how it logged in.
//!
//! Ids are opaque and never reveal the user-agent id or its hash (`fast/` + a keyed hash
//! under the pepper, [`FastTokens::client_ref`]; `session/` + whatever unguessable id the host
//! gives). Every lookup is scoped to the authenticated account, so another account's id is
//! simply unknown (`item-not-found`, CAM-4).

use std::fmt;
use std::sync::Arc;

use jid::{FullJid, Jid};
use minidom::Element;
use xmpp_parsers::cam::{self, Auth, Client, Clients, Permission, Revoke, Status, Type, UserAgent};
use xmpp_parsers::date::DateTime;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use super::hooks::RevokedBy;
use super::tokens::FastTokens;
use crate::store::ClientKey;

/// The XEP-0494 namespace.
pub const NS_CAM: &str = xmpp_parsers::ns::CAM;

/// Id prefix of FAST clients in the list.
const FAST_PREFIX: &str = "fast/";
/// Id prefix of live sessions in the list.
const SESSION_PREFIX: &str = "session/";

/// One live session of an account, as the host knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    /// Opaque, unguessable id, stable for the session's life (not its resource: resources are
    /// visible to contacts, and a sequential number would count the server's sessions).
    pub id: String,
    /// The bound resource.
    pub resource: String,
    /// `<software>` the client sent in its SASL2 `<user-agent>`, if any.
    pub software: Option<String>,
    /// `<device>` the client sent, if any.
    pub device: Option<String>,
    /// When the session authenticated (unix ms).
    pub connected_since: u64,
    /// The FAST client key of the user-agent id the session sent, if it sent one: how a FAST
    /// client's revocation finds its live session.
    pub client: Option<ClientKey>,
    /// True if the session authenticated with a password mechanism (not a FAST token).
    pub password: bool,
}

/// The host's live sessions, as XEP-0494 needs them.
///
/// # Contract
/// - `sessions(account)` returns only sessions of `account`, and `close(account, id)` closes
///   only a session of `account`: the handler relies on this to keep one account from seeing
///   or ending another's sessions.
/// - `close` ends the stream promptly (the host's choice of stream error or clean close) and
///   returns without waiting for it; it is called after the answer to the request is queued,
///   so a session that revokes itself still receives its answer first.
/// - Both are called on the stanza path of an authenticated session: cheap, non-blocking.
pub trait LiveSessions: fmt::Debug + Send + Sync {
    /// The live sessions of `account`.
    fn sessions(&self, account: &str) -> Vec<LiveSession>;
    /// Closes session `id` of `account`; false if there is none.
    fn close(&self, account: &str, id: &str) -> bool;
}

/// A host without session tracking: lists FAST clients only.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSessions;

impl LiveSessions for NoSessions {
    fn sessions(&self, _account: &str) -> Vec<LiveSession> {
        Vec::new()
    }
    fn close(&self, _account: &str, _id: &str) -> bool {
        false
    }
}

/// The XEP-0494 handler.
#[derive(Debug, Clone)]
pub struct ClientAccess {
    tokens: Option<Arc<FastTokens>>,
    sessions: Arc<dyn LiveSessions>,
}

/// What a request asks for.
enum Request {
    List,
    Revoke(String),
    /// Understood but refused with this error (wrong iq type, malformed payload).
    Refuse(StanzaError),
}

fn error(type_: ErrorType, condition: DefinedCondition, text: &str) -> StanzaError {
    StanzaError::new(type_, condition, "en", text)
}

impl ClientAccess {
    /// A handler over the FAST token authority (`None` when FAST is off: only sessions are
    /// listed) and the host's sessions.
    pub fn new(tokens: Option<Arc<FastTokens>>, sessions: Arc<dyn LiveSessions>) -> Self {
        ClientAccess { tokens, sessions }
    }

    /// True if `iq` is a XEP-0494 request (`<iq type='get'|'set'>` whose payload is in
    /// `urn:xmpp:cam:0`). The host routes such an iq here when it is addressed to the
    /// account itself (no `to`, the bare JID of the sender, or the server's domain).
    pub fn handles(iq: &Element) -> bool {
        iq.name() == "iq"
            && matches!(iq.attr("type"), Some("get" | "set"))
            && iq.children().any(|c| c.has_ns(NS_CAM))
    }

    fn parse(iq: &Element) -> Request {
        let typ = iq.attr("type").unwrap_or("");
        let mut payloads = iq.children();
        let (Some(p), None) = (payloads.next(), payloads.next()) else {
            // RFC 6120 §8.2.3: a get or set has exactly one payload.
            return Request::Refuse(error(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "exactly one payload expected",
            ));
        };
        match (typ, p.name()) {
            ("get", "list") => match cam::List::try_from(p.clone()) {
                Ok(_) => Request::List,
                Err(_) => Request::Refuse(error(
                    ErrorType::Modify,
                    DefinedCondition::BadRequest,
                    "malformed <list/>",
                )),
            },
            ("set", "revoke") => match Revoke::try_from(p.clone()) {
                Ok(r) => Request::Revoke(r.id),
                Err(_) => Request::Refuse(error(
                    ErrorType::Modify,
                    DefinedCondition::BadRequest,
                    "<revoke/> needs an 'id' from the client list",
                )),
            },
            // CAM-5: some clients (slixmpp 1.17's xep_0494) send the revoke as a get. A get
            // must not change state (RFC 6120 §8.2.3: get is a request for information), so
            // nothing is revoked; `modify` + `bad-request` says "fix the request and send it
            // again" (as type 'set'), which a plain `service-unavailable` (what Prosody's
            // unhandled get answers) would not: that reads as "not supported here".
            ("get", "revoke") => Request::Refuse(error(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "a revoke changes state: send it as <iq type='set'> (XEP-0494 §3.2)",
            )),
            ("set", "list") => Request::Refuse(error(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "the client list is read with <iq type='get'> (XEP-0494 §3.1)",
            )),
            _ => Request::Refuse(error(
                ErrorType::Cancel,
                DefinedCondition::FeatureNotImplemented,
                "",
            )),
        }
    }

    /// Answers one XEP-0494 request of `account` (already authenticated; the localpart as the
    /// token store keys it) sent by the session `requester`. The answer goes to `requester`,
    /// from where the request was addressed. Every revocation writes its audit line with
    /// [`RevokedBy::User`] and the requester's full JID.
    pub async fn handle(&self, iq: &Element, account: &str, requester: &FullJid) -> Element {
        let id = iq.attr("id").unwrap_or("").to_owned();
        let from = iq.attr("to").and_then(|t| Jid::new(t).ok());
        let to = Some(Jid::from(requester.clone()));
        let outcome = match Self::parse(iq) {
            Request::List => self.list(account).await.map(|c| Some(Element::from(c))),
            Request::Revoke(client) => self.revoke(account, &client, requester).await.map(|_| None),
            Request::Refuse(e) => Err(e),
        };
        let reply = match outcome {
            Ok(payload) => Iq::Result {
                from,
                to,
                id,
                payload,
            },
            Err(mut error) => {
                if error.texts.values().all(String::is_empty) {
                    error.texts.clear();
                }
                Iq::Error {
                    from,
                    to,
                    id,
                    payload: None,
                    error,
                }
            }
        };
        Element::from(reply)
    }

    /// The client list of `account` (XEP-0494 §3.1), most recently seen first.
    pub async fn list(&self, account: &str) -> Result<Clients, StanzaError> {
        let sessions = self.sessions.sessions(account);
        let mut clients = Vec::new();
        let mut fast_keys = Vec::new();
        if let Some(tokens) = &self.tokens {
            let now = tokens.now_ms();
            for c in tokens.clients(account).await.map_err(store_error)? {
                if !has_access(&c, now) {
                    continue;
                }
                let live: Vec<&LiveSession> = sessions
                    .iter()
                    .filter(|s| s.client.as_ref() == Some(&c.key))
                    .collect();
                let connected = !live.is_empty();
                let last_seen = if connected { now } else { c.last_used_at };
                clients.push((
                    last_seen,
                    Client {
                        connected,
                        id: format!("{FAST_PREFIX}{}", tokens.client_ref(&c.key)),
                        type_: Type::Access,
                        first_seen: timestamp(c.created_at),
                        last_seen: timestamp(last_seen),
                        user_agent: UserAgent {
                            software: c.software.clone().unwrap_or_default(),
                            uri: None,
                            device: c.device.clone(),
                        },
                        auth: Auth {
                            // A live session of this client that logged in with a password
                            // says so; the token itself is `<fast/>`.
                            password: live.iter().any(|s| s.password),
                            grant: false,
                            fast: true,
                            other: Vec::new(),
                        },
                        permission: Permission {
                            status: Status::Unrestricted,
                        },
                    },
                ));
                fast_keys.push(c.key);
            }
        }
        let now_ms = self.tokens.as_ref().map(|t| t.now_ms());
        for s in &sessions {
            if s.client.as_ref().is_some_and(|k| fast_keys.contains(k)) {
                continue; // listed as its FAST client, connected='true'
            }
            let now = now_ms.unwrap_or(s.connected_since);
            clients.push((
                now,
                Client {
                    connected: true,
                    id: format!("{SESSION_PREFIX}{}", s.id),
                    type_: Type::Session,
                    first_seen: timestamp(s.connected_since),
                    last_seen: timestamp(now),
                    user_agent: UserAgent {
                        software: s.software.clone().unwrap_or_default(),
                        uri: None,
                        device: s.device.clone(),
                    },
                    auth: Auth {
                        password: s.password,
                        grant: false,
                        fast: !s.password,
                        other: Vec::new(),
                    },
                    permission: Permission {
                        status: Status::Unrestricted,
                    },
                },
            ));
        }
        clients.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        Ok(Clients {
            clients: clients.into_iter().map(|(_, c)| c).collect(),
        })
    }

    /// Revokes one entry of `account`'s list (XEP-0494 §3.2).
    ///
    /// - `fast/…`: the client's tokens are revoked (its next FAST login answers
    ///   `credentials-expired`, F-rule of `revoke_client`) and its live sessions are closed.
    ///   Answered with an empty result: what the server granted is gone.
    /// - `session/…`: the session is closed. If it logged in with a password, the XEP's
    ///   `service-unavailable` + `<password-reset-required/>` follows (CAM-3): closing a stream
    ///   does not take the password away, only a password change does.
    /// - anything else, or an id of another account: `item-not-found` (CAM-4).
    pub async fn revoke(
        &self,
        account: &str,
        id: &str,
        requester: &FullJid,
    ) -> Result<(), StanzaError> {
        let by = RevokedBy::User {
            jid: requester.to_string(),
        };
        let not_found = || {
            error(
                ErrorType::Cancel,
                DefinedCondition::ItemNotFound,
                "no such client",
            )
        };
        if let Some(r) = id.strip_prefix(FAST_PREFIX) {
            let tokens = self.tokens.as_ref().ok_or_else(not_found)?;
            let now = tokens.now_ms();
            let clients = tokens.clients(account).await.map_err(store_error)?;
            let Some(c) = clients
                .into_iter()
                .find(|c| has_access(c, now) && tokens.client_ref(&c.key) == r)
            else {
                return Err(not_found());
            };
            if !tokens
                .revoke_client(&c.key, &by)
                .await
                .map_err(store_error)?
            {
                return Err(not_found()); // removed meanwhile (sweep, cap)
            }
            for s in self.sessions.sessions(account) {
                if s.client.as_ref() == Some(&c.key) {
                    self.sessions.close(account, &s.id);
                }
            }
            return Ok(());
        }
        if let Some(sid) = id.strip_prefix(SESSION_PREFIX) {
            let Some(s) = self
                .sessions
                .sessions(account)
                .into_iter()
                .find(|s| s.id == sid)
            else {
                return Err(not_found());
            };
            if !self.sessions.close(account, &s.id) {
                return Err(not_found());
            }
            tracing::info!(
                target: "sasl2_fast::audit",
                account,
                client = s.client.as_ref().map(ClientKey::client_label),
                resource = %s.resource,
                by = by.kind(),
                jid = by.jid(),
                "session closed"
            );
            if s.password {
                let mut e = error(
                    ErrorType::Cancel,
                    DefinedCondition::ServiceUnavailable,
                    "session closed; it logged in with the password, which only a password \
                     change revokes",
                );
                e.other = Some(Element::from(cam::PasswordResetRequiredError));
                return Err(e);
            }
            return Ok(());
        }
        Err(not_found())
    }
}

/// True if the client can still log in with a token: not revoked, some token not expired.
fn has_access(c: &super::tokens::ClientInfo, now: u64) -> bool {
    !c.revoked
        && [c.current.as_ref(), c.new.as_ref()]
            .into_iter()
            .flatten()
            .any(|(_, expires_at)| *expires_at > now)
}

fn store_error(e: crate::store::StoreError) -> StanzaError {
    tracing::warn!(error = %e, "client list: token store failed");
    error(
        ErrorType::Wait,
        DefinedCondition::InternalServerError,
        "the token store is unavailable; try again later",
    )
}

/// Unix ms as an XEP-0082 timestamp, whole seconds, UTC. `None` for 0 (unknown).
fn timestamp(ms: u64) -> Option<DateTime> {
    if ms == 0 {
        return None;
    }
    let secs = i64::try_from(ms / 1000).ok()?;
    chrono::DateTime::from_timestamp(secs, 0).map(|t| DateTime(t.fixed_offset()))
}
