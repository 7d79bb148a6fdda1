//! The stream around a connection's elements: our header (answering the peer's, with the
//! library's `to`/`from` rules), `<stream:features>` before and after login, and
//! `<stream:error>` with the footer.

use sasl2_fast::sasl2::{Negotiator, StreamInfo};
use sasl2_fast::stream::{STREAM_FOOTER, StreamHeader, stream_header_xml, write_stream_error};
use sasl2_fast::xmpp::ns;
use tracing::info;
use xmpp_parsers::stream_error::{DefinedCondition, StreamError};

use super::{Conn, Flow};

/// `<starttls/>` as `write_element` writes it inside `<features>` (pinned by
/// `features_are_written_as_the_element_would_be`).
const STARTTLS_XML: &str = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
/// `<starttls><required/></starttls>`, likewise.
const STARTTLS_REQUIRED_XML: &str =
    "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>";

/// Writes `<stream:features>` around already serialized children. The negotiator's part comes
/// serialized from its offer cache: building and writing the features as elements for each
/// stream was a fifth of the host's non-TLS instructions per STARTTLS login (callgrind).
/// The `stream:` prefix is the one the stream header declares, as `write_element` writes it.
fn write_features(out: &mut String, children: &[&str]) {
    if children.iter().all(|c| c.is_empty()) {
        out.push_str("<stream:features/>");
        return;
    }
    const OPEN: &str = "<stream:features>";
    const CLOSE: &str = "</stream:features>";
    // One allocation for the whole reply instead of growing it child by child.
    out.reserve(OPEN.len() + children.iter().map(|c| c.len()).sum::<usize>() + CLOSE.len());
    out.push_str(OPEN);
    for c in children {
        out.push_str(c);
    }
    out.push_str(CLOSE);
}

impl Conn {
    pub(super) fn open_stream(&mut self, to: Option<&str>) {
        let id = sasl2_fast::xmpp::random_hex(16);
        self.out.push_str(&stream_header_xml(
            ns::JABBER_CLIENT,
            Some(&self.shared.server.domain),
            to,
            Some(&id),
            Some("1.0"),
            Some("en"),
        ));
        self.header_sent = true;
    }

    /// Sends `</stream:stream>` once.
    pub(super) fn close_stream(&mut self) {
        if self.stream_open {
            if !self.header_sent {
                self.open_stream(None);
            }
            self.out.push_str(STREAM_FOOTER);
            self.stream_open = false;
        }
    }

    /// Writes a stream error and the footer; the caller closes.
    pub(super) fn stream_error(&mut self, condition: DefinedCondition, text: Option<&str>) -> Flow {
        if self.authed.is_some() {
            info!(%condition, "stream error");
        } else {
            crate::budgeted!(self.shared.pre_auth_log, self.peer.ip(), info, %condition, "stream error");
        }
        if !self.stream_open {
            return Flow::Close;
        }
        if !self.header_sent {
            self.open_stream(None);
        }
        write_stream_error(&mut self.out, ns::JABBER_CLIENT, condition, text);
        self.close_stream();
        Flow::Close
    }

    /// [`Conn::stream_error`] with the condition and text of a library stream error.
    pub(super) fn stream_error_of(&mut self, error: StreamError) -> Flow {
        let text = error.get_best_text(vec!["en"]).map(|(_, t)| t.clone());
        self.stream_error(error.condition, text.as_deref())
    }

    pub(super) fn on_header(&mut self, h: &StreamHeader) -> Flow {
        if self.header_sent {
            return self.stream_error(
                DefinedCondition::PolicyViolation,
                Some("unexpected stream header"),
            );
        }
        let domain = self.shared.server.domain.clone();
        // The library's rules for `from` (S-3, S-29): a JID of this domain is echoed as our
        // `to` (RFC 6120 §4.7.2); a foreign or malformed one is never reflected.
        let from = sasl2_fast::sasl2::stream_from(&domain, h.from());
        let echo = h.from().filter(|_| matches!(from, Ok(Some(_))));
        self.open_stream(echo);
        if h.default_ns() != ns::JABBER_CLIENT {
            return self.stream_error(
                DefinedCondition::InvalidNamespace,
                Some("only jabber:client is served"),
            );
        }
        if h.version().is_some_and(|v| !v.starts_with("1.")) {
            return self.stream_error(DefinedCondition::UnsupportedVersion, None);
        }
        if let Err(e) = sasl2_fast::sasl2::check_stream_to(&domain, h.to()) {
            return self.stream_error_of(e);
        }
        let from = match from {
            Ok(f) => f,
            // S-3 (RFC 6120 §4.9.3.9): a `from` of another domain, or not a JID at all.
            Err(e) => return self.stream_error_of(e),
        };

        if let Some(a) = &mut self.authed {
            if !std::mem::take(&mut a.restart_pending) {
                // SASL2 never restarts the stream (S-20).
                return self.stream_error(DefinedCondition::PolicyViolation, None);
            }
            // RFC 6120 §6.4.6: after SASL, a fresh stream with the post-authentication
            // features.
            self.post_auth_features();
            return Flow::Continue;
        }
        let info = StreamInfo::new(domain)
            .with_from(from)
            .with_plaintext_allowed(!self.shared.server.require_tls)
            .with_peer(self.peer)
            .with_zero_rtt(self.zero_rtt);
        // Moved, not copied: the channel-binding bytes are session key material.
        let info = match self.tls.take() {
            Some(t) => info.with_tls(t),
            None => info,
        };
        let negotiator = Negotiator::new(self.shared.sasl2.clone(), info);
        let starttls = match (!self.io.is_tls(), self.shared.server.require_tls) {
            (false, _) => "",
            (true, true) => STARTTLS_REQUIRED_XML,
            (true, false) => STARTTLS_XML,
        };
        write_features(&mut self.out, &[starttls, negotiator.features_xml()]);
        self.negotiator = Some(negotiator);
        Flow::Continue
    }

    /// `<stream:features>` after the RFC 6120 restart (R-4, the library's rules): resource
    /// binding unless one is bound, and no SASL of either kind.
    pub(super) fn post_auth_features(&mut self) {
        let features = sasl2_fast::sasl2::PostLoginFeatures::new(self.bound.is_some());
        self.out.push_str(features.xml());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minidom::Element;
    use sasl2_fast::stream::write_element;

    /// What the host wrote before the offer cache: the features built as one element and
    /// written with the stream writer. The hand-joined form must be byte for byte the same.
    #[test]
    fn features_are_written_as_the_element_would_be() {
        let mech = Element::builder("authentication", "urn:xmpp:sasl:2")
            .append(
                Element::builder("mechanism", "urn:xmpp:sasl:2")
                    .append("SCRAM-SHA-256")
                    .build(),
            )
            .build();
        let mut mech_xml = String::new();
        write_element(&mut mech_xml, &mech, ns::STREAM);
        for (starttls, required, sasl) in [
            (true, true, true),
            (true, false, true),
            (true, true, false),
            (false, false, true),
            (false, false, false),
        ] {
            let mut f = Element::builder("features", ns::STREAM);
            let mut starttls_xml = "";
            if starttls {
                let mut st = Element::builder("starttls", ns::TLS);
                if required {
                    st = st.append(Element::bare("required", ns::TLS));
                    starttls_xml = STARTTLS_REQUIRED_XML;
                } else {
                    starttls_xml = STARTTLS_XML;
                }
                f = f.append(st.build());
            }
            if sasl {
                f = f.append(mech.clone());
            }
            let mut expected = String::new();
            write_element(&mut expected, &f.build(), ns::JABBER_CLIENT);
            let mut got = String::new();
            write_features(
                &mut got,
                &[starttls_xml, if sasl { mech_xml.as_str() } else { "" }],
            );
            assert_eq!(
                got, expected,
                "starttls={starttls} required={required} sasl={sasl}"
            );
        }
    }
}
