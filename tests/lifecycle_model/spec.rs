//! The token lifecycle's decisions as pure functions over small values: what
//! `src/fast/login.rs` (`evaluate`, `commit`) and `src/fast/tokens.rs` (`issue`, `revoke_client`,
//! `sweep_expired`) decide for one read of a record, without the store, the pepper or the
//! clock. The model checker (`model.rs`) runs these decisions under every interleaving; the
//! property test (`tests/lifecycle_conformance.rs`) runs them beside the real `FastTokens` and
//! compares every answer.
//!
//! Time is in ticks (the conformance test maps one tick to one second of a manual clock).
//! Tokens are small ids: the real token is derived from a slot's nonce, so "the slot's token"
//! and "the id" stand for the same thing. One HT mechanism only: binding a token to its
//! mechanism (F-15) is a name check that no interleaving can change.

/// A point in time, in ticks.
pub type Tick = u8;
/// A token, by the order of its issuance (1, 2, ...).
pub type TokenId = u8;

/// The lifetimes of `FastConfig`, in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// `token_ttl`.
    pub ttl: Tick,
    /// `token_min_ttl`: a token at least this old is rotated on use (F-16).
    pub min_ttl: Tick,
    /// `token_max_chain_age` (H-13).
    pub max_chain: Option<Tick>,
}

/// A bug planted on purpose, to see the checks fail (docs/model.md, "Planted bugs"). The same
/// names select the hooks in `src/fast` under the `model-mutations` feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// A login with `current` promotes `new` too (breaks F-17/F-18).
    PromoteOnAnyUse,
    /// A commit writes over whatever is stored instead of compare-and-swap on what it read.
    WriteWithoutCas,
    /// The revocation cutoffs are checked for `current` only, so a revoked `new` gets in.
    RevokeOneSlot,
    /// A `count` equal to the highest one seen is accepted (F-14 says "greater than").
    CountEqualAccepted,
    /// A token issued by a FAST login is stamped with the time of its commit, not of the read
    /// that decided the login (the gap this model found, docs/model.md "Findings").
    StampAtCommit,
    /// A late commit or `issue` overwrites a `new` that a login decided after it wrote (the
    /// code before docs/model.md "Findings", 2 was fixed).
    OverwriteNewerToken,
}

impl Mutation {
    /// Every planted bug.
    pub const ALL: [Mutation; 6] = [
        Mutation::PromoteOnAnyUse,
        Mutation::WriteWithoutCas,
        Mutation::RevokeOneSlot,
        Mutation::CountEqualAccepted,
        Mutation::StampAtCommit,
        Mutation::OverwriteNewerToken,
    ];

    /// The name `SASL2_FAST_MUTATION` takes for the hook in `src/fast`.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::PromoteOnAnyUse => "promote-on-any-use",
            Mutation::WriteWithoutCas => "write-without-cas",
            Mutation::RevokeOneSlot => "revoke-one-slot",
            Mutation::CountEqualAccepted => "count-equal-accepted",
            Mutation::StampAtCommit => "stamp-at-commit",
            Mutation::OverwriteNewerToken => "overwrite-newer-token",
        }
    }

    /// The mutation named by `SASL2_FAST_MUTATION`, if any.
    #[allow(dead_code)] // used by the conformance test only
    pub fn from_env() -> Option<Mutation> {
        let name = std::env::var("SASL2_FAST_MUTATION").ok()?;
        let m = Mutation::ALL.into_iter().find(|m| m.name() == name);
        assert!(m.is_some(), "unknown SASL2_FAST_MUTATION {name:?}");
        m
    }
}

/// One token slot (`TokenSlot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    pub token: TokenId,
    pub issued_at: Tick,
    pub expires_at: Tick,
    pub chain: Tick,
    pub max_count: Option<u8>,
}

/// A client's record (`ClientRecord`, without the labels and `last_used_at`, which decide
/// nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Rec {
    pub current: Option<Slot>,
    pub new: Option<Slot>,
    pub revoked_before: Tick,
}

impl Rec {
    /// `ClientRecord::is_empty`: such a record is deleted, not written.
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.new.is_none()
    }

    /// `ClientRecord::expires_at`.
    pub fn expires_at(&self) -> Option<Tick> {
        match (self.current, self.new) {
            (None, None) => None,
            (a, b) => Some(
                a.map_or(0, |s| s.expires_at)
                    .max(b.map_or(0, |s| s.expires_at)),
            ),
        }
    }
}

/// Why an attempt is refused (`RejectReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    UnknownToken,
    Revoked,
    Expired,
    ChainTooOld,
    Replay,
    Malformed,
}

/// Which slot matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Which {
    New,
    Current,
}

/// A FAST attempt (`VerifyRequest`): the token the client presents and its `<fast>` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attempt {
    pub token: TokenId,
    pub count: Option<u8>,
    pub early: bool,
    pub invalidate: bool,
}

/// The decision for one read (`login.rs`'s `Plan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Plan {
    pub before: Rec,
    pub next: Rec,
    pub which: Which,
    pub used: Slot,
    pub promoted: bool,
}

impl Policy {
    /// `FastTokens::new_slot`: a token issued at `now` in a chain begun at `chain`, or `None`
    /// past `token_max_chain_age`.
    pub fn new_slot(&self, token: TokenId, chain: Tick, now: Tick) -> Option<Slot> {
        let mut expires_at = now.saturating_add(self.ttl);
        if let Some(max) = self.max_chain {
            expires_at = expires_at.min(chain.saturating_add(max));
        }
        (expires_at > now).then_some(Slot {
            token,
            issued_at: now,
            expires_at,
            chain,
            max_count: None,
        })
    }

    /// `Verified::rotation_due` (F-16).
    pub fn rotation_due(&self, used: &Slot, now: Tick) -> bool {
        now.saturating_sub(used.issued_at) >= self.min_ttl
    }

    /// `FastTokens::evaluate`: the trust rules for one read of the record and the account
    /// cutoff, and the planned change.
    pub fn evaluate(
        &self,
        mutation: Option<Mutation>,
        record: Option<&Rec>,
        account_cutoff: Tick,
        a: &Attempt,
        now: Tick,
    ) -> Result<Plan, Reject> {
        let rec = record.ok_or(Reject::UnknownToken)?;
        // F-29: `new` first, then `current`.
        let (which, used) = [(Which::New, rec.new), (Which::Current, rec.current)]
            .into_iter()
            .find_map(|(w, s)| s.filter(|s| s.token == a.token).map(|s| (w, s)))
            .ok_or(Reject::UnknownToken)?;
        let cutoff = account_cutoff.max(rec.revoked_before);
        let revocation_checked =
            !(mutation == Some(Mutation::RevokeOneSlot) && which == Which::New);
        if revocation_checked && used.issued_at < cutoff {
            return Err(Reject::Revoked);
        }
        if now >= used.expires_at {
            return Err(Reject::Expired);
        }
        if self
            .max_chain
            .is_some_and(|max| now >= used.chain.saturating_add(max))
        {
            return Err(Reject::ChainTooOld);
        }
        // F-14, Z-3, Z-4.
        let equal_ok = mutation == Some(Mutation::CountEqualAccepted);
        let stale = |c: u8, m: u8| if equal_ok { c < m } else { c <= m };
        let replayed = match (a.count, a.early) {
            (None, true) => return Err(Reject::Malformed),
            (None, false) => false,
            (Some(c), true) => stale(c, used.max_count.unwrap_or(0)),
            (Some(c), false) => used.max_count.is_some_and(|m| stale(c, m)),
        };
        if replayed {
            return Err(Reject::Replay);
        }
        let mut next = *rec;
        let promoted = !a.invalidate
            && (which == Which::New
                || (mutation == Some(Mutation::PromoteOnAnyUse) && rec.new.is_some()));
        if a.invalidate {
            // F-21 and protocol.md §9 item 9: both slots.
            next.current = None;
            next.new = None;
        } else if promoted {
            // F-18.
            next.current = next.new.take();
        }
        if let Some(c) = a.count
            && let Some(s) = next.current.as_mut()
        {
            s.max_count = Some(c);
        }
        Ok(Plan {
            before: *rec,
            next,
            which,
            used,
            promoted,
        })
    }
}

/// When a login was decided (its deciding read: `verify`'s for a FAST login, the start of
/// `issue` for a password login) and the token its deciding read saw in `new`: what decides
/// whether a token it issues may overwrite the `new` it finds when it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decided {
    pub at: Tick,
    pub seen_new: Option<TokenId>,
}

impl Decided {
    /// `tokens.rs`'s `decided_later`: `new` was written by a login decided after this one, so
    /// this one leaves it alone (docs/model.md, "Findings", 2): stamped later, or stamped in
    /// the same tick and not the `new` this login's deciding read saw (a `new` it saw was
    /// decided before it; one it did not see was written after its read).
    pub fn decided_later(&self, new: &Slot) -> bool {
        new.issued_at > self.at || (new.issued_at == self.at && Some(new.token) != self.seen_new)
    }
}

/// What a FAST login's commit writes: the plan, with the token it issues (F-16 rotation or
/// H-11 request) in `new` (F-19 overwrites an unused one, F-17 keeps `current`). `stamp` is
/// the time the token is stamped with (the verifying read's, see [`Mutation::StampAtCommit`]).
/// `None` for the token when the chain is too old (H-13), or when the `new` it would overwrite
/// was written by a login decided after this one (`decided`, docs/model.md "Findings", 2): the
/// login then issues nothing and the client keeps the token it used.
pub fn commit_next(
    policy: &Policy,
    mutation: Option<Mutation>,
    plan: &Plan,
    issue: bool,
    token: TokenId,
    stamp: Tick,
    decided: Decided,
) -> (Rec, Option<Slot>) {
    let mut next = plan.next;
    let mut issued = None;
    let newer = mutation != Some(Mutation::OverwriteNewerToken)
        && next.new.is_some_and(|n| decided.decided_later(&n));
    if issue
        && !newer
        && let Some(slot) = policy.new_slot(token, plan.used.chain, stamp)
    {
        next.new = Some(slot);
        issued = Some(slot);
    }
    (next, issued)
}

/// Whether a FAST login issues a token: on request (H-11), else by rotation unless
/// invalidating (F-16, F-22). The plugin decides this once, from the verifying read.
pub fn wants_token(policy: &Policy, plan: &Plan, a: &Attempt, requested: bool, now: Tick) -> bool {
    requested || (!a.invalidate && policy.rotation_due(&plan.used, now))
}

/// `FastTokens::issue` after a password login: the record with `slot` in `new`, or `None`
/// (nothing written, no token) when the stored `new` was written by a login decided after this
/// one, which was decided when `slot` was stamped and whose first read saw `seen_new` in `new`
/// (docs/model.md, "Findings", 2).
pub fn issue_next(
    mutation: Option<Mutation>,
    record: Option<&Rec>,
    slot: Slot,
    seen_new: Option<TokenId>,
) -> Option<Rec> {
    let decided = Decided {
        at: slot.issued_at,
        seen_new,
    };
    let mut rec = record.copied().unwrap_or_default();
    if mutation != Some(Mutation::OverwriteNewerToken)
        && rec.new.is_some_and(|n| decided.decided_later(&n))
    {
        return None;
    }
    rec.new = Some(slot);
    Some(rec)
}

/// `FastTokens::revoke_client`: every token issued up to `now` distrusted.
pub fn revoke_next(rec: &Rec, now: Tick) -> Rec {
    let mut rec = *rec;
    rec.revoked_before = rec.revoked_before.max(now.saturating_add(1));
    rec
}

/// `FastTokens::sweep_expired`: whether the sweep deletes this record.
pub fn sweepable(rec: &Rec, now: Tick) -> bool {
    rec.expires_at().is_some_and(|e| e <= now)
}
