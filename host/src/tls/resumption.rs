//! TLS session resumption: stateless session tickets (`[server] tls_session_tickets`).
//!
//! With tickets on, the server keeps no per-session state: the session is sealed into the
//! ticket the client stores, so any number of clients can resume (rustls' server-side cache,
//! used when tickets are off, holds 256 sessions; the 257th client pays a full handshake).
//!
//! The numbers, and why:
//! - **Key rotation: every 6 hours** (rustls' `TicketRotator` behind
//!   `rustls::crypto::ring::Ticketer::new()`, ChaCha20-Poly1305). A key seals tickets for 6
//!   hours, then only opens them for 6 more, then is erased: a stolen ticket key exposes at
//!   most 12 hours of resumable sessions (the forward-secrecy cost of tickets).
//! - **Ticket lifetime: 2 hours** ([`TICKET_LIFETIME_SECS`]), well under the rotation period,
//!   so a ticket is never refused during its advertised lifetime because its key rolled over
//!   (a key issued at t still opens tickets until at least t + 6 h). The lifetime is advertised
//!   to clients and also enforced here: the issue time is sealed inside the ticket and checked
//!   on every decrypt, so an old ticket is refused even while its key is still kept.
//!   A reconnecting XMPP client (network change, app woken up) comes back within minutes;
//!   after 2 hours a full handshake is an acceptable cost.
//! - **One ticket per handshake** ([`TICKETS_PER_HANDSHAKE`]): an XMPP client holds one
//!   connection at a time and gets a fresh ticket on every (resumed) connection, so a second
//!   ticket would only cost the server an encryption and ~200 bytes on the wire per login.
//!
//! Channel binding is unaffected by resumption (see [`super::tls_info`]): EXPR uses the
//! resumed connection's own exporter and ENDP the server's own certificate.
//!
//! TLS 0-RTT note: rustls 0.23's server only accepts early data with *stateful* resumption
//! (`max_early_data_size > 0 && !ticketer.enabled()` in `server/tls13.rs`), so early data
//! needs [`enable_stateless_tickets`] off or a newer rustls.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_rustls::rustls;
use tokio_rustls::rustls::server::ProducesTickets;

/// Advertised and enforced lifetime of a session ticket, in seconds (2 hours).
pub const TICKET_LIFETIME_SECS: u32 = 2 * 60 * 60;

/// Ticket key rotation period of rustls' ring `Ticketer`, in seconds (6 hours; fixed there).
pub const TICKET_KEY_ROTATION_SECS: u32 = 6 * 60 * 60;

/// TLS 1.3 `NewSessionTicket` messages sent after each handshake.
pub const TICKETS_PER_HANDSHAKE: usize = 1;

/// A ticket issued this far in the future (clock step backwards) is still accepted.
const CLOCK_SKEW_SECS: u64 = 60;

/// Turns stateless session tickets on in `config` (TLS 1.3 and TLS 1.2 tickets).
pub fn enable_stateless_tickets(config: &mut rustls::ServerConfig) -> Result<(), rustls::Error> {
    config.ticketer = Arc::new(LimitedLifetime {
        inner: rustls::crypto::ring::Ticketer::new()?,
        lifetime: TICKET_LIFETIME_SECS,
    });
    config.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
    // The 256-entry session cache stays, for TLS 1.2 clients that offer no ticket extension.
    Ok(())
}

/// A ticketer whose tickets expire after `lifetime` seconds, whatever the inner ticketer's
/// key schedule: the issue time is sealed (encrypted and authenticated) with the session, so
/// it cannot be altered by the client, and checked before the session is handed to rustls.
#[derive(Debug)]
struct LimitedLifetime {
    inner: Arc<dyn ProducesTickets>,
    lifetime: u32,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl LimitedLifetime {
    fn encrypt_at(&self, plain: &[u8], now: u64) -> Option<Vec<u8>> {
        let mut sealed = Vec::with_capacity(8 + plain.len());
        sealed.extend_from_slice(&now.to_be_bytes());
        sealed.extend_from_slice(plain);
        self.inner.encrypt(&sealed)
    }

    fn decrypt_at(&self, cipher: &[u8], now: u64) -> Option<Vec<u8>> {
        let mut plain = self.inner.decrypt(cipher)?;
        let issued = u64::from_be_bytes(plain.get(..8)?.try_into().ok()?);
        let fresh = issued <= now.saturating_add(CLOCK_SKEW_SECS)
            && now.saturating_sub(issued) <= u64::from(self.lifetime);
        if !fresh {
            return None;
        }
        plain.drain(..8);
        Some(plain)
    }
}

impl ProducesTickets for LimitedLifetime {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime.min(self.inner.lifetime())
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.encrypt_at(plain, now_secs())
    }

    /// `cipher` is attacker-controlled: the inner AEAD authenticates it before the issue time
    /// is read, and a short plaintext is refused, never indexed out of bounds.
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.decrypt_at(cipher, now_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticketer() -> LimitedLifetime {
        LimitedLifetime {
            inner: rustls::crypto::ring::Ticketer::new().unwrap(),
            lifetime: TICKET_LIFETIME_SECS,
        }
    }

    #[test]
    fn ticket_opens_within_its_lifetime_only() {
        let t = ticketer();
        let now = now_secs();
        let c = t.encrypt_at(b"session", now).unwrap();
        assert_eq!(t.decrypt_at(&c, now).as_deref(), Some(&b"session"[..]));
        let last = now + u64::from(TICKET_LIFETIME_SECS);
        assert_eq!(t.decrypt_at(&c, last).as_deref(), Some(&b"session"[..]));
        assert_eq!(t.decrypt_at(&c, last + 1), None, "expired ticket accepted");
        // Issued "in the future" beyond the skew: refused too.
        assert_eq!(t.decrypt_at(&c, now - CLOCK_SKEW_SECS - 1), None);
    }

    #[test]
    fn forged_or_truncated_tickets_are_refused() {
        let t = ticketer();
        let mut c = t.encrypt_at(b"session", now_secs()).unwrap();
        assert_eq!(t.decrypt(&[]), None);
        assert_eq!(t.decrypt(&c[..c.len() - 1]), None);
        let last = c.len() - 1;
        c[last] ^= 1;
        assert_eq!(t.decrypt(&c), None);
        // Another server's key (a restart) does not open it.
        let c = t.encrypt(b"session").unwrap();
        assert_eq!(ticketer().decrypt(&c), None);
    }

    #[test]
    fn lifetime_is_well_under_the_key_rotation() {
        assert!(ticketer().lifetime() <= TICKET_KEY_ROTATION_SECS / 2);
    }
}
