//! Slots for connections that have not authenticated yet, counted per source address.
//!
//! Without a cap, one address could open `max_connections` idle connections and lock every
//! other client out until the auth timeout. IPv4 addresses count one by one; IPv6 addresses by
//! their /64, since one subscriber usually holds a whole /64 and can pick any address in it.
//! A slot is released when its connection authenticates or closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

// The same unit as the login throttle's and the log budget's (an IPv4 address, an IPv6 /64).
use sasl2_fast::sasl2::throttle::SourceKey as Source;

/// Unauthenticated connections per source, at most `max` each.
#[derive(Debug)]
pub struct PreAuthSlots {
    max: u32,
    counts: Mutex<HashMap<Source, u32>>,
}

/// One unauthenticated connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct PreAuthSlot {
    slots: Arc<PreAuthSlots>,
    source: Source,
}

impl PreAuthSlots {
    /// At most `max` unauthenticated connections per source.
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(PreAuthSlots {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or `None` if its source has `max` already.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<PreAuthSlot> {
        let source = Source::of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(source).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PreAuthSlot {
            slots: Arc::clone(self),
            source,
        })
    }

    /// Unauthenticated connections now, from all sources (for `host ctl stats`).
    pub fn total(&self) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.values().sum()
    }

    /// Unauthenticated connections from `ip`'s source now.
    pub fn held_by(&self, ip: IpAddr) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&Source::of(ip)).copied().unwrap_or(0)
    }
}

impl Drop for PreAuthSlot {
    fn drop(&mut self) {
        let mut counts = self
            .slots
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.source); // the map holds only sources with connections
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_per_ipv6_64() {
        let slots = PreAuthSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = slots.try_take(a).unwrap();
        let _s2 = slots.try_take(a).unwrap();
        assert!(slots.try_take(a).is_none(), "a third from one address");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(
            slots.try_take(mapped).is_none(),
            "the same address, IPv4-mapped"
        );
        assert!(
            slots.try_take(b).is_some(),
            "another address is not affected"
        );
        drop(s1);
        assert!(slots.try_take(a).is_some(), "a freed slot is reusable");

        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _x = slots.try_take(x).unwrap();
        let _y = slots.try_take(y).unwrap();
        assert!(slots.try_take(x).is_none(), "the same /64");
        assert!(slots.try_take(z).is_some(), "another /64");
        assert_eq!(slots.held_by(y), 2);
    }
}
