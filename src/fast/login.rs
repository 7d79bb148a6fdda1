//! A FAST login against the store: one read, one decision, at most one write.
//!
//! [`FastTokens::verify`] runs when the HT mechanism steps: it reads the client's record and
//! the account's revocation cutoff in one round trip
//! ([`TokenStore::get_for_login`](crate::store::TokenStore::get_for_login)), asks the account
//! store for the account side's cutoff (in memory: a password change or deletion recorded with
//! the credentials, which a restored token store cannot undo), checks the MAC and every trust
//! rule, and plans the state change (promotion, invalidation, `count`)
//! without writing. [`FastTokens::commit`] runs from the inline feature once the whole login
//! succeeded, and writes the planned change together with a token to issue (requested or
//! rotated) in a single compare-and-swap: a login that promotes `new` and gets a rotated token
//! costs one durable write, not two. If another login changed the record in between, the
//! commit reads again and decides again, so two concurrent logins with one token still see
//! the record either before or after each other, never half of it.

use std::fmt;

use zeroize::Zeroizing;

use super::hooks::RejectReason;
use super::ht::HtMechanism;
use super::token::FastToken;
use super::tokens::{FastTokens, IssuedToken, MAX_CAS_RETRIES, TokenRequest, decided_later, ms};
use crate::mutation::planted;
use crate::store::{
    CasOutcome, ClientKey, ClientRecord, Durability, LoginView, StoreError, TokenSlot,
};

/// `last_used_at` is only rewritten when it is older than this, so the common FAST login (token
/// in `current`, no count) does not write at all.
const LAST_USED_RESOLUTION_MS: u64 = 5 * 60 * 1000;

/// Which slot of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotName {
    /// The token in use.
    Current,
    /// The token handed out but not yet used.
    New,
}

/// A FAST attempt to verify.
#[derive(Debug)]
#[non_exhaustive]
pub struct VerifyRequest<'a> {
    /// Normalized account localpart.
    pub account: &'a str,
    /// Raw user-agent id.
    pub user_agent_id: &'a str,
    /// The mechanism of the attempt.
    pub mechanism: HtMechanism,
    /// The client's initiator MAC.
    pub mac: &'a [u8],
    /// Channel-binding data of this connection for the mechanism.
    pub cb_data: &'a [u8],
    /// `<fast count>` if sent.
    pub count: Option<u32>,
    /// `<fast invalidate>`.
    pub invalidate: bool,
    /// The request arrived as TLS 1.3 early data: `count` is then required and must be above
    /// the token's mark, no mark counting as 0 (Z-3, Z-4).
    pub early_data: bool,
}

impl<'a> VerifyRequest<'a> {
    /// An attempt without `count` or `invalidate`.
    pub fn new(
        account: &'a str,
        user_agent_id: &'a str,
        mechanism: HtMechanism,
        mac: &'a [u8],
        cb_data: &'a [u8],
    ) -> Self {
        VerifyRequest {
            account,
            user_agent_id,
            mechanism,
            mac,
            cb_data,
            count: None,
            invalidate: false,
            early_data: false,
        }
    }

    /// Arrived as TLS 1.3 early data (Z-3, Z-4).
    pub fn with_early_data(mut self, early: bool) -> Self {
        self.early_data = early;
        self
    }

    /// With `<fast count>`.
    pub fn with_count(mut self, count: Option<u32>) -> Self {
        self.count = count;
        self
    }

    /// With `<fast invalidate>`.
    pub fn with_invalidate(mut self, invalidate: bool) -> Self {
        self.invalidate = invalidate;
        self
    }
}

/// What the attempt asked, kept so a commit that lost a race can decide again.
struct Attempt {
    mechanism: HtMechanism,
    mac: Vec<u8>,
    cb_data: Zeroizing<Vec<u8>>,
    count: Option<u32>,
    invalidate: bool,
    early_data: bool,
    /// The account side's cutoff, read once per login (`u64::MAX`: no such account).
    account_cutoff: u64,
}

/// The decision for one read of the record.
struct Plan {
    version: u64,
    before: ClientRecord,
    next: ClientRecord,
    durability: Durability,
    which: SlotName,
    used: TokenSlot,
    promoted: bool,
}

/// A verified FAST attempt whose state change is planned but not yet written: hand it to
/// [`FastTokens::commit`] when the login succeeds.
#[non_exhaustive]
pub struct Verified {
    /// The client.
    pub key: ClientKey,
    /// The mechanism used.
    pub mechanism: HtMechanism,
    /// The slot that matched (before promotion).
    pub slot: SlotName,
    /// `HMAC(token, "Responder" || cb)` for `<additional-data>`.
    pub responder: Vec<u8>,
    /// The token is older than `token_min_ttl`: issue a replacement (F-16).
    pub rotation_due: bool,
    /// Start of the token chain (for `token_max_chain_age`).
    pub chain_started_at: u64,
    /// The client asked to invalidate its tokens (F-21).
    pub invalidated: bool,
    /// When the record was read: the time a token this login issues is stamped with.
    verified_at: u64,
    attempt: Attempt,
    plan: Plan,
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("key", &self.key)
            .field("mechanism", &self.mechanism)
            .field("slot", &self.slot)
            .field("rotation_due", &self.rotation_due)
            .field("invalidated", &self.invalidated)
            .finish_non_exhaustive()
    }
}

impl FastTokens {
    /// Applies the trust rules to one read of the record (protocol.md §4 step 4) and plans the
    /// state transition (step 5).
    fn evaluate(
        &self,
        key: &ClientKey,
        view: LoginView,
        a: &Attempt,
        now: u64,
    ) -> Result<(Plan, FastToken), RejectReason> {
        let mech_name = a.mechanism.name();
        let Some(rec) = view.record else {
            return Err(self.reject(Some(key), None, mech_name, RejectReason::UnknownToken));
        };
        // Newest first (F-29: `new`, then `current`). A slot bound to another mechanism is
        // skipped even if its MAC would verify (F-15, N1). The MAC comparison is
        // constant-time (F-31, F-34, H-14): its verdict stays a `subtle::Choice` up to this
        // `if`.
        let mut matched = None;
        for (name, slot) in [
            (SlotName::New, rec.value.new.as_ref()),
            (SlotName::Current, rec.value.current.as_ref()),
        ] {
            let Some(slot) = slot else { continue };
            if slot.mechanism != mech_name {
                continue;
            }
            let token = self.token_for(key, slot);
            if bool::from(a.mechanism.verify_initiator(
                token.expose().as_bytes(),
                &a.cb_data,
                &a.mac,
            )) {
                matched = Some((name, slot.clone(), token));
                break;
            }
        }
        let Some((which, used, token)) = matched else {
            return Err(self.reject(Some(key), None, mech_name, RejectReason::UnknownToken));
        };

        // F-28, F-30: a token we issued but no longer trust answers credentials-expired
        // (revoked, expired, or, H-13, at the end of its chain). The slot stays until the
        // sweep removes it at expiry, so a second attempt gets the same answer instead of a
        // misleading not-authorized. Revoked: by the token store's cutoffs, or by the
        // account side's (a password change or deletion the store may not know of, restored
        // from a backup older than it).
        let cutoff = view
            .revoked_before
            .max(rec.value.revoked_before)
            .max(a.account_cutoff);
        let revoked =
            used.issued_at < cutoff && !(which == SlotName::New && planted("revoke-one-slot"));
        let distrust = if revoked {
            Some(RejectReason::Revoked)
        } else if now >= used.expires_at {
            Some(RejectReason::Expired)
        } else if self
            .config()
            .token_max_chain_age
            .is_some_and(|max| now >= used.chain_started_at.saturating_add(ms(max)))
        {
            Some(RejectReason::ChainTooOld)
        } else {
            None
        };
        if let Some(reason) = distrust {
            return Err(self.reject(Some(key), None, mech_name, reason));
        }
        // F-14: with a count, it must exceed every count already seen for this token. In
        // early data (Z-3, Z-4) a count is required and no mark counts as 0, so a first 0-RTT
        // login needs count >= 1. A replay ends here: nothing is planned, nothing is written
        // (Z-5). The commit's compare-and-swap decides again if the record moved, so two
        // copies of one flight cannot both pass.
        let stale = |c: u32, m: u32| {
            if planted("count-equal-accepted") {
                c < m
            } else {
                c <= m
            }
        };
        let replayed = match (a.count, a.early_data) {
            (None, true) => {
                return Err(self.reject(Some(key), None, mech_name, RejectReason::Malformed));
            }
            (None, false) => false,
            (Some(c), true) => stale(c, used.max_count.unwrap_or(0)),
            (Some(c), false) => used.max_count.is_some_and(|m| stale(c, m)),
        };
        if replayed {
            return Err(self.reject(Some(key), None, mech_name, RejectReason::Replay));
        }

        let mut next = rec.value.clone();
        let mut durability = Durability::Lazy;
        let promoted = !a.invalidate
            && (which == SlotName::New
                || (planted("promote-on-any-use") && rec.value.new.is_some()));
        if a.invalidate {
            // F-21, and protocol.md §9 item 9: both slots, so an older `current` cannot
            // outlive a logout performed with the `new` token (Prosody's gap).
            next.current = None;
            next.new = None;
            durability = Durability::Durable;
        } else if promoted {
            // F-18: the older `current` dies when `new` is used. Durable: a crash must not
            // bring the superseded token back.
            next.current = next.new.take();
            durability = Durability::Durable;
        }
        if let Some(c) = a.count
            && let Some(s) = next.current.as_mut()
        {
            // The used token is now in `current` (promoted if it was `new`); after an
            // invalidation both slots are empty and there is nothing left to protect.
            s.max_count = Some(c);
            // F-14 across a crash: an accepted count is on disk before `<success>` goes out,
            // or a kill -9 right after the login would let the same count in again. Durable
            // writes share flushes, and clients that send `count` are few.
            durability = Durability::Durable;
        }
        if now.saturating_sub(next.last_used_at) >= LAST_USED_RESOLUTION_MS || promoted {
            next.last_used_at = now;
        }
        Ok((
            Plan {
                version: rec.version,
                before: rec.value,
                next,
                durability,
                which,
                used,
                promoted,
            },
            token,
        ))
    }

    /// Verifies a FAST attempt: one read of the store, nothing written. The state change it
    /// implies is written by [`FastTokens::commit`] once the login has succeeded.
    pub async fn verify(&self, req: &VerifyRequest<'_>) -> Result<Verified, RejectReason> {
        let mech_name = req.mechanism.name();
        let Ok(key) = ClientKey::new(req.account, req.user_agent_id) else {
            return Err(self.reject(None, Some(req.account), mech_name, RejectReason::Malformed));
        };
        let account_cutoff = match self.account_cutoff(req.account).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "account store unavailable");
                return Err(self.reject(
                    Some(&key),
                    None,
                    mech_name,
                    RejectReason::StoreUnavailable,
                ));
            }
        };
        let attempt = Attempt {
            mechanism: req.mechanism,
            mac: req.mac.to_vec(),
            cb_data: Zeroizing::new(req.cb_data.to_vec()),
            count: req.count,
            invalidate: req.invalidate,
            early_data: req.early_data,
            account_cutoff,
        };
        let now = self.now_ms();
        let view = match self.store().get_for_login(&key).await {
            Ok(v) => v,
            Err(e) => return Err(self.unavailable(&key, mech_name, &e)),
        };
        let (plan, token) = self.evaluate(&key, view, &attempt, now)?;
        Ok(Verified {
            responder: req
                .mechanism
                .responder_mac(token.expose().as_bytes(), req.cb_data),
            rotation_due: !req.invalidate
                && now.saturating_sub(plan.used.issued_at) >= ms(self.config().token_min_ttl),
            chain_started_at: plan.used.chain_started_at,
            invalidated: req.invalidate,
            verified_at: now,
            mechanism: req.mechanism,
            slot: plan.which,
            key,
            attempt,
            plan,
        })
    }

    fn unavailable(&self, key: &ClientKey, mechanism: &str, e: &StoreError) -> RejectReason {
        tracing::warn!(error = %e, "token store unavailable");
        self.reject(Some(key), None, mechanism, RejectReason::StoreUnavailable)
    }

    /// Writes a verified login's state change, with the token `issue` asks for (if any), in
    /// one compare-and-swap; durable whenever a token is issued or a token dies (promotion,
    /// invalidation). The token is on stable storage before this returns (F-17 survives a
    /// crash), so the caller may hand it to the client.
    ///
    /// Fails with the reason a fresh decision gives when the record changed since
    /// [`FastTokens::verify`] (for example a concurrent login invalidated the token).
    pub async fn commit(
        &self,
        verified: Verified,
        issue: Option<&TokenRequest>,
    ) -> Result<Option<IssuedToken>, RejectReason> {
        let Verified {
            key,
            attempt,
            mut plan,
            chain_started_at,
            verified_at,
            ..
        } = verified;
        let mech_name = attempt.mechanism.name();
        // What the verifying read found in `new`: with `verified_at`, what a token this login
        // issues may overwrite, however often the record is read again below.
        // Its nonce only (no copy of the whole slot on every login), zeroized as the slot's is.
        let seen_new = plan.before.new.as_ref().map(|n| Zeroizing::new(n.nonce));
        for _ in 0..MAX_CAS_RETRIES {
            let now = self.now_ms();
            let mut next = plan.next.clone();
            let mut durability = plan.durability;
            let mut issued = None;
            // Stamped with the time of the read that decided this login, not of this write: a
            // password change landing in between (it only raises the account's cutoff, so the
            // compare-and-swap below does not see it) must revoke this token too, as it does
            // the one that was used (docs/model.md, "Findings").
            let stamp = if planted("stamp-at-commit") {
                now
            } else {
                verified_at
            };
            // F-19 overwrites an unused `new`, but not one written by a login decided after
            // this one (docs/model.md, "Findings", 2): the client may have given up on this
            // login and got that token elsewhere. Nothing is issued then; the login still
            // succeeds and the client keeps the token it used.
            let newer = next
                .new
                .as_ref()
                .is_some_and(|n| decided_later(n, verified_at, seen_new.as_deref()))
                && !planted("overwrite-newer-token");
            if let Some(r) = issue
                && !newer
                && let Some(slot) = self.new_slot(r.mechanism, chain_started_at, stamp)
            {
                // F-19: an unused `new` is overwritten; F-17: `current` stays.
                next.new = Some(slot.clone());
                next.last_used_at = now;
                r.label(&mut next);
                durability = Durability::Durable;
                issued = Some((r.kind, slot));
            }
            if next != plan.before {
                // A record left without tokens is deleted, its labels with it (CAM-6).
                let write = (!next.is_empty()).then_some(next);
                let expected = if planted("write-without-cas") {
                    match self.store().get(&key).await {
                        Ok(v) => v.map(|v| v.version),
                        Err(e) => return Err(self.unavailable(&key, mech_name, &e)),
                    }
                } else {
                    Some(plan.version)
                };
                match self
                    .store()
                    .compare_and_swap(&key, expected, write, durability)
                    .await
                {
                    Ok(CasOutcome::Written(_)) => {}
                    Ok(CasOutcome::Conflict) => {
                        let view = match self.store().get_for_login(&key).await {
                            Ok(v) => v,
                            Err(e) => return Err(self.unavailable(&key, mech_name, &e)),
                        };
                        plan = self.evaluate(&key, view, &attempt, now)?.0;
                        continue;
                    }
                    Err(e) => return Err(self.unavailable(&key, mech_name, &e)),
                }
            }
            let ev = self.event(&key, &plan.used, now);
            if plan.promoted {
                for o in self.observers() {
                    o.promoted(&ev);
                }
            }
            if attempt.invalidate {
                for o in self.observers() {
                    o.invalidated(&ev);
                }
            }
            for o in self.observers() {
                o.used(&ev);
            }
            return Ok(issued.map(|(kind, slot)| {
                self.report_issued(kind, &self.event(&key, &slot, now));
                IssuedToken {
                    token: self.token_for(&key, &slot),
                    expires_at: slot.expires_at,
                }
            }));
        }
        Err(self.reject(Some(&key), None, mech_name, RejectReason::StoreUnavailable))
    }
}
