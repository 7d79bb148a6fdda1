//! A small XML element tree and a bounded, incremental XMPP stream reader.
//!
//! The SASL2 negotiator is sans-IO: elements go in, elements come out. [`Element`] is the
//! value it trades in. It is deliberately small (name, namespace, attributes, children, text)
//! because that is all stream negotiation needs, and because every byte of it is
//! attacker-controlled until authentication succeeds.
//!
//! [`reader::StreamReader`] turns bytes from a socket into stream events with explicit limits
//! (bytes per top-level element, nesting depth, attributes), so a host never buffers unbounded
//! input on behalf of an unauthenticated peer.

pub mod reader;

use std::fmt::{self, Write as _};

/// Namespace of client-to-server stanzas (RFC 6120).
pub const NS_CLIENT: &str = "jabber:client";
/// Namespace of the stream wrapper and its features (RFC 6120).
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
/// Namespace of stream error conditions (RFC 6120 §4.9.3).
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Namespace of STARTTLS (RFC 6120 §5).
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// Namespace of SASL conditions (RFC 6120 §6.5), reused inside SASL2 `<failure>`.
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Namespace of SASL2 (XEP-0388).
pub const NS_SASL2: &str = "urn:xmpp:sasl:2";
/// Namespace of the channel-binding capability list (XEP-0440).
pub const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// Namespace of FAST (XEP-0484).
pub const NS_FAST: &str = "urn:xmpp:fast:0";
/// Namespace of Bind 2 (XEP-0386).
pub const NS_BIND2: &str = "urn:xmpp:bind:0";
/// Namespace of RFC 6120 resource binding.
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Namespace of stanza error conditions (RFC 6120 §8.3.3).
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// Namespace of XMPP ping (XEP-0199).
pub const NS_PING: &str = "urn:xmpp:ping";

/// A child of an [`Element`]: another element or a run of text.
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (already unescaped).
    Text(String),
}

/// An XML element with a resolved namespace.
///
/// Attribute names are stored as written without a namespace, except `xml:lang`, which keeps
/// its `xml:` prefix. That is enough for everything XMPP negotiation uses. The stream reader
/// stores a prefixed attribute (`p:a`) after the declaration of its prefix (`xmlns:p`), so the
/// element serializes back to namespace-well-formed XML.
#[derive(Clone, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    /// A new empty element `name` in namespace `ns`.
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder form of [`Element::set_attr`].
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder form of [`Element::push_child`].
    pub fn with_child(mut self, child: Element) -> Self {
        self.push_child(child);
        self
    }

    /// Builder form of [`Element::push_text`].
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.push_text(text);
        self
    }

    /// Local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Namespace URI.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// True if this element is `name` in `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// The value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All attributes in document order.
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets (or replaces) attribute `name`.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    /// Appends a child element.
    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends character data.
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        if let Some(Node::Text(prev)) = self.children.last_mut() {
            prev.push_str(&text);
        } else {
            self.children.push(Node::Text(text));
        }
    }

    /// All child nodes in document order.
    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// Child elements in document order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element `name` in `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|c| c.is(name, ns))
    }

    /// The concatenated character data directly inside this element.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// True if the element has neither children nor text.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Serializes the element; the namespace is declared with `xmlns` where it differs from
    /// `parent_ns` (pass `None` for a standalone element).
    pub fn write_xml(&self, out: &mut String, parent_ns: Option<&str>) {
        out.push('<');
        out.push_str(&self.name);
        if parent_ns != Some(self.ns.as_str()) {
            out.push_str(" xmlns='");
            escape_into(out, &self.ns);
            out.push('\'');
        }
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("='");
            escape_into(out, v);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_xml(out, Some(&self.ns)),
                Node::Text(t) => escape_into(out, t),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// Serializes the element as a top-level child of a stream whose default namespace is
    /// `stream_ns` (e.g. `jabber:client`): elements in that namespace omit `xmlns`.
    pub fn to_xml_in(&self, stream_ns: &str) -> String {
        let mut s = String::new();
        self.write_xml(&mut s, Some(stream_ns));
        s
    }

    /// Serializes the element standalone (always declares its namespace).
    pub fn to_xml(&self) -> String {
        let mut s = String::new();
        self.write_xml(&mut s, None);
        s
    }
}

impl fmt::Debug for Element {
    // Debug shows the XML, which is what one wants in a test failure, except that the secret of
    // a FAST `<token>` is redacted: a `<success>` must be safe to debug-print (F-24).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted().to_xml())
    }
}

impl Element {
    /// A copy with secrets replaced by `[redacted]`: the `token` attribute of FAST `<token>`
    /// elements, and SASL payloads (`<initial-response>`, `<response>`, `<challenge>`,
    /// `<additional-data>`), which carry proofs.
    pub fn redacted(&self) -> Element {
        let mut e = self.clone();
        e.redact_in_place();
        e
    }

    fn redact_in_place(&mut self) {
        if self.is("token", NS_FAST) && self.attr("token").is_some() {
            self.set_attr("token", "[redacted]");
        }
        if self.ns == NS_SASL2
            && matches!(
                self.name.as_str(),
                "initial-response" | "response" | "challenge" | "additional-data"
            )
            && !self.children.is_empty()
        {
            self.children = vec![Node::Text("[redacted]".into())];
        }
        for c in &mut self.children {
            if let Node::Element(e) = c {
                e.redact_in_place();
            }
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Element(e) => e.fmt(f),
            Node::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// Escapes text for use in character data or a single-quoted attribute value.
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // Character references, so a parser's end-of-line and attribute-value
            // normalization (XML 1.0 §2.11, §3.3.3) gives back exactly what was written.
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 => {
                // Not representable in XML 1.0; never emitted by this crate, but a host may pass
                // attacker-controlled text through, so drop it rather than emit invalid XML.
            }
            c => {
                let _ = out.write_char(c);
            }
        }
    }
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

/// Escapes `s` into a new string.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_inherited_namespaces() {
        let e =
            Element::new("authentication", NS_SASL2)
                .with_child(Element::new("mechanism", NS_SASL2).with_text("SCRAM-SHA-256"))
                .with_child(Element::new("inline", NS_SASL2).with_child(
                    Element::new("fast", NS_FAST).with_child(
                        Element::new("mechanism", NS_FAST).with_text("HT-SHA-256-NONE"),
                    ),
                ));
        assert_eq!(
            e.to_xml(),
            "<authentication xmlns='urn:xmpp:sasl:2'><mechanism>SCRAM-SHA-256</mechanism>\
             <inline><fast xmlns='urn:xmpp:fast:0'><mechanism>HT-SHA-256-NONE</mechanism></fast>\
             </inline></authentication>"
        );
    }

    #[test]
    fn escapes_text_and_attributes() {
        let e = Element::new("x", "ns")
            .with_attr("a", "'<&>\"")
            .with_text("a<b&c");
        assert_eq!(
            e.to_xml(),
            "<x xmlns='ns' a='&apos;&lt;&amp;&gt;&quot;'>a&lt;b&amp;c</x>"
        );
    }

    #[test]
    fn debug_output_redacts_tokens_and_sasl_payloads() {
        let s = Element::new("success", NS_SASL2)
            .with_child(Element::new("additional-data", NS_SASL2).with_text("cHJvb2Y="))
            .with_child(
                Element::new("token", NS_FAST)
                    .with_attr("token", "secret-token:fast-abc")
                    .with_attr("expiry", "2026-01-01T00:00:00Z"),
            );
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("secret-token"), "{dbg}");
        assert!(!dbg.contains("cHJvb2Y="), "{dbg}");
        assert!(dbg.contains("expiry='2026-01-01T00:00:00Z'"));
        // The real serialization is untouched.
        assert!(s.to_xml().contains("secret-token:fast-abc"));
    }

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate_utf8("abc", 2), "ab");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("€", 2), "");
    }

    #[test]
    fn stream_level_elements_omit_the_stream_namespace() {
        let iq = Element::new("iq", NS_CLIENT).with_attr("type", "result");
        assert_eq!(iq.to_xml_in(NS_CLIENT), "<iq type='result'/>");
    }
}
