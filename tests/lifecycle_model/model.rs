//! The FAST token lifecycle as a `stateright` model: clients, hosts, one store, an attacker
//! holding captured 0-RTT flights, an operator, and time. Every store operation is one atomic
//! step (a linearizable compare-and-swap register per record, what sled and PostgreSQL give),
//! so the checker explores every order in which two hosts' reads and writes can land.
//!
//! Beside the real state (records, versions, cutoff) the model keeps a ghost: for every token
//! ever issued, what the protocol says about it (revoked, invalidated by its client,
//! superseded, its announced expiry), decided by the order of events rather than by the
//! implementation's timestamps. The properties compare the implementation's decisions with
//! the ghost (docs/model.md lists them in words).

use stateright::{Model, Property};

use super::spec::{Attempt, Decided, Mutation, Plan, Policy, Rec, Reject, Slot, Tick, TokenId};
use super::spec::{commit_next, issue_next, revoke_next, sweepable, wants_token};

/// How far the checker looks.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// One entry per client: true for a client that uses 0-RTT (and so always sends `count`),
    /// false for one that never sends `count`.
    pub clients: Vec<bool>,
    /// Hosts sharing the store; each runs one operation at a time.
    pub hosts: usize,
    /// The clock stops here (revocations may push it one tick further).
    pub t_max: Tick,
    /// Logins (password or FAST, or a lost 0-RTT flight) per client.
    pub logins: u8,
    /// Host crashes (anywhere in an operation, including after its durable write).
    pub crashes: u8,
    /// 0-RTT flights the attacker captures, and replays it makes.
    pub captures: u8,
    pub replays: u8,
    /// Operator actions: per-client revocations, password changes, expiry sweeps.
    pub revocations: u8,
    pub password_changes: u8,
    pub sweeps: u8,
    /// A client giving up on a login that its host is still processing and logging in again
    /// (0 in the model of record: see docs/model.md, "Findings").
    pub give_ups: u8,
}

/// The model: bounds, lifetimes, and an optional planted bug.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    pub bounds: Bounds,
    pub policy: Policy,
    pub mutation: Option<Mutation>,
}

/// A stored record and its version (`Versioned<ClientRecord>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stored {
    pub version: u8,
    pub rec: Rec,
}

/// What a client has: the newest token it received (clients keep one, as Conversations and
/// xmpp.js do), and its password, which always works in this model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    pub held: Option<TokenId>,
    pub busy: bool,
    pub next_count: u8,
    pub logins: u8,
}

/// A captured 0-RTT flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flight {
    pub client: u8,
    pub attempt: Attempt,
    pub request: bool,
}

/// The ghost of one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ghost {
    pub client: u8,
    /// The expiry the client was told (`<token expiry>`).
    pub expires_at: Tick,
    /// A revocation of its client or account came after its issuance.
    pub revoked: bool,
    /// Its client invalidated it (F-21, both slots).
    pub invalidated: bool,
    /// Superseded: a later token of its client was used (F-18), or a later one was issued
    /// while this one was still unused (F-19).
    pub dead: bool,
    /// Used at least once.
    pub used: bool,
    /// Issued by a rotation (F-16) rather than on request.
    pub rotated: bool,
    /// Issued by a password login that a revocation of its client overlapped: the login may
    /// count as before the revocation (the token is revoked) or after it (it is not).
    pub straddled: bool,
}

/// The answer a host owes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success(Option<TokenId>),
    Invalidated(Option<TokenId>),
    Refused(Reject),
}

/// Where a host's operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `issue` after a password login: read done, the compare-and-swap next. `seen_new`: the
    /// token in `new` at its first read (docs/model.md, "Findings", 2).
    Issue {
        slot: Slot,
        read: Option<Stored>,
        seen_new: Option<TokenId>,
    },
    /// A verified FAST login: its commit next.
    Commit {
        attempt: Attempt,
        request: bool,
        want: bool,
        stamp: Tick,
        /// The token in `new` at the verifying read (kept across re-reads).
        seen_new: Option<TokenId>,
        version: u8,
        plan: Plan,
    },
    /// `revoke_client`: read done.
    Revoke { read: Stored },
    /// `sweep_expired` for one record: read done.
    Sweep { version: u8 },
    /// Durable state written (or nothing to write): the answer is on its way.
    Answer(Outcome),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Op {
    pub client: u8,
    /// An attacker's replay or an abandoned login: nobody reads the answer.
    pub orphan: bool,
    /// A revocation came after this login's deciding read, so what it issues counts as
    /// issued before that revocation.
    pub ghost_revoked: bool,
    /// The token it accepted was already distrusted (per the ghost) at its deciding read.
    pub bad: bool,
    /// A password login that a revocation of its client overlapped (see `Ghost::straddled`).
    pub straddled: bool,
    pub phase: Phase,
}

/// Properties broken by a transition (the ones that are about events, not states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Broken {
    pub distrusted_accepted: bool,
    pub count_twice: bool,
    pub foreign_promotion: bool,
    pub own_login_refused: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Budget {
    pub crashes: u8,
    pub captures: u8,
    pub replays: u8,
    pub revocations: u8,
    pub password_changes: u8,
    pub sweeps: u8,
    pub give_ups: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub now: Tick,
    pub records: Vec<Option<Stored>>,
    pub cutoff: Tick,
    pub hosts: Vec<Option<Op>>,
    pub clients: Vec<Client>,
    pub flights: Vec<Flight>,
    pub tokens: Vec<Ghost>,
    pub next_version: u8,
    pub successes: Vec<(TokenId, u8)>,
    pub budget: Budget,
    pub broken: Broken,
}

/// Everything that can happen next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A client without a token logs in with its password and `<request-token>`.
    PasswordLogin { client: u8 },
    /// A client logs in with its token; the host verifies it (one read). `captured`: the
    /// attacker keeps a copy of this 0-RTT flight.
    FastLogin {
        client: u8,
        invalidate: bool,
        request: bool,
        captured: bool,
    },
    /// The attacker captures a 0-RTT flight and drops it: the client times out.
    Intercept { client: u8 },
    /// The attacker replays a captured flight to a host.
    Replay { flight: u8 },
    /// A host does its next store operation (a compare-and-swap; after a conflict, the
    /// re-read and the decision again).
    Step { host: u8 },
    /// A host's answer reaches its client.
    Deliver { host: u8 },
    /// A host crashes: its operation ends here, its client gets no answer.
    Crash { host: u8 },
    /// The client stops waiting for its login and may log in again elsewhere.
    GiveUp { client: u8 },
    /// The operator revokes one client (CAM, `host ctl revoke`).
    RevokeClient { client: u8 },
    /// The owner changes the password: `revoke_account`.
    PasswordChange,
    /// The expiry sweep removes one expired record.
    Sweep { client: u8 },
    /// Time passes.
    Tick,
}

impl Lifecycle {
    fn free_host(&self, s: &State) -> Option<usize> {
        s.hosts.iter().position(Option::is_none)
    }

    /// The ghost's verdict: may this token still be accepted?
    pub fn alive(s: &State, t: TokenId, now: Tick) -> bool {
        let g = &s.tokens[t as usize - 1];
        !g.revoked && !g.invalidated && !g.dead && now < g.expires_at
    }

    /// A client's own login was refused although its token is alive, and not because a
    /// replayed copy of this very flight got in first (one of two copies must lose, Z-4).
    fn refusal_unexplained(s: &State, a: &Attempt, r: Reject, now: Tick) -> bool {
        let copy_won =
            r == Reject::Replay && a.count.is_some_and(|n| s.successes.contains(&(a.token, n)));
        let straddled = s.tokens[a.token as usize - 1].straddled;
        Self::alive(s, a.token, now) && !copy_won && !straddled
    }

    fn attempt_of(&self, s: &State, c: usize, t: TokenId, invalidate: bool) -> Attempt {
        let counting = self.bounds.clients[c];
        Attempt {
            token: t,
            count: counting.then_some(s.clients[c].next_count),
            early: counting,
            invalidate,
        }
    }

    /// The implementation's verdict for the client's next login with its token.
    pub fn usable(&self, s: &State, c: usize, t: TokenId) -> bool {
        let a = self.attempt_of(s, c, t, false);
        let rec = s.records[c].as_ref().map(|r| &r.rec);
        self.policy
            .evaluate(self.mutation, rec, s.cutoff, &a, s.now)
            .is_ok()
    }

    /// A FAST attempt read and decided by a host: the start of a login or replay.
    fn verify(
        &self,
        s: &mut State,
        host: usize,
        c: usize,
        a: Attempt,
        request: bool,
        orphan: bool,
    ) {
        let rec = s.records[c];
        let now = s.now;
        let phase = match self.policy.evaluate(
            self.mutation,
            rec.as_ref().map(|r| &r.rec),
            s.cutoff,
            &a,
            now,
        ) {
            Err(r) => {
                if !orphan && Self::refusal_unexplained(s, &a, r, now) {
                    s.broken.own_login_refused = true;
                }
                Phase::Answer(Outcome::Refused(r))
            }
            Ok(plan) => Phase::Commit {
                attempt: a,
                request,
                want: wants_token(&self.policy, &plan, &a, request, now),
                stamp: now,
                seen_new: plan.before.new.map(|n| n.token),
                version: rec.map_or(0, |r| r.version),
                plan,
            },
        };
        s.hosts[host] = Some(Op {
            client: c as u8,
            orphan,
            ghost_revoked: false,
            bad: !Self::alive(s, a.token, now),
            straddled: false,
            phase,
        });
    }

    /// Writes a record (compare-and-swap already decided), with a fresh version on insert: one
    /// above every version written so far, as the real stores' random starting version is
    /// (`store::fresh_version`), so a record deleted and inserted again never shows a version a
    /// host read from the old one (no ABA).
    fn write(s: &mut State, c: usize, rec: Rec) {
        s.records[c] = if rec.is_empty() {
            None
        } else {
            let version = match s.records[c] {
                Some(old) => old.version + 1,
                None => s.next_version + 1,
            };
            s.next_version = s.next_version.max(version);
            Some(Stored { version, rec })
        };
    }

    /// A new token of client `c` in the ghost; F-19: its unused predecessors are superseded.
    fn ghost_issue(s: &mut State, c: usize, slot: &Slot, op: &Op, rotated: bool) {
        for g in s
            .tokens
            .iter_mut()
            .filter(|g| g.client as usize == c && !g.used)
        {
            g.dead = true;
        }
        s.tokens.push(Ghost {
            client: c as u8,
            expires_at: slot.expires_at,
            revoked: op.ghost_revoked,
            invalidated: false,
            dead: false,
            used: false,
            rotated,
            straddled: op.straddled,
        });
    }

    /// A revocation reaches the ghost: tokens issued so far, and logins already decided. A
    /// password change revokes what a password login in flight issues (its password was
    /// checked before the change); a client revocation does not stop password logins, so one
    /// in flight may count as before or after it.
    fn ghost_revoke(s: &mut State, client: Option<usize>) {
        let hit = |c: u8| client.is_none_or(|x| x == c as usize);
        for g in s.tokens.iter_mut().filter(|g| hit(g.client)) {
            g.revoked = true;
        }
        for op in s.hosts.iter_mut().flatten().filter(|o| hit(o.client)) {
            match (op.phase, client) {
                (Phase::Issue { .. }, Some(_)) => op.straddled = true,
                _ => op.ghost_revoked = true,
            }
        }
    }

    fn step(&self, s: &mut State, host: usize) {
        let Some(mut op) = s.hosts[host] else { return };
        let c = op.client as usize;
        let now = s.now;
        match op.phase {
            Phase::Issue {
                mut slot,
                read,
                seen_new,
            } => {
                if s.records[c].map(|r| r.version) != read.map(|r| r.version) {
                    // Conflict: `issue` reads again (the slot keeps its stamp).
                    op.phase = Phase::Issue {
                        slot,
                        read: s.records[c],
                        seen_new,
                    };
                } else {
                    slot.token = s.tokens.len() as TokenId + 1;
                    let rec = read.as_ref().map(|r| &r.rec);
                    op.phase = match issue_next(self.mutation, rec, slot, seen_new) {
                        Some(next) => {
                            Self::write(s, c, next);
                            Self::ghost_issue(s, c, &slot, &op, false);
                            Phase::Answer(Outcome::Success(Some(slot.token)))
                        }
                        // A newer `new` is stored: left alone, no token.
                        None => Phase::Answer(Outcome::Success(None)),
                    };
                }
            }
            Phase::Commit {
                attempt,
                request,
                want,
                stamp,
                seen_new,
                version,
                plan,
            } => {
                let token = s.tokens.len() as TokenId + 1;
                let decided = Decided {
                    at: stamp,
                    seen_new,
                };
                let stamp = if self.mutation == Some(Mutation::StampAtCommit) {
                    now
                } else {
                    stamp
                };
                let (next, issued) = commit_next(
                    &self.policy,
                    self.mutation,
                    &plan,
                    want,
                    token,
                    stamp,
                    decided,
                );
                let stored = s.records[c];
                let matches = match self.mutation {
                    Some(Mutation::WriteWithoutCas) => true,
                    _ => stored.map(|r| r.version) == Some(version),
                };
                if next != plan.before && !matches {
                    // Conflict: read again and decide again (a fresh linearization point).
                    let a = attempt;
                    match self.policy.evaluate(
                        self.mutation,
                        stored.as_ref().map(|r| &r.rec),
                        s.cutoff,
                        &a,
                        now,
                    ) {
                        Err(r) => {
                            if !op.orphan && Self::refusal_unexplained(s, &a, r, now) {
                                s.broken.own_login_refused = true;
                            }
                            op.phase = Phase::Answer(Outcome::Refused(r));
                        }
                        Ok(plan) => {
                            op.bad = !Self::alive(s, a.token, now);
                            op.ghost_revoked = false;
                            op.phase = Phase::Commit {
                                attempt,
                                request,
                                want,
                                stamp: decided.at,
                                seen_new,
                                version: stored.map_or(0, |r| r.version),
                                plan,
                            };
                        }
                    }
                    s.hosts[host] = Some(op);
                    return;
                }
                // Accepted: the checks of the properties about events.
                if op.bad {
                    s.broken.distrusted_accepted = true;
                }
                if let Some(n) = attempt.count {
                    if s.successes.contains(&(attempt.token, n)) {
                        s.broken.count_twice = true;
                    } else {
                        s.successes.push((attempt.token, n));
                        s.successes.sort_unstable();
                    }
                }
                if next != plan.before {
                    let before_new = stored.and_then(|r| r.rec.new).map(|x| x.token);
                    let after_current = next.current.map(|x| x.token);
                    if before_new.is_some()
                        && before_new == after_current
                        && before_new != Some(attempt.token)
                    {
                        s.broken.foreign_promotion = true;
                    }
                    Self::write(s, c, next);
                }
                // The ghost: F-18 (earlier tokens die with this use), F-21, F-19.
                for (i, g) in s.tokens.iter_mut().enumerate() {
                    let id = i as TokenId + 1;
                    if g.client as usize != c {
                        continue;
                    }
                    if id == attempt.token {
                        g.used = true;
                    }
                    if id < attempt.token {
                        g.dead = true;
                    }
                    if attempt.invalidate {
                        g.invalidated = true;
                    }
                }
                if let Some(slot) = issued {
                    Self::ghost_issue(s, c, &slot, &op, !request);
                }
                let issued = issued.map(|x| x.token);
                op.phase = Phase::Answer(if attempt.invalidate {
                    Outcome::Invalidated(issued)
                } else {
                    Outcome::Success(issued)
                });
            }
            Phase::Revoke { read } => {
                match s.records[c] {
                    Some(r) if r.version == read.version => {
                        Self::write(s, c, revoke_next(&read.rec, now));
                        s.hosts[host] = None;
                        Self::ghost_revoke(s, Some(c));
                        // The next login is at a later tick (tokens.rs: "+1").
                        s.now += 1;
                        return;
                    }
                    Some(r) => op.phase = Phase::Revoke { read: r },
                    None => {
                        s.hosts[host] = None;
                        return;
                    }
                }
            }
            Phase::Sweep { version } => {
                if s.records[c].map(|r| r.version) == Some(version) {
                    s.records[c] = None;
                }
                s.hosts[host] = None;
                return;
            }
            Phase::Answer(_) => {}
        }
        s.hosts[host] = Some(op);
    }
}

impl Model for Lifecycle {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let b = &self.bounds;
        vec![State {
            now: 0,
            records: vec![None; b.clients.len()],
            cutoff: 0,
            hosts: vec![None; b.hosts],
            clients: vec![
                Client {
                    held: None,
                    busy: false,
                    next_count: 1,
                    logins: b.logins,
                };
                b.clients.len()
            ],
            flights: Vec::new(),
            tokens: Vec::new(),
            next_version: 0,
            successes: Vec::new(),
            budget: Budget {
                crashes: b.crashes,
                captures: b.captures,
                replays: b.replays,
                revocations: b.revocations,
                password_changes: b.password_changes,
                sweeps: b.sweeps,
                give_ups: b.give_ups,
            },
            broken: Broken::default(),
        }]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        let free = self.free_host(s).is_some();
        for (i, cl) in s.clients.iter().enumerate() {
            let client = i as u8;
            if cl.busy {
                if s.budget.give_ups > 0 {
                    out.push(Action::GiveUp { client });
                }
                continue;
            }
            if cl.logins == 0 {
                continue;
            }
            match cl.held {
                None if free => out.push(Action::PasswordLogin { client }),
                None => {}
                Some(_) => {
                    let counting = self.bounds.clients[i];
                    if free {
                        for invalidate in [false, true] {
                            for request in [false, true] {
                                out.push(Action::FastLogin {
                                    client,
                                    invalidate,
                                    request,
                                    captured: false,
                                });
                                if counting && s.budget.captures > 0 {
                                    out.push(Action::FastLogin {
                                        client,
                                        invalidate,
                                        request,
                                        captured: true,
                                    });
                                }
                            }
                        }
                    }
                    if counting && s.budget.captures > 0 {
                        out.push(Action::Intercept { client });
                    }
                }
            }
        }
        if free && s.budget.replays > 0 {
            for flight in 0..s.flights.len() as u8 {
                out.push(Action::Replay { flight });
            }
        }
        for (h, op) in s.hosts.iter().enumerate() {
            let host = h as u8;
            let Some(op) = op else { continue };
            match op.phase {
                Phase::Answer(_) => out.push(Action::Deliver { host }),
                _ => out.push(Action::Step { host }),
            }
            if s.budget.crashes > 0
                && !matches!(op.phase, Phase::Revoke { .. } | Phase::Sweep { .. })
            {
                out.push(Action::Crash { host });
            }
        }
        for (i, r) in s.records.iter().enumerate() {
            let client = i as u8;
            let Some(r) = r else { continue };
            if free && s.budget.revocations > 0 {
                out.push(Action::RevokeClient { client });
            }
            if free && s.budget.sweeps > 0 && sweepable(&r.rec, s.now) {
                out.push(Action::Sweep { client });
            }
        }
        if s.budget.password_changes > 0 {
            out.push(Action::PasswordChange);
        }
        if s.now < self.bounds.t_max {
            out.push(Action::Tick);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        let host = self.free_host(&s);
        match action {
            Action::PasswordLogin { client } => {
                let c = client as usize;
                let slot = self.policy.new_slot(0, s.now, s.now)?;
                s.clients[c].busy = true;
                s.clients[c].logins -= 1;
                s.hosts[host?] = Some(Op {
                    client,
                    orphan: false,
                    ghost_revoked: false,
                    bad: false,
                    straddled: false,
                    phase: Phase::Issue {
                        slot,
                        read: s.records[c],
                        seen_new: s.records[c].and_then(|r| r.rec.new).map(|n| n.token),
                    },
                });
            }
            Action::FastLogin {
                client,
                invalidate,
                request,
                captured,
            } => {
                let c = client as usize;
                let t = s.clients[c].held?;
                let a = self.attempt_of(&s, c, t, invalidate);
                if captured {
                    s.budget.captures -= 1;
                    s.flights.push(Flight {
                        client,
                        attempt: a,
                        request,
                    });
                }
                let cl = &mut s.clients[c];
                cl.busy = true;
                cl.logins -= 1;
                cl.next_count += 1;
                self.verify(&mut s, host?, c, a, request, false);
            }
            Action::Intercept { client } => {
                let c = client as usize;
                let t = s.clients[c].held?;
                let a = self.attempt_of(&s, c, t, false);
                s.budget.captures -= 1;
                s.flights.push(Flight {
                    client,
                    attempt: a,
                    request: false,
                });
                s.clients[c].logins -= 1;
                s.clients[c].next_count += 1;
            }
            Action::Replay { flight } => {
                let f = s.flights[flight as usize];
                s.budget.replays -= 1;
                self.verify(&mut s, host?, f.client as usize, f.attempt, f.request, true);
            }
            Action::Step { host } => self.step(&mut s, host as usize),
            Action::Deliver { host } => {
                let op = s.hosts[host as usize].take()?;
                let Phase::Answer(outcome) = op.phase else {
                    return None;
                };
                if !op.orphan {
                    let cl = &mut s.clients[op.client as usize];
                    cl.busy = false;
                    let received = match outcome {
                        Outcome::Success(t) => t.or(cl.held),
                        Outcome::Invalidated(t) => t,
                        // Clients drop a token that failed (peers.md: Conversations, xmpp.js).
                        Outcome::Refused(_) => None,
                    };
                    if received != cl.held {
                        cl.next_count = 1;
                    }
                    cl.held = received;
                }
            }
            Action::Crash { host } => {
                let op = s.hosts[host as usize].take()?;
                s.budget.crashes -= 1;
                if !op.orphan {
                    s.clients[op.client as usize].busy = false;
                }
            }
            Action::GiveUp { client } => {
                s.budget.give_ups -= 1;
                s.clients[client as usize].busy = false;
                for op in s.hosts.iter_mut().flatten() {
                    if op.client == client && !op.orphan {
                        op.orphan = true;
                    }
                }
            }
            Action::RevokeClient { client } => {
                s.budget.revocations -= 1;
                let read = s.records[client as usize]?;
                s.hosts[host?] = Some(Op {
                    client,
                    orphan: true,
                    ghost_revoked: false,
                    bad: false,
                    straddled: false,
                    phase: Phase::Revoke { read },
                });
            }
            Action::PasswordChange => {
                s.budget.password_changes -= 1;
                s.cutoff = s.cutoff.max(s.now + 1);
                Self::ghost_revoke(&mut s, None);
                s.now += 1;
            }
            Action::Sweep { client } => {
                s.budget.sweeps -= 1;
                let version = s.records[client as usize]?.version;
                s.hosts[host?] = Some(Op {
                    client,
                    orphan: true,
                    ghost_revoked: false,
                    bad: false,
                    straddled: false,
                    phase: Phase::Sweep { version },
                });
            }
            Action::Tick => s.now += 1,
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(NO_DISTRUSTED_TOKEN_ACCEPTED, |_, s: &State| {
                !s.broken.distrusted_accepted
            }),
            Property::always(NO_TOKEN_LOST, |m: &Lifecycle, s: &State| {
                s.clients.iter().enumerate().all(|(c, cl)| {
                    let Some(t) = cl.held else { return true };
                    let g = &s.tokens[t as usize - 1];
                    if g.revoked || g.invalidated || g.straddled || s.now >= g.expires_at {
                        return true; // expiry, revocation, its own invalidate
                    }
                    // Superseded by a token it never received, or unusable though alive.
                    !g.dead && m.usable(s, c, t)
                })
            }),
            Property::always(ONE_SUCCESS_PER_COUNT, |_, s: &State| !s.broken.count_twice),
            Property::always(NEW_PROMOTED_ONLY_BY_ITS_OWN_USE, |_, s: &State| {
                !s.broken.foreign_promotion
            }),
            Property::always(A_WAY_BACK_IN, |_, s: &State| !s.broken.own_login_refused),
            // Reachability: the bounds reach what the properties are about.
            Property::sometimes("a token is promoted", |_, s: &State| {
                s.records.iter().flatten().any(|r| r.rec.current.is_some())
            }),
            Property::sometimes("a rotated token is delivered", |_, s: &State| {
                s.clients
                    .iter()
                    .any(|c| c.held.is_some_and(|t| s.tokens[t as usize - 1].rotated))
            }),
            Property::sometimes("a replayed 0-RTT flight is refused", |_, s: &State| {
                s.hosts
                    .iter()
                    .flatten()
                    .any(|o| o.orphan && o.phase == Phase::Answer(Outcome::Refused(Reject::Replay)))
            }),
            Property::sometimes("a revoked token is refused", |_, s: &State| {
                s.hosts
                    .iter()
                    .flatten()
                    .any(|o| o.phase == Phase::Answer(Outcome::Refused(Reject::Revoked)))
            }),
            Property::sometimes("an expired token is refused", |_, s: &State| {
                s.hosts.iter().flatten().any(|o| {
                    matches!(
                        o.phase,
                        Phase::Answer(Outcome::Refused(Reject::Expired | Reject::ChainTooOld))
                    )
                })
            }),
            Property::sometimes("a client invalidates its tokens", |_, s: &State| {
                s.tokens.iter().any(|g| g.invalidated)
            }),
            Property::sometimes("a host crashes after its durable write", |_, s: &State| {
                s.budget.crashes == 0 && s.tokens.iter().any(|g| !g.used && !g.dead)
            }),
        ]
    }
}

pub const NO_DISTRUSTED_TOKEN_ACCEPTED: &str =
    "no revoked, expired, invalidated or superseded token is accepted";
pub const NO_TOKEN_LOST: &str =
    "a held token dies only by expiry, revocation or its own invalidate";
pub const ONE_SUCCESS_PER_COUNT: &str = "at most one success per (token, count)";
pub const NEW_PROMOTED_ONLY_BY_ITS_OWN_USE: &str = "new is promoted only by its own use";
pub const A_WAY_BACK_IN: &str = "a client's own login with a live token is never refused";
