//! The token lifecycle (protocol.md §8): verification, promotion, rotation, invalidation,
//! revocation, expiry and the per-account cap, on top of any [`TokenStore`].
//!
//! Every change to a client's record is one compare-and-swap on the version that was read, so
//! two concurrent logins with the same token see either the record before or after the other's
//! change, never half of it; the loser re-reads and decides again.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};
use zeroize::Zeroizing;

use super::clock::{Clock, SystemClock};
use super::config::FastConfig;
use super::hooks::{
    FastObserver, RejectEvent, RejectReason, RevokeEvent, RevokeScope, RevokedBy, TokenEvent,
};
use super::ht::HtMechanism;
use super::token::{FastToken, Pepper, new_nonce};
use crate::mutation::planted;
use crate::sasl2::accounts::{AccountStore, RevocationCutoff};
use crate::store::{
    CasOutcome, ClientKey, ClientRecord, Durability, MAX_LABEL_BYTES, RevocationScope, StoreError,
    TokenSlot, TokenStore, Versioned,
};
use crate::xmpp::truncate_utf8;

/// How often a compare-and-swap is retried before giving up with `temporary-auth-failure`.
pub(super) const MAX_CAS_RETRIES: usize = 32;

/// Why a token was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// The client sent `<request-token>`.
    Requested,
    /// Server-initiated rotation (F-16).
    Rotated,
}

/// What a token is issued for: the mechanism it is bound to (F-15), why, and the client's
/// labels for its owner's device list (S-12).
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The HT mechanism the token will be bound to.
    pub mechanism: HtMechanism,
    /// Why it is issued.
    pub kind: IssueKind,
    /// `<software>` of the client.
    pub software: Option<String>,
    /// `<device>` of the client.
    pub device: Option<String>,
}

impl TokenRequest {
    /// A request for `mechanism` without labels.
    pub fn new(mechanism: HtMechanism, kind: IssueKind) -> Self {
        TokenRequest {
            mechanism,
            kind,
            software: None,
            device: None,
        }
    }

    /// Writes the labels (bounded) into a record; absent labels keep the stored ones.
    pub(super) fn label(&self, rec: &mut ClientRecord) {
        if self.software.is_some() {
            rec.software = bounded_label(self.software.as_deref());
        }
        if self.device.is_some() {
            rec.device = bounded_label(self.device.as_deref());
        }
    }
}

/// A freshly issued token, already durable in the store.
#[derive(Debug)]
pub struct IssuedToken {
    /// The secret.
    pub token: FastToken,
    /// Its expiry (unix ms).
    pub expires_at: u64,
}

/// One client of an account, for the owner's device list or an admin (serialized as an admin
/// tool shows it: the key's account and client hash flattened beside the rest; no secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientInfo {
    /// The client key (its `Debug` shows only a hash label).
    #[serde(flatten)]
    pub key: ClientKey,
    /// `<software>` as last seen.
    pub software: Option<String>,
    /// `<device>` as last seen.
    pub device: Option<String>,
    /// First token issued (unix ms).
    pub created_at: u64,
    /// Last FAST login, coarse (unix ms).
    pub last_used_at: u64,
    /// Mechanism and expiry of the current token.
    pub current: Option<(String, u64)>,
    /// Mechanism and expiry of an unused new token.
    pub new: Option<(String, u64)>,
    /// True if the client's tokens were revoked.
    pub revoked: bool,
}

/// The token authority: owns the store, the pepper, the policy and the observers.
pub struct FastTokens {
    store: Arc<dyn TokenStore>,
    pepper: Pepper,
    config: FastConfig,
    observers: Vec<Arc<dyn FastObserver>>,
    clock: Arc<dyn Clock>,
    accounts: Option<Arc<dyn AccountStore>>,
}

impl fmt::Debug for FastTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FastTokens")
            .field("store", &self.store)
            .field("config", &self.config)
            .field("observers", &self.observers.len())
            .finish_non_exhaustive()
    }
}

pub(super) fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// The audit line of a revocation (issue 12 item 5): one `info` line with the account, the
/// client label (`*` for all) and the actor, under its own target so operators can route it
/// (`RUST_LOG=sasl2_fast::audit=info`). Never a token, nonce or user-agent id.
fn audit(account: &str, client: &str, by: &RevokedBy) {
    info!(
        target: "sasl2_fast::audit",
        account,
        client,
        by = by.kind(),
        jid = by.jid(),
        "FAST access revoked"
    );
}

/// Whether the stored `new` slot was written by a login decided after the one that is about to
/// overwrite it with a token of its own: a login decided at `decided_at` (the read that
/// decided a FAST login, `Verified::verified_at`; the start of `issue` for a password login),
/// whose deciding read found the slot with nonce `seen` in `new`. Such a `new` is left alone and the late login
/// issues nothing (docs/model.md, "Findings", 2): a client that gave up on a slow login and
/// logged in again elsewhere holds that newer token, and F-19 would otherwise leave it with a
/// dead one. Skipping only costs a token: the late login's client keeps the one it used (or,
/// after a password login, logs in with its password again).
///
/// Equal stamps are common (milliseconds here, ticks in the model), so the tie needs an order
/// that the stamp does not give: a `new` stamped in the same millisecond is older than this
/// login if its deciding read saw it (its writer's read and write came first), and newer
/// otherwise (written after this login's read). Overwriting only what the read saw keeps F-19
/// (a second login in the same millisecond still replaces an unused token); skipping every
/// tie would close the gap too but leave such a login without its token. Not seen by this: a
/// login stamped in the same millisecond whose write lands between this login's clock read
/// and its store read (docs/model.md explains why that cannot cost a client its token in
/// practice).
pub(super) fn decided_later(new: &TokenSlot, decided_at: u64, seen: Option<&[u8; 32]>) -> bool {
    new.issued_at > decided_at || (new.issued_at == decided_at && seen != Some(&new.nonce))
}

pub(super) fn bounded_label(s: Option<&str>) -> Option<String> {
    s.map(|s| truncate_utf8(s, MAX_LABEL_BYTES).to_owned())
}

impl FastTokens {
    /// A token authority over `store` with the given pepper and policy.
    pub fn new(store: Arc<dyn TokenStore>, pepper: Pepper, config: FastConfig) -> Self {
        FastTokens {
            store,
            pepper,
            config,
            observers: Vec::new(),
            clock: Arc::new(SystemClock),
            accounts: None,
        }
    }

    /// Asks `accounts` on every FAST login whether the account still exists and since when its
    /// tokens are valid ([`AccountStore::revocation_cutoff`]): the account side's record of
    /// password changes and deletions, which a token store restored from an older backup
    /// cannot undo. Without it the token store alone decides.
    pub fn with_accounts(mut self, accounts: Arc<dyn AccountStore>) -> Self {
        self.accounts = Some(accounts);
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds an observer.
    pub fn with_observer(mut self, observer: Arc<dyn FastObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// The policy.
    pub fn config(&self) -> &FastConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    pub(super) fn observers(&self) -> &[Arc<dyn FastObserver>] {
        &self.observers
    }

    /// The account side's cutoff for `account` in unix ms (`u64::MAX` when the account does not
    /// exist, 0 without an account store or when it keeps none): what was issued before it is
    /// void, whatever the token store says.
    pub(super) async fn account_cutoff(
        &self,
        account: &str,
    ) -> Result<u64, crate::sasl2::accounts::AccountError> {
        let Some(accounts) = &self.accounts else {
            return Ok(0);
        };
        Ok(match accounts.revocation_cutoff(account).await? {
            RevocationCutoff::Before(t) => t,
            RevocationCutoff::NoAccount => u64::MAX,
            RevocationCutoff::Untracked => 0,
        })
    }

    /// Current time in unix ms.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(super) fn event(&self, key: &ClientKey, slot: &TokenSlot, at: u64) -> TokenEvent {
        TokenEvent {
            account: key.account().to_owned(),
            client: key.client_label(),
            mechanism: slot.mechanism.clone(),
            issued_at: slot.issued_at,
            expires_at: slot.expires_at,
            at,
        }
    }

    pub(super) fn reject(
        &self,
        key: Option<&ClientKey>,
        account: Option<&str>,
        mechanism: &str,
        reason: RejectReason,
    ) -> RejectReason {
        let e = RejectEvent {
            account: key
                .map(|k| k.account().to_owned())
                .or_else(|| account.map(str::to_owned)),
            client: key.map(ClientKey::client_label),
            mechanism: mechanism.to_owned(),
            reason,
            at: self.clock.now_ms(),
        };
        for o in &self.observers {
            o.rejected(&e);
        }
        reason
    }

    /// Reports a rejection that happened before verification (malformed request).
    pub fn report_rejection(&self, account: Option<&str>, mechanism: &str, reason: RejectReason) {
        self.reject(None, account, mechanism, reason);
    }

    /// The token a slot stands for.
    pub(super) fn token_for(&self, key: &ClientKey, slot: &TokenSlot) -> FastToken {
        self.pepper.derive_token(&slot.nonce, key)
    }

    /// A fresh token slot for `mechanism` in a chain that began at `chain` (F-9), living
    /// `token_ttl` (F-27), or `None` when the chain has reached `token_max_chain_age` (H-13)
    /// and no further token may be issued.
    pub(super) fn new_slot(
        &self,
        mechanism: HtMechanism,
        chain: u64,
        now: u64,
    ) -> Option<TokenSlot> {
        let mut expires_at = now.saturating_add(ms(self.config.token_ttl));
        if let Some(max) = self.config.token_max_chain_age {
            expires_at = expires_at.min(chain.saturating_add(ms(max)));
        }
        if expires_at <= now {
            return None;
        }
        Some(TokenSlot {
            nonce: new_nonce(),
            mechanism: mechanism.name().to_owned(),
            issued_at: now,
            expires_at,
            chain_started_at: chain,
            max_count: None,
        })
    }

    /// Issues a token into the client's `new` slot (F-9, F-17, F-19) after a password login,
    /// and makes it durable before returning, so it is on disk before the client can see it.
    /// (A FAST login issues through [`FastTokens::commit`] instead, in the same write as its
    /// own state change.)
    ///
    /// Returns `Ok(None)` when `token_max_chain_age` forbids a token (never for a new chain), or
    /// when the stored `new` was written by a login decided after this one started (a client
    /// that gave up on this login and logged in elsewhere holds it, docs/model.md "Findings",
    /// 2): it is left alone and nothing is written.
    pub async fn issue(
        &self,
        key: &ClientKey,
        request: &TokenRequest,
    ) -> Result<Option<IssuedToken>, StoreError> {
        let now = self.clock.now_ms();
        let Some(slot) = self.new_slot(request.mechanism, now, now) else {
            return Ok(None);
        };
        let mut written = false;
        // The `new` of the first read: with `now`, what this login may overwrite. `now` stands
        // for the time the password was checked, a little earlier (docs/model.md, "What it
        // leaves out": a login decided in between looks older than this one).
        // Zeroizing: a nonce is token material, as in the slot it is copied from.
        let mut seen: Option<Option<Zeroizing<[u8; 32]>>> = None;
        for _ in 0..MAX_CAS_RETRIES {
            let current = self.store.get(key).await?;
            let seen = seen.get_or_insert_with(|| {
                current
                    .as_ref()
                    .and_then(|v| v.value.new.as_ref().map(|n| Zeroizing::new(n.nonce)))
            });
            if let Some(stored) = current.as_ref().and_then(|v| v.value.new.as_ref())
                && decided_later(stored, now, seen.as_deref())
                && !planted("overwrite-newer-token")
            {
                debug!("no FAST token: a login decided later wrote a newer one");
                return Ok(None);
            }
            let mut rec = match &current {
                Some(v) => v.value.clone(),
                None => {
                    self.make_room(key.account()).await?;
                    ClientRecord {
                        created_at: now,
                        ..ClientRecord::default()
                    }
                }
            };
            // F-29: a new token goes to `new`. F-19: an unused `new` is simply overwritten.
            // `current` is untouched (F-17).
            rec.new = Some(slot.clone());
            rec.last_used_at = now;
            request.label(&mut rec);
            match self
                .store
                .compare_and_swap(
                    key,
                    current.as_ref().map(|v| v.version),
                    Some(rec),
                    Durability::Durable,
                )
                .await?
            {
                CasOutcome::Written(_) => {
                    written = true;
                    break;
                }
                CasOutcome::Conflict => continue,
            }
        }
        if !written {
            return Err(StoreError::Contended);
        }
        let ev = self.event(key, &slot, now);
        self.report_issued(request.kind, &ev);
        Ok(Some(IssuedToken {
            token: self.token_for(key, &slot),
            expires_at: slot.expires_at,
        }))
    }

    pub(super) fn report_issued(&self, kind: IssueKind, ev: &TokenEvent) {
        for o in &self.observers {
            match kind {
                IssueKind::Requested => o.issued(ev),
                IssueKind::Rotated => o.rotated(ev),
            }
        }
    }

    /// Keeps an account below `max_clients_per_account` before a new client is added, dropping
    /// the least recently used clients (abandoned installs, xmpp.js' random default ids).
    async fn make_room(&self, account: &str) -> Result<(), StoreError> {
        let cap = self.config.max_clients_per_account;
        let mut clients = self
            .store
            .clients_of(account, cap.saturating_add(64))
            .await?;
        if clients.len() < cap {
            return Ok(());
        }
        clients.sort_by_key(|(_, v)| v.value.last_used_at);
        let excess = clients.len() + 1 - cap;
        for (key, v) in clients.into_iter().take(excess) {
            // A conflict means the client was just used: leave it, the cap is approximate
            // under races rather than dropping an active client.
            if let CasOutcome::Written(_) = self
                .store
                .compare_and_swap(&key, Some(v.version), None, Durability::Lazy)
                .await?
            {
                audit(account, &key.client_label(), &RevokedBy::CapEviction);
            }
        }
        Ok(())
    }

    /// Revokes every token of one client: later attempts get `credentials-expired`. `by` is
    /// the actor of the audit line. False if the client has no record.
    pub async fn revoke_client(&self, key: &ClientKey, by: &RevokedBy) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        for _ in 0..MAX_CAS_RETRIES {
            let Some(v) = self.store.get(key).await? else {
                return Ok(false);
            };
            let mut rec = v.value.clone();
            rec.revoked_before = rec.revoked_before.max(now.saturating_add(1));
            match self
                .store
                .compare_and_swap(key, Some(v.version), Some(rec), Durability::Durable)
                .await?
            {
                CasOutcome::Written(_) => {
                    let e = RevokeEvent {
                        scope: RevokeScope::Client {
                            account: key.account().to_owned(),
                            client: key.client_label(),
                        },
                        before: now.saturating_add(1),
                        by: by.clone(),
                    };
                    audit(key.account(), &key.client_label(), by);
                    for o in &self.observers {
                        o.revoked(&e);
                    }
                    return Ok(true);
                }
                CasOutcome::Conflict => continue,
            }
        }
        Err(StoreError::Contended)
    }

    /// Revokes every token of an account issued until now: what a password change calls.
    /// Tokens issued afterwards (the next password login) are unaffected.
    /// `by` is the actor of the audit line ([`RevokedBy::PasswordChange`] for a password change).
    pub async fn revoke_account(&self, account: &str, by: &RevokedBy) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        // +1: a token issued in the same millisecond as the change is revoked too; the next
        // login is necessarily later.
        let before = now.saturating_add(1);
        self.store
            .raise_revocation_cutoff(RevocationScope::Account(account.to_owned()), before)
            .await?;
        let e = RevokeEvent {
            scope: RevokeScope::Account(account.to_owned()),
            before,
            by: by.clone(),
        };
        audit(account, "*", by);
        for o in &self.observers {
            o.revoked(&e);
        }
        Ok(())
    }

    /// Revokes every token of every account issued before `before_ms`.
    pub async fn revoke_all_issued_before(
        &self,
        before_ms: u64,
        by: &RevokedBy,
    ) -> Result<(), StoreError> {
        self.store
            .raise_revocation_cutoff(RevocationScope::All, before_ms)
            .await?;
        let e = RevokeEvent {
            scope: RevokeScope::All,
            before: before_ms,
            by: by.clone(),
        };
        audit("*", "*", by);
        for o in &self.observers {
            o.revoked(&e);
        }
        Ok(())
    }

    /// The XEP-0494 id of a client (without the `fast/` prefix the handler adds): a keyed hash
    /// of the client key under the pepper, so it is stable while the pepper is (and tokens
    /// die with the pepper anyway) but reveals neither the user-agent id nor its plain hash,
    /// which a guessable id could be checked against (S-12).
    pub fn client_ref(&self, key: &ClientKey) -> String {
        self.pepper.client_ref(key)
    }

    /// Deletes everything stored for an account (account deletion).
    pub async fn remove_account(&self, account: &str) -> Result<usize, StoreError> {
        self.store.remove_account(account).await
    }

    /// The FAST clients of an account.
    pub async fn clients(&self, account: &str) -> Result<Vec<ClientInfo>, StoreError> {
        let cutoff = self.store.revocation_cutoff(account).await?.max(
            self.account_cutoff(account)
                .await
                .map_err(StoreError::backend)?,
        );
        let list = self
            .store
            .clients_of(
                account,
                self.config.max_clients_per_account.saturating_add(64),
            )
            .await?;
        Ok(list
            .into_iter()
            .map(|(key, Versioned { value: r, .. })| {
                let newest = r
                    .new
                    .as_ref()
                    .or(r.current.as_ref())
                    .map_or(0, |s| s.issued_at);
                ClientInfo {
                    revoked: newest < cutoff.max(r.revoked_before),
                    current: r
                        .current
                        .as_ref()
                        .map(|s| (s.mechanism.clone(), s.expires_at)),
                    new: r.new.as_ref().map(|s| (s.mechanism.clone(), s.expires_at)),
                    software: r.software.clone(),
                    device: r.device.clone(),
                    created_at: r.created_at,
                    last_used_at: r.last_used_at,
                    key,
                }
            })
            .collect())
    }

    /// Removes records whose tokens have all expired, with the client's labels (CAM-6: kept
    /// no longer than the tokens). Work is proportional to what expired: the store serves the
    /// candidates from its expiry index.
    pub async fn sweep_expired(&self) -> Result<usize, StoreError> {
        const BATCH: usize = 512;
        let now = self.clock.now_ms();
        let mut removed = 0;
        // Bounded: a record that keeps conflicting is left for the next sweep.
        for _ in 0..10_000 {
            let keys = self.store.expired(now, BATCH).await?;
            let n = keys.len();
            let mut progress = 0;
            for key in keys {
                let Some(v) = self.store.get(&key).await? else {
                    continue;
                };
                if v.value.expires_at().is_some_and(|e| e > now) {
                    continue;
                }
                if let CasOutcome::Written(_) = self
                    .store
                    .compare_and_swap(&key, Some(v.version), None, Durability::Lazy)
                    .await?
                {
                    removed += 1;
                    progress += 1;
                    for slot in [v.value.current.as_ref(), v.value.new.as_ref()]
                        .into_iter()
                        .flatten()
                    {
                        let ev = self.event(&key, slot, now);
                        for o in &self.observers {
                            o.expired(&ev);
                        }
                    }
                }
            }
            if n < BATCH || progress == 0 {
                break;
            }
        }
        if removed > 0 {
            debug!(removed, "expired FAST clients swept");
        }
        Ok(removed)
    }

    /// Runs [`FastTokens::sweep_expired`] every `sweep_interval` until the returned handle is
    /// dropped. Needs a tokio runtime.
    pub fn spawn_sweeper(self: &Arc<Self>) -> SweeperHandle {
        let this = Arc::clone(self);
        let interval = self.config.sweep_interval;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.sweep_expired().await {
                    tracing::warn!(error = %e, "FAST expiry sweep failed");
                }
            }
        });
        SweeperHandle(Some(task))
    }
}

/// Stops the background sweep when dropped; [`SweeperHandle::shutdown`] also waits for it.
#[derive(Debug)]
pub struct SweeperHandle(Option<tokio::task::JoinHandle<()>>);

impl SweeperHandle {
    /// Stops the sweep and waits until its task is gone, and with it the task's reference to
    /// the tokens (and so to the store: a host that returns from shutdown has let go of the
    /// store's file lock).
    pub async fn shutdown(mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            // Resolves once the task's future has been dropped (cancelled) or had ended.
            let _ = task.await;
        }
    }
}

impl Drop for SweeperHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}
