//! The crate's thin layer over the xmpp-rs types it speaks: namespace names, a `Debug`/`Display`
//! wrapper that keeps secrets out of logs, and bounded text.
//!
//! Elements are [`minidom::Element`]s and, where a type exists, values of [`xmpp_parsers`]
//! types. minidom's derived `Debug` prints every attribute and text node, including a FAST
//! `<token token='...'>` or a SASL proof, so nothing in this crate ever debug-prints an element
//! directly: it goes through [`Redacted`].

use std::fmt;

use minidom::{Element, Node};

pub use xmpp_parsers::ns;

/// Local names of SASL payload elements whose text is a proof or a secret, per namespace.
fn is_secret_payload(el: &Element) -> bool {
    (el.has_ns(ns::SASL2)
        && matches!(
            el.name(),
            "initial-response" | "response" | "challenge" | "additional-data"
        ))
        || (el.has_ns(ns::SASL)
            && matches!(el.name(), "auth" | "response" | "challenge" | "success"))
}

/// Shows an element as XML with its secrets replaced by `[redacted]`: the `token` attribute
/// of a FAST `<token>`, and the text of SASL payloads (`<initial-response>`, `<response>`,
/// `<challenge>`, `<additional-data>`, RFC 6120 `<auth>`/`<success>`), at any depth.
///
/// Use it wherever an element could reach a log line, a panic message or an error (F-24:
/// tokens are password-equivalent).
///
/// ```
/// use sasl2_fast::minidom::Element;
/// use sasl2_fast::xmpp::Redacted;
/// let t: Element = "<token xmlns='urn:xmpp:fast:0' token='secret-token:x' expiry='2026-01-01T00:00:00Z'/>"
///     .parse()
///     .unwrap();
/// assert!(!format!("{:?}", Redacted(&t)).contains("secret-token"));
/// ```
pub struct Redacted<'a>(pub &'a Element);

impl Redacted<'_> {
    fn copy(&self) -> Element {
        let mut e = self.0.clone();
        redact_in_place(&mut e);
        e
    }
}

fn redact_in_place(el: &mut Element) {
    if el.is("token", ns::FAST) && el.attr("token").is_some() {
        el.set_attr(
            rxml::Namespace::NONE,
            rxml::NcName::try_from("token").expect("valid name"),
            "[redacted]",
        );
    }
    if is_secret_payload(el) && el.nodes().next().is_some() {
        el.take_nodes();
        el.append_text("[redacted]");
    }
    for node in el.nodes_mut() {
        if let Node::Element(child) = node {
            redact_in_place(child);
        }
    }
}

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from(&self.copy()))
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `Debug` for a list of elements, each [`Redacted`].
pub(crate) struct RedactedList<'a>(pub &'a [Element]);

impl fmt::Debug for RedactedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(Redacted)).finish()
    }
}

/// `bytes` as lowercase hex, by table: `format!` per byte cost more than what it formats on
/// the login path (a stream id per stream, a client label per FAST event).
pub fn lower_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for x in bytes {
        s.push(char::from(HEX[usize::from(x >> 4)]));
        s.push(char::from(HEX[usize::from(x & 15)]));
    }
    s
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary:
/// how attacker-supplied labels are bounded without splitting a UTF-8 sequence.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A child element `name` in `ns` with `text` (what minidom's builder spells in three calls).
pub(crate) fn text_child(name: &str, namespace: &str, text: impl Into<String>) -> Element {
    Element::builder(name, namespace)
        .append(text.into())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_hex_is_what_format_writes() {
        let bytes: Vec<u8> = (0..=255).collect();
        let by_format: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::lower_hex(&bytes), by_format);
        assert_eq!(super::lower_hex(&[]), "");
    }

    #[test]
    fn redacts_tokens_and_sasl_payloads_at_any_depth() {
        let s: Element = "<success xmlns='urn:xmpp:sasl:2'>\
            <additional-data>cHJvb2Y=</additional-data>\
            <authorization-identifier>a@example.com</authorization-identifier>\
            <token xmlns='urn:xmpp:fast:0' token='secret-token:fast-abc' expiry='2026-01-01T00:00:00Z'/>\
            </success>"
            .parse()
            .unwrap();
        let dbg = format!("{:?}", Redacted(&s));
        assert!(!dbg.contains("secret-token"), "{dbg}");
        assert!(!dbg.contains("cHJvb2Y="), "{dbg}");
        assert!(dbg.contains("2026-01-01T00:00:00Z"), "{dbg}");
        assert!(dbg.contains("a@example.com"), "{dbg}");
        // The element itself is untouched.
        assert!(String::from(&s).contains("secret-token:fast-abc"));
        // The positive control: minidom's own Debug does show the secret, which is why the
        // crate never uses it on elements.
        assert!(format!("{s:?}").contains("secret-token"));
    }

    #[test]
    fn redacts_rfc6120_sasl_payloads() {
        let a: Element =
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>"
                .parse()
                .unwrap();
        let d = Redacted(&a).to_string();
        assert!(!d.contains("AGFsaWNlAHB3"), "{d}");
        assert!(d.contains("PLAIN"), "{d}");
    }

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate_utf8("abc", 2), "ab");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("€", 2), "");
    }
}

/// `bytes` random bytes as lowercase hex: resource parts (Bind 2), stream ids, ids a host makes.
///
/// # Panics
/// If the OS random number generator fails (nothing safe can be done without it).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("OS random number generator");
    crate::xmpp::lower_hex(&b)
}

#[cfg(test)]
mod random_hex_tests {
    #[test]
    fn random_hex_is_lowercase_hex_of_the_length_asked_and_differs() {
        let a = super::random_hex(16);
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, super::random_hex(16));
        assert_eq!(super::random_hex(0), "");
    }
}
