//! The default [`LoginThrottle`]: a doubling backoff after failed guesses, with reservations
//! for checks in flight, and known devices judged by their own failures ("device cookies").
//!
//! Three kinds of bucket count failed checks:
//! - per **account**, for strangers: every attempt from a device this account never logged in
//!   from;
//! - per **source** (an IPv4 address or an IPv6 /64), for strangers: one address spraying
//!   many accounts;
//! - per **known device** of an account: a user-agent id that logged in to it before, or else
//!   a source address that did within `known_memory`. Such a device is held back only by its
//!   own failures, so a stranger's guessing never locks the owner's phone out.
//!
//! After `failures` failures a bucket holds further checks for one second, doubling with each
//! further failure up to `max_backoff`; a bucket is forgotten `max_backoff` after its last
//! failure. Checks admitted and not yet settled count against the limit (a reservation), so
//! pipelined or parallel exchanges never check more guesses than `failures`; once in backoff,
//! one check at a time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{Admission, CredentialAttempt, KnownDevices, LoginThrottle, Ticket, Verdict};

/// Failed checks before a bucket holds (Prosody's `mod_limits` and ejabberd's defaults are of
/// this order; 5 is what the example host has shipped).
pub const DEFAULT_FAILURES: u32 = 5;
/// The longest backoff, and how long failures are remembered.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a successful login makes its source address a known device of the account.
pub const DEFAULT_KNOWN_MEMORY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Entries kept at most per map; beyond it the quiet ones are dropped (identities, addresses
/// and agent ids sprayed by the million must not grow memory without bound).
const MAX_ENTRIES: usize = 100_000;

/// What one source is for throttling: an IPv4 address (IPv4-mapped IPv6 included) or an IPv6
/// /64, the block one subscriber usually holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// One IPv4 address.
    V4([u8; 4]),
    /// One IPv6 /64.
    V6Prefix([u8; 8]),
}

impl SourceKey {
    /// The source `ip` belongs to.
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    SourceKey::V6Prefix(prefix)
                }
            },
        }
    }
}

/// A known device of an account: its user-agent id (hashed: it is a device secret of sorts),
/// or the source address it logged in from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Device {
    Agent([u8; 32]),
    Source(SourceKey),
}

fn agent(id: &str) -> Device {
    Device::Agent(Sha256::digest(id.as_bytes()).into())
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    failures: u32,
    in_flight: u32,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
}

impl Bucket {
    /// Forgets failures older than `memory`.
    fn refresh(&mut self, now: Instant, memory: Duration) {
        if self
            .last_failure
            .is_some_and(|t| now.duration_since(t) >= memory)
        {
            self.failures = 0;
            self.last_failure = None;
            self.blocked_until = None;
        }
    }

    /// How long a new check must wait, if it must.
    fn hold(&self, now: Instant, limit: u32) -> Option<Duration> {
        if let Some(until) = self.blocked_until
            && until > now
        {
            return Some(until - now);
        }
        let busy = if self.failures >= limit {
            // In backoff: one check at a time.
            self.in_flight > 0
        } else {
            self.failures + self.in_flight >= limit
        };
        // A reservation settles within one check's time; a second is a fair "try again".
        busy.then_some(Duration::from_secs(1))
    }

    fn fail(&mut self, now: Instant, limit: u32, max_backoff: Duration) {
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(now);
        if self.failures >= limit {
            let doublings = (self.failures - limit).min(20);
            let backoff = Duration::from_secs(1 << doublings).min(max_backoff);
            self.blocked_until = Some(now + backoff);
        }
    }

    fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.failures == 0
    }

    fn is_quiet(&self, now: Instant, memory: Duration) -> bool {
        self.in_flight == 0
            && self
                .last_failure
                .is_none_or(|t| now.duration_since(t) >= memory)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Strangers, per account.
    accounts: HashMap<String, Bucket>,
    /// Strangers, per source.
    sources: HashMap<SourceKey, Bucket>,
    /// Known devices, each on its own.
    devices: HashMap<(String, Device), Bucket>,
    /// When each (account, device) last logged in.
    known: HashMap<(String, Device), Instant>,
}

/// Which buckets an admitted check reserved.
#[derive(Debug)]
enum Note {
    Off,
    Known(String, Device),
    Stranger {
        account: String,
        source: Option<SourceKey>,
    },
}

/// Room in `map` for one more key: quiet entries go first; under a spray, forgetting is
/// better than growing.
fn make_room<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Bucket>,
    now: Instant,
    memory: Duration,
) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, b| !b.is_quiet(now, memory));
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, b| b.in_flight > 0);
        }
    }
}

/// The default throttle (see the module docs).
#[derive(Debug)]
pub struct BackoffThrottle {
    limit: u32,
    max_backoff: Duration,
    known_memory: Duration,
    known_devices: Option<Arc<dyn KnownDevices>>,
    state: Mutex<State>,
}

impl Default for BackoffThrottle {
    fn default() -> Self {
        BackoffThrottle::new(DEFAULT_FAILURES, DEFAULT_MAX_BACKOFF)
    }
}

/// Why [`BackoffThrottle::decide`] did not admit.
struct Held {
    retry_after: Duration,
    /// The attempt was judged a stranger's although it names an agent a store might know.
    ask_store: bool,
}

impl BackoffThrottle {
    /// Holds after `failures` failed checks (0 turns throttling off), backing off up to
    /// `max_backoff`.
    pub fn new(failures: u32, max_backoff: Duration) -> Self {
        BackoffThrottle {
            limit: failures,
            max_backoff: max_backoff.max(Duration::from_secs(1)),
            known_memory: DEFAULT_KNOWN_MEMORY,
            known_devices: None,
            state: Mutex::new(State::default()),
        }
    }

    /// Also asks `devices` whether an agent id is a known device of an account, when an
    /// attempt from it would otherwise be held as a stranger's (devices known before a
    /// restart, or from another host of a cluster).
    pub fn with_known_devices(mut self, devices: Arc<dyn KnownDevices>) -> Self {
        self.known_devices = Some(devices);
        self
    }

    /// How long a successful login makes its source address a known device of the account
    /// (default [`DEFAULT_KNOWN_MEMORY`]).
    pub fn with_known_memory(mut self, memory: Duration) -> Self {
        self.known_memory = memory;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn decide(&self, a: &CredentialAttempt, agent_known: bool) -> Result<Note, Held> {
        let now = Instant::now();
        let mut s = self.lock();
        let source = a.source.map(SourceKey::of);
        let agent = a.user_agent_id.as_deref().map(agent);
        let remembered = |s: &State, d: &Device| {
            s.known
                .get(&(a.identity.clone(), d.clone()))
                .is_some_and(|t| now.duration_since(*t) < self.known_memory)
        };
        let device = match (&agent, source) {
            (Some(d), _) if agent_known || remembered(&s, d) => Some(d.clone()),
            (_, Some(src)) if remembered(&s, &Device::Source(src)) => Some(Device::Source(src)),
            _ => None,
        };
        if let Some(device) = device {
            make_room(&mut s.devices, now, self.max_backoff);
            let bucket = s
                .devices
                .entry((a.identity.clone(), device.clone()))
                .or_default();
            bucket.refresh(now, self.max_backoff);
            if let Some(retry_after) = bucket.hold(now, self.limit) {
                return Err(Held {
                    retry_after,
                    ask_store: false,
                });
            }
            bucket.in_flight += 1;
            return Ok(Note::Known(a.identity.clone(), device));
        }
        let mut hold = None;
        if let Some(b) = s.accounts.get_mut(&a.identity) {
            b.refresh(now, self.max_backoff);
            hold = b.hold(now, self.limit);
        }
        if let Some(src) = source
            && let Some(b) = s.sources.get_mut(&src)
        {
            b.refresh(now, self.max_backoff);
            hold = hold.max(b.hold(now, self.limit));
        }
        if let Some(retry_after) = hold {
            return Err(Held {
                retry_after,
                ask_store: agent.is_some() && !agent_known && self.known_devices.is_some(),
            });
        }
        make_room(&mut s.accounts, now, self.max_backoff);
        s.accounts.entry(a.identity.clone()).or_default().in_flight += 1;
        if let Some(src) = source {
            make_room(&mut s.sources, now, self.max_backoff);
            s.sources.entry(src).or_default().in_flight += 1;
        }
        Ok(Note::Stranger {
            account: a.identity.clone(),
            source,
        })
    }

    fn remember(&self, a: &CredentialAttempt) {
        let now = Instant::now();
        let mut s = self.lock();
        if s.known.len() >= MAX_ENTRIES {
            let memory = self.known_memory;
            s.known.retain(|_, t| now.duration_since(*t) < memory);
            if s.known.len() >= MAX_ENTRIES {
                // Keep the newest half: the devices most likely to come back.
                let mut times: Vec<Instant> = s.known.values().copied().collect();
                times.sort_unstable();
                let cut = times[times.len() / 2];
                s.known.retain(|_, t| *t >= cut);
            }
        }
        if let Some(id) = &a.user_agent_id {
            s.known.insert((a.identity.clone(), agent(id)), now);
        }
        if let Some(ip) = a.source {
            s.known
                .insert((a.identity.clone(), Device::Source(SourceKey::of(ip))), now);
        }
    }
}

#[async_trait]
impl LoginThrottle for BackoffThrottle {
    async fn admit(&self, attempt: &CredentialAttempt) -> Admission {
        if self.limit == 0 {
            return Admission::Admit(Ticket::new(Note::Off));
        }
        let held = match self.decide(attempt, false) {
            Ok(note) => return Admission::Admit(Ticket::new(note)),
            Err(held) => held,
        };
        // Only a held stranger naming an agent costs a lookup: the common path and a flood of
        // held guesses without agent ids stay in memory.
        if held.ask_store
            && let (Some(devices), Some(id)) = (&self.known_devices, &attempt.user_agent_id)
            && devices.is_known(&attempt.identity, id).await
        {
            return match self.decide(attempt, true) {
                Ok(note) => Admission::Admit(Ticket::new(note)),
                Err(h) => Admission::Hold {
                    retry_after: h.retry_after,
                },
            };
        }
        Admission::Hold {
            retry_after: held.retry_after,
        }
    }

    fn settle(&self, attempt: &CredentialAttempt, ticket: Ticket, verdict: Verdict) {
        let Some(note) = ticket.note::<Note>() else {
            return;
        };
        let now = Instant::now();
        {
            let mut s = self.lock();
            let (limit, max_backoff) = (self.limit, self.max_backoff);
            let settle = |b: &mut Bucket, reset: bool| {
                b.release();
                match verdict {
                    Verdict::Rejected => b.fail(now, limit, max_backoff),
                    Verdict::Accepted if reset => {
                        *b = Bucket {
                            in_flight: b.in_flight,
                            ..Bucket::default()
                        }
                    }
                    _ => {}
                }
            };
            match note {
                Note::Off => {}
                Note::Known(account, device) => {
                    let key = (account.clone(), device.clone());
                    if let Some(b) = s.devices.get_mut(&key) {
                        settle(b, true);
                        if b.is_idle() {
                            s.devices.remove(&key);
                        }
                    }
                }
                Note::Stranger { account, source } => {
                    if let Some(b) = s.accounts.get_mut(account) {
                        // The owner's password from a new device: the account's count starts
                        // again.
                        settle(b, true);
                        if b.is_idle() {
                            s.accounts.remove(account);
                        }
                    }
                    if let Some(src) = source
                        && let Some(b) = s.sources.get_mut(src)
                    {
                        // A source's count is not reset by a success: an attacker with an
                        // account of its own could clear it between guesses.
                        settle(b, false);
                        if b.is_idle() {
                            s.sources.remove(src);
                        }
                    }
                }
            }
        }
        if verdict == Verdict::Accepted && !matches!(note, Note::Off) {
            self.remember(attempt);
        }
    }

    fn logged_in(&self, attempt: &CredentialAttempt) {
        if self.limit > 0 {
            self.remember(attempt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl2::SaslProfile;

    fn attempt(who: &str, ip: &str, agent: Option<&str>) -> CredentialAttempt {
        let a = CredentialAttempt::new(who, "PLAIN", SaslProfile::Sasl2)
            .with_source(ip.parse().unwrap());
        match agent {
            Some(id) => a.with_user_agent_id(id),
            None => a,
        }
    }

    async fn admitted(t: &BackoffThrottle, a: &CredentialAttempt) -> Option<Ticket> {
        match t.admit(a).await {
            Admission::Admit(ticket) => Some(ticket),
            Admission::Hold { .. } => None,
        }
    }

    async fn guess(t: &BackoffThrottle, a: &CredentialAttempt, verdict: Verdict) -> bool {
        match admitted(t, a).await {
            Some(ticket) => {
                t.settle(a, ticket, verdict);
                true
            }
            None => false,
        }
    }

    #[tokio::test]
    async fn reservations_bound_parallel_checks_to_the_limit() {
        let t = BackoffThrottle::new(5, Duration::from_secs(60));
        let a = attempt("alice", "192.0.2.1", None);
        // 60 exchanges reach their check before any verdict: 5 are admitted.
        let mut tickets = Vec::new();
        for _ in 0..60 {
            if let Some(ticket) = admitted(&t, &a).await {
                tickets.push(ticket);
            }
        }
        assert_eq!(tickets.len(), 5);
        for ticket in tickets {
            t.settle(&a, ticket, Verdict::Rejected);
        }
        assert!(admitted(&t, &a).await.is_none(), "in backoff now");
        // Another address guessing the same account is held too (the account's stranger
        // bucket), and so is the first address for another account (its source bucket).
        assert!(!guess(&t, &attempt("alice", "192.0.2.2", None), Verdict::Rejected).await);
        assert!(!guess(&t, &attempt("bob", "192.0.2.1", None), Verdict::Rejected).await);
        assert!(guess(&t, &attempt("bob", "192.0.2.2", None), Verdict::Accepted).await);
    }

    #[tokio::test]
    async fn an_abandoned_check_frees_its_reservation_without_a_failure() {
        let t = BackoffThrottle::new(1, Duration::from_secs(60));
        let a = attempt("alice", "192.0.2.1", None);
        let ticket = admitted(&t, &a).await.unwrap();
        assert!(
            admitted(&t, &a).await.is_none(),
            "one reservation at a time"
        );
        t.settle(&a, ticket, Verdict::Undecided);
        assert!(guess(&t, &a, Verdict::Rejected).await);
        assert!(!guess(&t, &a, Verdict::Rejected).await);
    }

    #[tokio::test]
    async fn strangers_do_not_lock_out_known_devices() {
        let t = BackoffThrottle::new(5, Duration::from_secs(300));
        let phone = attempt("alice", "198.51.100.7", Some("phone-id"));
        let laptop = attempt("alice", "198.51.100.8", None);
        assert!(guess(&t, &phone, Verdict::Accepted).await);
        assert!(guess(&t, &laptop, Verdict::Accepted).await);
        for i in 0..50 {
            let stranger = attempt("alice", &format!("203.0.113.{i}"), Some(&format!("x{i}")));
            guess(&t, &stranger, Verdict::Rejected).await;
        }
        assert!(
            !guess(
                &t,
                &attempt("alice", "203.0.113.200", Some("new")),
                Verdict::Accepted
            )
            .await,
            "an unknown device from a new address is held"
        );
        // The phone by its agent id, from anywhere; the laptop by its address.
        assert!(
            guess(
                &t,
                &attempt("alice", "203.0.113.201", Some("phone-id")),
                Verdict::Accepted
            )
            .await
        );
        assert!(guess(&t, &laptop, Verdict::Accepted).await);
        // A known device is held by its own failures.
        for _ in 0..5 {
            assert!(guess(&t, &phone, Verdict::Rejected).await);
        }
        assert!(!guess(&t, &phone, Verdict::Accepted).await);
        assert!(guess(&t, &laptop, Verdict::Accepted).await);
    }

    #[tokio::test]
    async fn a_fast_login_makes_the_device_known() {
        let t = BackoffThrottle::new(2, Duration::from_secs(300));
        for i in 0..4 {
            guess(
                &t,
                &attempt("alice", &format!("203.0.113.{i}"), None),
                Verdict::Rejected,
            )
            .await;
        }
        let phone = attempt("alice", "198.51.100.7", Some("phone-id"));
        assert!(admitted(&t, &phone).await.is_none());
        t.logged_in(&phone);
        assert!(guess(&t, &phone, Verdict::Accepted).await);
    }

    #[derive(Debug)]
    struct OneDevice;

    #[async_trait]
    impl KnownDevices for OneDevice {
        async fn is_known(&self, account: &str, id: &str) -> bool {
            account == "alice" && id == "phone-id"
        }
    }

    #[tokio::test]
    async fn known_devices_from_a_store_are_asked_only_for_held_strangers() {
        let t = BackoffThrottle::new(2, Duration::from_secs(300))
            .with_known_devices(Arc::new(OneDevice));
        for i in 0..4 {
            guess(
                &t,
                &attempt("alice", &format!("203.0.113.{i}"), Some("x")),
                Verdict::Rejected,
            )
            .await;
        }
        assert!(
            guess(
                &t,
                &attempt("alice", "198.51.100.1", Some("phone-id")),
                Verdict::Accepted
            )
            .await
        );
        assert!(
            !guess(
                &t,
                &attempt("alice", "198.51.100.2", Some("other")),
                Verdict::Accepted
            )
            .await
        );
    }

    #[tokio::test]
    async fn the_backoff_doubles_and_is_forgotten() {
        let t = BackoffThrottle::new(1, Duration::from_secs(1));
        let a = attempt("alice", "192.0.2.1", None);
        assert!(guess(&t, &a, Verdict::Rejected).await);
        match t.admit(&a).await {
            Admission::Hold { retry_after } => assert!(retry_after <= Duration::from_secs(1)),
            Admission::Admit(_) => panic!("admitted in backoff"),
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(
            guess(&t, &a, Verdict::Accepted).await,
            "forgotten after max_backoff"
        );
        let off = BackoffThrottle::new(0, Duration::from_secs(1));
        for _ in 0..10 {
            assert!(guess(&off, &a, Verdict::Rejected).await);
        }
    }

    #[test]
    fn sources_group_ipv6_by_64_and_unmap_ipv4() {
        let of = |s: &str| SourceKey::of(s.parse().unwrap());
        assert_eq!(of("2001:db8::1"), of("2001:db8::ffff:1"));
        assert_ne!(of("2001:db8::1"), of("2001:db8:0:1::1"));
        assert_eq!(of("::ffff:192.0.2.1"), of("192.0.2.1"));
    }
}
