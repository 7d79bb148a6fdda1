//! Writing elements into a stream: what the reader reads back exactly.
//!
//! A top-level element whose namespace is the stream's default (`jabber:client`) carries no
//! `xmlns`; a child declares its namespace where it differs from its parent's. Attributes in
//! a namespace other than `xml` get a prefix declared on the element itself. Text and
//! attribute values are escaped, with `\t`, `\n` and `\r` as character references so a parser's
//! end-of-line and attribute-value normalization (XML 1.0 §2.11, §3.3.3) gives back exactly
//! what was written; characters XML 1.0 cannot carry are dropped rather than emitted.

use std::fmt::Write as _;

use minidom::{Element, Node};

use crate::xmpp::ns;

/// Escapes text for character data or a single-quoted attribute value.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || matches!(c, '\u{fffe}' | '\u{ffff}') => {}
            c => out.push(c),
        }
    }
}

fn write(out: &mut String, el: &Element, parent_ns: Option<&str>) {
    out.push('<');
    out.push_str(el.name());
    // `Element::ns` allocates; an element in its parent's namespace (the common case) reuses
    // the parent's string.
    let own;
    let my_ns = match parent_ns {
        Some(p) if el.has_ns(p) => p,
        _ => {
            own = el.ns();
            out.push_str(" xmlns='");
            escape_into(out, &own);
            out.push('\'');
            &own
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
            Node::Element(c) => write(out, c, Some(my_ns)),
            Node::Text(t) => escape_into(out, t),
        }
    }
    out.push_str("</");
    out.push_str(el.name());
    out.push('>');
}

/// Appends `el` as a top-level element of a stream whose default namespace is `stream_ns`
/// (e.g. `jabber:client`).
pub fn write_element(out: &mut String, el: &Element, stream_ns: &str) {
    write(out, el, Some(stream_ns));
}

/// `el` on its own, declaring its namespace.
pub fn to_xml(el: &Element) -> String {
    let mut s = String::new();
    write(&mut s, el, None);
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
