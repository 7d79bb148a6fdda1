//! What a client's stream header means for authentication, the same for every host: `to` must
//! name the served domain, and `from` is an untrusted hint (S-29) that changes no offer.
//!
//! The FAST offer in particular never depends on `from` (S-2, S-4): Prosody advertises
//! `<fast>` only when `from` has a localpart, but an offer that depends on the claimed account
//! tells a prober which accounts exist and breaks the features a client caches for 0-RTT. A
//! `from` of another domain (or one that is no JID) is an `invalid-from` stream error (S-3);
//! one of this domain is kept in [`StreamInfo::from`], where the password mechanisms hold the
//! authorization identity to it (S-10), and is echoed as the `to` of the server's header
//! (RFC 6120 §4.7.2); a foreign or malformed one is never reflected.
//!
//! ```
//! use sasl2_fast::sasl2::ClientStreamHeader;
//! let h = ClientStreamHeader::check("example.com", Some("example.com"), Some("juliet@example.com"))
//!     .unwrap();
//! assert_eq!(h.reply_to(), Some("juliet@example.com"));
//! assert_eq!(h.stream_info(None).from.unwrap().to_string(), "juliet@example.com");
//! let e = ClientStreamHeader::check("example.com", Some("example.com"), Some("romeo@evil.example"))
//!     .unwrap_err();
//! assert_eq!(e.condition.to_string(), "invalid-from");
//! ```

use jid::{BareJid, Jid};
use xmpp_parsers::stream_error::{DefinedCondition, StreamError};

use super::{StreamInfo, TlsInfo};

/// A client stream header accepted for a domain.
#[derive(Debug, Clone)]
pub struct ClientStreamHeader {
    domain: String,
    from: Option<(String, BareJid)>,
}

impl ClientStreamHeader {
    /// Judges the `to` and `from` of a client's stream header for a server of `domain`:
    /// `host-unknown` when `to` is missing or names another domain (RFC 6120 §4.9.3.6), then
    /// `invalid-from` when `from` is present but not a JID of `domain` (S-3).
    pub fn check(domain: &str, to: Option<&str>, from: Option<&str>) -> Result<Self, StreamError> {
        check_stream_to(domain, to)?;
        let jid = stream_from(domain, from)?;
        Ok(ClientStreamHeader {
            domain: domain.to_owned(),
            from: from.zip(jid).map(|(raw, jid)| (raw.to_owned(), jid)),
        })
    }

    /// The stream `from` as a bare JID of this domain, if the client sent one.
    pub fn from(&self) -> Option<&BareJid> {
        self.from.as_ref().map(|(_, j)| j)
    }

    /// The `to` of the server's answering header: the client's `from`, as sent.
    pub fn reply_to(&self) -> Option<&str> {
        self.from.as_ref().map(|(raw, _)| raw.as_str())
    }

    /// The [`StreamInfo`] of this stream: the domain, `from`, and the TLS facts of the
    /// connection if it is encrypted (`None` on a plaintext stream).
    pub fn stream_info(&self, tls: Option<TlsInfo>) -> StreamInfo {
        let info = StreamInfo::new(self.domain.clone()).with_from(self.from().cloned());
        match tls {
            Some(tls) => info.with_tls(tls),
            None => info,
        }
    }
}

/// `host-unknown` unless `to` names `domain` (ASCII case-insensitive, a trailing dot allowed).
pub fn check_stream_to(domain: &str, to: Option<&str>) -> Result<(), StreamError> {
    match to {
        Some(t) if t.trim_end_matches('.').eq_ignore_ascii_case(domain) => Ok(()),
        _ => Err(StreamError::new(
            DefinedCondition::HostUnknown,
            "en",
            "this server does not serve that domain",
        )),
    }
}

/// The stream `from` as a bare JID when it is a JID of `domain` (then echo it as the `to` of
/// the server's header); `None` when absent; `invalid-from` otherwise (S-3, RFC 6120
/// §4.9.3.9).
pub fn stream_from(domain: &str, from: Option<&str>) -> Result<Option<BareJid>, StreamError> {
    let Some(raw) = from else { return Ok(None) };
    match Jid::new(raw).map(|j| j.to_bare()) {
        Ok(j) if j.domain().as_str() == domain => Ok(Some(j)),
        _ => Err(StreamError::new(
            DefinedCondition::InvalidFrom,
            "en",
            "'from' does not match this domain",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// S-3: only JIDs of the served domain are accepted and echoed; `to` must name it.
    #[test]
    fn header_rules() {
        let ok = ClientStreamHeader::check("localhost", Some("LOCALHOST."), None).unwrap();
        assert_eq!(ok.reply_to(), None);
        assert!(ok.stream_info(None).from.is_none());
        let ok = ClientStreamHeader::check("localhost", Some("localhost"), Some("a@localhost/r"))
            .unwrap();
        assert_eq!(ok.reply_to(), Some("a@localhost/r"));
        assert_eq!(ok.from().unwrap().to_string(), "a@localhost");
        for from in ["a@elsewhere", "", "a@", "@localhost"] {
            let e = ClientStreamHeader::check("localhost", Some("localhost"), Some(from));
            assert_eq!(
                e.unwrap_err().condition,
                DefinedCondition::InvalidFrom,
                "{from:?}"
            );
        }
        for to in [None, Some("elsewhere"), Some("")] {
            let e = ClientStreamHeader::check("localhost", to, None).unwrap_err();
            assert_eq!(e.condition, DefinedCondition::HostUnknown, "{to:?}");
        }
    }
}
