//! Failed-login throttling for password mechanisms, per source address and per account.
//!
//! After `failures` failed password logins from one source (an IPv4 address or an IPv6 /64)
//! or for one account, further password attempts from that source or for that account are
//! answered `temporary-auth-failure` without running the mechanism, for a backoff that starts
//! at one second and doubles with each failure past the threshold, up to `max_backoff`. A
//! failure count is forgotten after `max_backoff` without failures, and an account's on a
//! successful login (a source's is not: an attacker with an account of its own could clear it
//! between guesses).
//!
//! FAST logins are never held back: a token is a 256-bit secret nobody guesses, so an attack
//! on alice's password must not lock out alice's FAST clients (issue 11 item 3). The password
//! of an attacked account is held back for everyone, including alice; that is the price of
//! stopping the guessing, and it is bounded by `max_backoff`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use minidom::Element;
use sasl2_fast::xmpp::ns;

use crate::pre_auth::Source;

/// Entries kept at most per map; beyond it, the oldest quiet ones are dropped (an attacker
/// spraying addresses or account names must not grow memory without bound).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

/// The throttle of one host.
#[derive(Debug)]
pub struct LoginThrottle {
    failures: u32,
    max_backoff: Duration,
    sources: Mutex<HashMap<Source, Record>>,
    accounts: Mutex<HashMap<String, Record>>,
}

impl LoginThrottle {
    /// Backoff after `failures` failures (0 turns throttling off), at most `max_backoff`.
    pub fn new(failures: u32, max_backoff: Duration) -> Self {
        LoginThrottle {
            failures,
            max_backoff,
            sources: Mutex::new(HashMap::new()),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// How long password logins from `ip` or for `account` are still held back, if at all.
    pub fn blocked(&self, ip: IpAddr, account: Option<&str>) -> Option<Duration> {
        if self.failures == 0 {
            return None;
        }
        let now = Instant::now();
        let left = |r: Option<&Record>| {
            r.and_then(|r| r.blocked_until.checked_duration_since(now))
                .filter(|d| !d.is_zero())
        };
        let by_source = left(lock(&self.sources).get(&Source::of(ip)));
        let by_account = account.and_then(|a| left(lock(&self.accounts).get(a)));
        by_source.max(by_account)
    }

    /// Records a failed password login.
    pub fn failed(&self, ip: IpAddr, account: Option<&str>) {
        if self.failures == 0 {
            return;
        }
        let now = Instant::now();
        self.bump(&mut lock(&self.sources), Source::of(ip), now);
        if let Some(a) = account {
            self.bump(&mut lock(&self.accounts), a.to_owned(), now);
        }
    }

    /// Records a successful login of `account`: its count starts again.
    pub fn succeeded(&self, account: &str) {
        lock(&self.accounts).remove(account);
    }

    fn bump<K: std::hash::Hash + Eq>(&self, map: &mut HashMap<K, Record>, key: K, now: Instant) {
        if map.len() >= MAX_ENTRIES {
            let forget = self.max_backoff;
            map.retain(|_, r| now.duration_since(r.last_failure) < forget);
            if map.len() >= MAX_ENTRIES {
                map.clear(); // under a spray, forgetting is better than growing
            }
        }
        let r = map.entry(key).or_insert(Record {
            failures: 0,
            last_failure: now,
            blocked_until: now,
        });
        if now.duration_since(r.last_failure) >= self.max_backoff {
            r.failures = 0;
        }
        r.failures = r.failures.saturating_add(1);
        r.last_failure = now;
        if r.failures >= self.failures {
            let doublings = (r.failures - self.failures).min(20);
            let backoff = Duration::from_secs(1 << doublings).min(self.max_backoff);
            r.blocked_until = now + backoff;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `el` starts a password login (SASL2 `<authenticate>` or RFC 6120 `<auth>` with a
/// mechanism that is not HT-*), and the account it names when the initial response says
/// (PLAIN's authcid, SCRAM's `n=`), normalized. `None` for anything else (FAST included).
pub fn password_attempt(el: &Element) -> Option<Option<String>> {
    let (mechanism, ir) = if el.is("authenticate", ns::SASL2) {
        let ir = el
            .get_child("initial-response", ns::SASL2)
            .map(|c| c.text());
        (el.attr("mechanism")?, ir)
    } else if el.is("auth", ns::SASL) {
        (el.attr("mechanism")?, Some(el.text()))
    } else {
        return None;
    };
    if mechanism.starts_with("HT-") {
        return None;
    }
    let bytes = ir.and_then(|t| {
        let t: String = t.split_ascii_whitespace().collect();
        base64::engine::general_purpose::STANDARD.decode(t).ok()
    });
    let user = bytes.and_then(|b| username_in(mechanism, &b));
    Some(user.and_then(|u| sasl2_fast::sasl2::accounts::normalize_username(&u)))
}

/// The authentication identity in a PLAIN or SCRAM initial response.
fn username_in(mechanism: &str, ir: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(ir).ok()?;
    if mechanism == "PLAIN" {
        // authzid NUL authcid NUL password
        let mut parts = s.split('\0');
        let _authzid = parts.next()?;
        let authcid = parts.next()?;
        return Some(authcid.split('@').next()?.to_owned());
    }
    if mechanism.starts_with("SCRAM-") {
        // gs2-cbind-flag "," [authzid] "," "n=" saslname "," ...
        let bare = s.splitn(3, ',').nth(2)?;
        let name = bare.split(',').next()?.strip_prefix("n=")?;
        return Some(name.replace("=2C", ",").replace("=3D", "="));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(mechanism: &str, ir: &[u8]) -> Element {
        let b64 = base64::engine::general_purpose::STANDARD.encode(ir);
        format!(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mechanism}'>\
             <initial-response>{b64}</initial-response></authenticate>"
        )
        .parse()
        .unwrap()
    }

    #[test]
    fn finds_the_account_of_password_attempts_and_skips_fast() {
        assert_eq!(
            password_attempt(&auth("PLAIN", b"\0Alice\0pw")),
            Some(Some("alice".into()))
        );
        assert_eq!(
            password_attempt(&auth("SCRAM-SHA-256", b"n,,n=alice,r=abc")),
            Some(Some("alice".into()))
        );
        assert_eq!(
            password_attempt(&auth(
                "SCRAM-SHA-256-PLUS",
                b"p=tls-exporter,a=x,n=bob,r=abc"
            )),
            Some(Some("bob".into()))
        );
        assert_eq!(
            password_attempt(&auth("SCRAM-SHA-1", b"garbage")),
            Some(None)
        );
        assert_eq!(
            password_attempt(&auth("HT-SHA-256-NONE", b"alice\0mac")),
            None
        );
    }

    #[test]
    fn backs_off_per_source_and_per_account() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..2 {
            t.failed(a, Some("alice"));
        }
        assert_eq!(t.blocked(a, Some("alice")), None);
        t.failed(a, Some("alice"));
        assert!(t.blocked(a, Some("bob")).is_some(), "the source");
        assert!(t.blocked(b, Some("alice")).is_some(), "the account");
        assert_eq!(t.blocked(b, Some("bob")), None);
        t.succeeded("alice");
        assert_eq!(t.blocked(b, Some("alice")), None);
        assert!(
            t.blocked(a, None).is_some(),
            "a success does not clear the source"
        );
        assert_eq!(
            LoginThrottle::new(0, Duration::from_secs(1)).blocked(a, None),
            None
        );
    }
}
