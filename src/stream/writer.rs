//! Writing elements into a stream: what the reader reads back exactly.
//!
//! A top-level element whose namespace is the stream's default (`jabber:client`) carries no
//! `xmlns`; a child declares its namespace where it differs from its parent's. Elements of the
//! streams namespace (`<stream:features>`, `<stream:error>`) take the `stream:` prefix the
//! stream header declares, as RFC 6120's examples do. Attributes in
//! a namespace other than `xml` get a prefix declared on the element itself. Text and
//! attribute values are escaped, with `\t`, `\n` and `\r` as character references so a parser's
//! end-of-line and attribute-value normalization (XML 1.0 §2.11, §3.3.3) gives back exactly
//! what was written; characters XML 1.0 cannot carry are dropped rather than emitted.

use std::fmt::Write as _;

use minidom::{Element, Node};
use xmpp_parsers::stream_error::{DefinedCondition, StreamError};

use crate::xmpp::ns;

/// Escapes text for character data or a single-quoted attribute value. Characters XML 1.0
/// does not allow (C0 controls other than tab, newline and carriage return; U+FFFE, U+FFFF) are
/// dropped. Runs of plain text are copied whole: most text (base64, JIDs, namespaces) has no
/// character to escape, and copying it char by char was the writer's main cost.
fn escape_into(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut plain = 0; // start of the run not yet copied
    let mut i = 0;
    while i < bytes.len() {
        let (replacement, len) = match bytes[i] {
            b'<' => ("&lt;", 1),
            b'>' => ("&gt;", 1),
            b'&' => ("&amp;", 1),
            b'\'' => ("&apos;", 1),
            b'"' => ("&quot;", 1),
            b'\t' => ("&#9;", 1),
            b'\n' => ("&#10;", 1),
            b'\r' => ("&#13;", 1),
            0..=0x1f => ("", 1),
            // U+FFFE and U+FFFF in UTF-8.
            0xef if matches!(bytes.get(i + 1..i + 3), Some([0xbf, 0xbe | 0xbf])) => ("", 3),
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[plain..i]);
        out.push_str(replacement);
        i += len;
        plain = i;
    }
    out.push_str(&s[plain..]);
}

/// Writes `el`. `default_ns` is the default namespace in scope (`None`: none declared yet).
/// `in_stream`: `el` sits inside a stream whose header declares `xmlns:stream`, so elements of
/// the streams namespace are written `<stream:features>`, `<stream:error>`: RFC 6120's
/// examples, RFC 3920 §11.2.1 ("SHOULD generate only the 'stream:' prefix") and every peer
/// server write them so, and clients exist that match the literal prefix. A prefixed element
/// leaves the default namespace as it was, so its children compare against that.
fn write(out: &mut String, el: &Element, default_ns: Option<&str>, in_stream: bool) {
    out.push('<');
    let prefixed = in_stream && el.has_ns(ns::STREAM);
    if prefixed {
        out.push_str("stream:");
    }
    out.push_str(el.name());
    // `Element::ns` allocates; an element in its parent's namespace (the common case) reuses
    // the parent's string.
    let own;
    let children_ns = match default_ns {
        _ if prefixed => default_ns,
        Some(d) if el.has_ns(d) => Some(d),
        _ => {
            own = el.ns();
            out.push_str(" xmlns='");
            escape_into(out, &own);
            out.push('\'');
            Some(own.as_str())
        }
    };
    let mut prefixes = 0;
    for ((attr_ns, name), value) in el.attrs() {
        out.push(' ');
        if attr_ns.is_none() {
        } else if attr_ns == rxml::Namespace::xml() {
            out.push_str("xml:");
        } else {
            prefixes += 1;
            let _ = write!(out, "xmlns:ns{prefixes}='");
            escape_into(out, attr_ns.as_str());
            let _ = write!(out, "' ns{prefixes}:");
        }
        out.push_str(name.as_str());
        out.push_str("='");
        escape_into(out, value);
        out.push('\'');
    }
    if el.nodes().next().is_none() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for node in el.nodes() {
        match node {
            Node::Element(c) => write(out, c, children_ns, in_stream),
            Node::Text(t) => escape_into(out, t),
        }
    }
    out.push_str("</");
    if prefixed {
        out.push_str("stream:");
    }
    out.push_str(el.name());
    out.push('>');
}

/// Appends `el` as a top-level element of a stream (opened by [`stream_header_xml`], which
/// declares the `stream:` prefix) whose default namespace is `stream_ns` (e.g.
/// `jabber:client`). Elements of the streams namespace are written with the `stream:` prefix.
pub fn write_element(out: &mut String, el: &Element, stream_ns: &str) {
    write(out, el, Some(stream_ns), true);
}

/// Appends `<stream:error>` with an RFC 6120 §4.9.3 condition and an optional English text,
/// built from xmpp-parsers' `StreamError`, as a top-level element of a stream whose default
/// namespace is `stream_ns`. The caller then closes the stream (§4.9.1.1).
pub fn write_stream_error(
    out: &mut String,
    stream_ns: &str,
    condition: DefinedCondition,
    text: Option<&str>,
) {
    let error = match text {
        Some(t) => StreamError::new(condition, "en", t),
        None => StreamError {
            condition,
            texts: Default::default(),
            application_specific: Vec::new(),
        },
    };
    write_element(out, &Element::from(error), stream_ns);
}

/// `el` on its own, declaring its namespace.
pub fn to_xml(el: &Element) -> String {
    let mut s = String::new();
    write(&mut s, el, None, false);
    s
}

/// Serializes an opening stream header: an XML declaration, then `<stream:stream>` with the
/// content namespace `ns` as default namespace and the given attributes (escaped).
pub fn stream_header_xml(
    content_ns: &str,
    from: Option<&str>,
    to: Option<&str>,
    id: Option<&str>,
    version: Option<&str>,
    lang: Option<&str>,
) -> String {
    let mut s = String::from("<?xml version='1.0'?><stream:stream xmlns='");
    escape_into(&mut s, content_ns);
    s.push_str("' xmlns:stream='");
    s.push_str(ns::STREAM);
    s.push('\'');
    let attrs = [
        ("from", from),
        ("to", to),
        ("id", id),
        ("version", version),
        ("xml:lang", lang),
    ];
    for (k, v) in attrs {
        if let Some(v) = v {
            s.push(' ');
            s.push_str(k);
            s.push_str("='");
            escape_into(&mut s, v);
            s.push('\'');
        }
    }
    s.push('>');
    s
}

#[cfg(test)]
mod escape_tests {
    use super::escape_into;

    #[test]
    fn escapes_markup_and_whitespace_and_drops_what_xml_forbids() {
        let mut out = String::new();
        escape_into(&mut out, "a<b>&'\"\t\n\r\u{1}c\u{fffe}\u{ffff}\u{fffd}é😀");
        assert_eq!(out, "a&lt;b&gt;&amp;&apos;&quot;&#9;&#10;&#13;c\u{fffd}é😀");
        let mut plain = String::from("x");
        escape_into(&mut plain, "dGhlIHRva2Vu+/=");
        assert_eq!(plain, "xdGhlIHRva2Vu+/=");
    }
}
