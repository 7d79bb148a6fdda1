//! Sessions of this host and delivery between them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use minidom::Element;
use sasl2_fast::fast::cam::{LiveSession, LiveSessions};
use sasl2_fast::store::ClientKey;
use tokio::sync::mpsc;
use xmpp_parsers::stream_error::DefinedCondition;

/// Stanzas queued per session before further ones are dropped.
pub const QUEUE: usize = 256;

/// What a session task receives from elsewhere.
#[derive(Debug)]
pub enum Routed {
    /// A stanza to write (its `from` is already stamped).
    Stanza(Element),
    /// Close the stream with this error condition.
    Close {
        /// Stream error condition.
        condition: DefinedCondition,
        /// Text.
        text: &'static str,
    },
}

struct Entry {
    id: u64,
    resource: String,
    user_agent_id: Option<String>,
    tx: mpsc::Sender<Routed>,
    /// What XEP-0494 shows the account owner (`sasl2_fast::fast::cam`).
    facts: SessionFacts,
    /// The session's XEP-0494 id: random, so it reveals neither the resource nor how many
    /// sessions the server has.
    cam_id: String,
    /// When the session was registered (unix ms).
    since: u64,
}

/// What a session tells its owner's client list (XEP-0494) about itself.
#[derive(Debug, Clone, Default)]
pub struct SessionFacts {
    /// `<software>` of the SASL2 `<user-agent>`.
    pub software: Option<String>,
    /// `<device>` of the SASL2 `<user-agent>`.
    pub device: Option<String>,
    /// True if the session logged in with a password mechanism.
    pub password: bool,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// All bound sessions, by account.
#[derive(Default)]
pub struct Router {
    sessions: Mutex<HashMap<String, Vec<Entry>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("sessions", &self.session_count())
            .finish()
    }
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// True if `account` has a session bound to `resource`.
    pub fn has_resource(&self, account: &str, resource: &str) -> bool {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(account)
            .is_some_and(|v| v.iter().any(|e| e.resource == resource))
    }

    /// Registers a bound session and returns its id. An older session with the same resource,
    /// or (B-8) of the same client (user-agent id), is told to close with `conflict`.
    pub fn register(
        &self,
        account: &str,
        resource: &str,
        user_agent_id: Option<&str>,
        tx: mpsc::Sender<Routed>,
    ) -> u64 {
        self.register_session(
            account,
            resource,
            user_agent_id,
            SessionFacts::default(),
            tx,
        )
    }

    /// [`Router::register`] with what the owner's client list shows about the session.
    pub fn register_session(
        &self,
        account: &str,
        resource: &str,
        user_agent_id: Option<&str>,
        facts: SessionFacts,
        tx: mpsc::Sender<Routed>,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(account.to_owned()).or_default();
        list.retain(|e| {
            let same_client =
                user_agent_id.is_some() && e.user_agent_id.as_deref() == user_agent_id;
            if e.resource == resource || same_client {
                let _ = e.tx.try_send(Routed::Close {
                    condition: DefinedCondition::Conflict,
                    text: "replaced by a new session",
                });
                false
            } else {
                true
            }
        });
        list.push(Entry {
            id,
            resource: resource.to_owned(),
            user_agent_id: user_agent_id.map(str::to_owned),
            tx,
            facts,
            cam_id: sasl2_fast::xmpp::random_hex(12),
            since: unix_ms(),
        });
        id
    }

    /// Removes a session (no-op if it was already replaced), and with it everything its owner's
    /// client list showed of it (CAM-6).
    pub fn unregister(&self, account: &str, id: u64) {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = map.get_mut(account) {
            list.retain(|e| e.id != id);
            if list.is_empty() {
                map.remove(account);
            }
        }
    }

    /// Delivers to one full JID's session. False if there is no such session.
    pub fn send_full(&self, account: &str, resource: &str, el: Element) -> bool {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match map
            .get(account)
            .and_then(|v| v.iter().find(|e| e.resource == resource))
        {
            Some(e) => {
                if e.tx.try_send(Routed::Stanza(el)).is_err() {
                    tracing::debug!("session queue full, stanza dropped");
                }
                true
            }
            None => false,
        }
    }

    /// Delivers to every session of an account except `except`; returns how many got it.
    pub fn send_bare(&self, account: &str, el: &Element, except: Option<u64>) -> usize {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for e in map.get(account).into_iter().flatten() {
            if Some(e.id) == except {
                continue;
            }
            if e.tx.try_send(Routed::Stanza(el.clone())).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Tells the sessions of `account` whose user-agent id `matches` to close with
    /// `condition`; returns the resources of those told. They unregister themselves as they
    /// close. (`host ctl`: the admin's revocations; XEP-0494 closes by id, below.)
    pub fn close_matching(
        &self,
        account: &str,
        matches: impl Fn(Option<&str>) -> bool,
        condition: DefinedCondition,
        text: &'static str,
    ) -> Vec<String> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(account)
            .into_iter()
            .flatten()
            .filter(|e| matches(e.user_agent_id.as_deref()))
            .filter(|e| {
                // A full queue (a session busy writing) must not lose the `Close`: send it
                // from a task, since the lock cannot be held across an await.
                match e.tx.try_send(Routed::Close {
                    condition: condition.clone(),
                    text,
                }) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(msg)) => {
                        let tx = e.tx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(msg).await;
                        });
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            })
            .map(|e| e.resource.clone())
            .collect()
    }

    /// Number of bound sessions.
    pub fn session_count(&self) -> usize {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(Vec::len).sum()
    }

    /// Resources bound for an account.
    pub fn resources(&self, account: &str) -> Vec<String> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(account)
            .map(|v| v.iter().map(|e| e.resource.clone()).collect())
            .unwrap_or_default()
    }
}

/// The router is the host's [`LiveSessions`] for XEP-0494: it lists an account's bound
/// sessions and closes one. A closed session ends with the stream error `not-authorized`
/// ("access revoked"): a clean `</stream:stream>` would read as an ordinary disconnect and
/// invite an immediate reconnect, and `not-authorized` is what clients treat as "credentials
/// no longer accepted" (a FAST client then finds its token answered `credentials-expired`).
impl LiveSessions for Router {
    fn sessions(&self, account: &str) -> Vec<LiveSession> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(account)
            .into_iter()
            .flatten()
            .map(|e| LiveSession {
                id: e.cam_id.clone(),
                resource: e.resource.clone(),
                software: e.facts.software.clone(),
                device: e.facts.device.clone(),
                connected_since: e.since,
                client: e
                    .user_agent_id
                    .as_deref()
                    .and_then(|ua| ClientKey::new(account, ua).ok()),
                password: e.facts.password,
            })
            .collect()
    }

    fn close(&self, account: &str, id: &str) -> bool {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = map.get_mut(account) else {
            return false;
        };
        // Out of the list now, not when its task gets to the close: a client that lists again
        // right after the revoke's result must not still see the revoked session (found by
        // slixmpp in tests/interop_slixmpp.rs). Its task's `unregister` is then a no-op.
        let Some(at) = list.iter().position(|e| e.cam_id == id) else {
            return false;
        };
        let e = list.remove(at);
        if list.is_empty() {
            map.remove(account);
        }
        // `send`, not `try_send`, semantics matter here: a full queue must not keep a
        // revoked session open, so a full queue is answered by a spawned send.
        if let Err(mpsc::error::TrySendError::Full(msg)) = e.tx.try_send(Routed::Close {
            condition: DefinedCondition::NotAuthorized,
            text: "access revoked by the account owner",
        }) {
            tokio::spawn(async move {
                let _ = e.tx.send(msg).await;
            });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CAM-6: what a session tells its owner's list (its labels, how it logged in) lives in
    /// the router's entry for it and nowhere else: listed while the session is bound, gone
    /// with every trace of it once the session unregisters.
    #[test]
    fn session_facts_live_only_while_the_session_is_bound() {
        let r = Router::new();
        let (tx, _rx) = mpsc::channel(QUEUE);
        let facts = SessionFacts {
            software: Some("Phone App".into()),
            device: Some("Alice's phone".into()),
            password: true,
        };
        let id = r.register_session("alice", "phone", Some("ua-1"), facts, tx);
        let listed = r.sessions("alice");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].software.as_deref(), Some("Phone App"));
        assert_eq!(listed[0].device.as_deref(), Some("Alice's phone"));
        assert!(listed[0].password);
        r.unregister("alice", id);
        assert!(r.sessions("alice").is_empty());
        assert_eq!(r.session_count(), 0);
        let map = r.sessions.lock().unwrap();
        assert!(map.is_empty(), "no entry is kept for the account");
    }

    /// XEP-0494 (CAM-2): a closed session leaves the owner's list at once, before its task
    /// has read the close, and the task's later `unregister` changes nothing else.
    #[tokio::test]
    async fn a_closed_session_is_not_listed_any_more() {
        let r = Router::new();
        let (tx1, mut rx1) = mpsc::channel(QUEUE);
        let (tx2, _rx2) = mpsc::channel(QUEUE);
        let id1 = r.register("alice", "phone", Some("ua-1"), tx1);
        r.register("alice", "laptop", None, tx2);
        let cam_id = r
            .sessions("alice")
            .into_iter()
            .find(|s| s.resource == "phone")
            .expect("listed")
            .id;
        assert!(r.close("alice", &cam_id));
        let left: Vec<_> = r
            .sessions("alice")
            .into_iter()
            .map(|s| s.resource)
            .collect();
        assert_eq!(left, ["laptop"]);
        assert!(!r.has_resource("alice", "phone"));
        assert!(matches!(
            rx1.recv().await,
            Some(Routed::Close {
                condition: DefinedCondition::NotAuthorized,
                ..
            })
        ));
        r.unregister("alice", id1);
        assert_eq!(r.resources("alice"), ["laptop"]);
        assert!(!r.close("alice", &cam_id), "already closed");
        assert!(!r.close("bob", &cam_id), "not bob's");
    }
}
