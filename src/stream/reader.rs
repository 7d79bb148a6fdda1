//! The reader: rxml's raw parser, fed at most the bytes the current budget allows, and on its
//! events the limits rxml does not know and namespace resolution (Namespaces in XML 1.0: the
//! prefix scopes, undeclared prefixes, attributes unique after resolution). rxml's own resolver
//! is private, and resolving here also keeps what it hides: namespace declarations count as
//! attributes, and the root's default namespace is the stream's content namespace.

use std::fmt;

use minidom::Element;
use rxml::error::EndOrError;
use rxml::{
    AttrMap, Error as RxmlError, Namespace, NcName, Options, Parse as _, RawEvent, RawParser,
    WithOptions as _,
};

use super::header::StreamHeader;
use super::{FEED_SLACK, Limits, StreamEvent, XmlError};
use crate::xmpp::ns;

fn nwf(msg: impl Into<String>) -> XmlError {
    XmlError::NotWellFormed(msg.into())
}

fn policy(msg: impl Into<String>) -> XmlError {
    XmlError::PolicyViolation(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the stream header: optional BOM and XML declaration.
    Prolog,
    /// Between top-level elements.
    Top,
    /// Inside a top-level element.
    InElement,
    /// After `</stream:stream>`.
    Closed,
}

/// A start tag's name as written, before namespace processing (its attributes are in
/// [`StreamReader::tag_attrs`]).
struct RawTag {
    prefix: Option<NcName>,
    local: NcName,
}

/// An attribute as written: prefix, local name, value.
type RawAttr = (Option<NcName>, NcName, String);

/// Namespaces a login's elements declare, shared from static strings instead of one
/// allocation per declaration.
const WELL_KNOWN_NAMESPACES: &[&str] = &[
    ns::JABBER_CLIENT,
    ns::STREAM,
    ns::SASL2,
    ns::FAST,
    ns::BIND2,
    ns::SASL,
    ns::TLS,
    ns::BIND,
    ns::SM,
    ns::SASL_CB,
    ns::PING,
    ns::CSI,
    ns::CARBONS,
];

/// A declared namespace name.
fn declared_namespace(value: String) -> Namespace<'static> {
    match WELL_KNOWN_NAMESPACES.iter().find(|k| **k == value) {
        Some(k) => Namespace::from_str(k),
        None => Namespace::from(value),
    }
}

/// Namespace declarations made on one open element.
struct Scope {
    default: Option<Namespace<'static>>,
    prefixes: Vec<(NcName, Namespace<'static>)>,
}

/// Incremental parser for one XMPP stream (and, after [`StreamReader::reset`], the next).
pub struct StreamReader {
    limits: Limits,
    raw: RawParser,
    /// Bytes fed; those before `pos` are consumed. Consumed bytes are dropped when the buffer
    /// is used up or on the next feed, not after every rxml event (which moved the rest of the
    /// buffer once per attribute and text node).
    pending: Vec<u8>,
    /// How much of `pending` rxml has consumed.
    pos: usize,
    /// Bytes rxml has consumed since the stream began.
    consumed: u64,
    /// Where the current unit (prologue or top-level element) began.
    unit_start: u64,
    phase: Phase,
    /// Open elements, the stream root included.
    depth: usize,
    /// The open elements of the current top-level element.
    stack: Vec<Element>,
    /// Namespace scopes of all open elements, the stream root's first.
    scopes: Vec<Scope>,
    /// The start tag being read.
    tag: Option<RawTag>,
    /// Its attributes; with `plain_attrs`, buffers kept from tag to tag (two allocations per
    /// start tag before).
    tag_attrs: Vec<RawAttr>,
    /// The attributes of the tag being opened that are not namespace declarations.
    plain_attrs: Vec<RawAttr>,
    /// rxml's bound on one token, from the limits the reader was created with.
    token_limit: usize,
    /// The last bytes consumed, to tell a markup declaration from a broken comment when
    /// rxml rejects both the same way.
    recent: Vec<u8>,
    /// Whitespace came before anything else of the document: then an XML declaration is no
    /// longer allowed (it must be first, XML 1.0 §2.8), and rxml must not see the whitespace
    /// (it refuses any).
    leading_space: bool,
    /// rxml has been handed at least one byte of this stream.
    started: bool,
    failed: Option<XmlError>,
    /// Bytes handed to rxml, so tests can check that work stays linear in the input.
    #[cfg(test)]
    pub(super) work: u64,
}

impl fmt::Debug for StreamReader {
    // The buffer may hold credentials (SASL responses, FAST tokens), so only the shape shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader")
            .field("phase", &self.phase)
            .field("depth", &self.depth)
            .field("buffered", &self.buffered())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// rxml's token bound for `limits`: every token lies inside a budget already, so rxml's own
/// bound must not cut one earlier.
fn token_limit(limits: &Limits) -> usize {
    limits.max_element_bytes.max(limits.max_header_bytes).max(1)
}

fn parser_for(token_limit: usize) -> RawParser {
    let options = Options {
        max_token_length: token_limit,
        ..Options::default()
    };
    let mut raw = RawParser::with_options(options);
    // Text as soon as it arrives: whitespace keepalives between stanzas are consumed (and not
    // charged to the next element) without waiting for its `<`.
    raw.set_text_buffering(false);
    raw
}

/// Whitespace in the XML sense (S ::= #x20 | #x9 | #xD | #xA).
fn is_xml_space(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

impl StreamReader {
    /// A reader expecting a stream header, bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        StreamReader {
            raw: parser_for(token_limit(&limits)),
            token_limit: token_limit(&limits),
            limits,
            pending: Vec::new(),
            pos: 0,
            consumed: 0,
            unit_start: 0,
            phase: Phase::Prolog,
            depth: 0,
            stack: Vec::new(),
            scopes: Vec::new(),
            tag: None,
            tag_attrs: Vec::new(),
            plain_attrs: Vec::new(),
            recent: Vec::new(),
            leading_space: false,
            started: false,
            failed: None,
            #[cfg(test)]
            work: 0,
        }
    }

    /// Appends bytes received from the peer.
    ///
    /// Fails with `policy-violation` if the unparsed backlog would exceed the largest limit
    /// plus [`FEED_SLACK`]; call [`StreamReader::next_event`] until it returns `Ok(None)`
    /// between feeds. After a failure the reader stays failed.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), XmlError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let cap = self
            .limits
            .max_element_bytes
            .max(self.limits.max_header_bytes)
            .saturating_add(FEED_SLACK);
        if self.buffered().saturating_add(data.len()) > cap {
            return Err(self.fail(policy(format!("more than {cap} bytes of unparsed input"))));
        }
        self.compact();
        self.pending.extend_from_slice(data);
        Ok(())
    }

    /// Changes the limits, e.g. to larger stanzas once the peer has authenticated, or to
    /// smaller ones before. rxml's bound on one token (a text node, an attribute value) was
    /// fixed by the limits given to [`StreamReader::new`] and stays (also across
    /// [`StreamReader::reset`]): create the reader with the largest limits it will need.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Restarts the stream (after STARTTLS `<proceed/>` or RFC 6120 SASL success): drops
    /// buffered bytes and all state, including a failure, and expects a new stream header.
    pub fn reset(&mut self) {
        let token_limit = self.token_limit;
        *self = StreamReader::new(self.limits);
        self.token_limit = token_limit;
        self.raw = parser_for(token_limit);
    }

    /// Bytes fed but not consumed yet (rxml holds at most one incomplete token more).
    pub fn buffered(&self) -> usize {
        self.pending.len() - self.pos
    }

    /// True when everything fed so far forms whole units (the header, top-level elements,
    /// whitespace): no element, and no part of one, is pending, neither here nor inside rxml.
    /// The host uses it to tell that TLS early data ended with an element (Z-6).
    pub fn at_unit_boundary(&self) -> bool {
        self.buffered() == 0 && self.consumed == self.unit_start
    }

    /// The bytes not consumed yet.
    fn unread(&self) -> &[u8] {
        &self.pending[self.pos..]
    }

    /// Marks `n` unread bytes consumed.
    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.consumed += n as u64;
    }

    /// Drops the consumed bytes, keeping their tail in `recent` for [`map_error`]. A buffer
    /// grown by a large element is released once it is used up, so an idle connection holds
    /// little (the element itself is in `stack` until it completes).
    fn compact(&mut self) {
        if self.pos == 0 {
            return;
        }
        let tail = &self.pending[self.pos.saturating_sub(RECENT_BYTES)..self.pos];
        self.recent.extend_from_slice(tail);
        let excess = self.recent.len().saturating_sub(RECENT_BYTES);
        self.recent.drain(..excess);
        self.pending.drain(..self.pos);
        self.pos = 0;
        if self.pending.is_empty() && self.pending.capacity() > RETAINED_BUFFER {
            self.pending = Vec::new();
        }
    }

    /// The last bytes consumed (at most [`RECENT_BYTES`]).
    fn recent(&self) -> Vec<u8> {
        let mut r = self.recent.clone();
        r.extend_from_slice(&self.pending[self.pos.saturating_sub(RECENT_BYTES)..self.pos]);
        let excess = r.len().saturating_sub(RECENT_BYTES);
        r.drain(..excess);
        r
    }

    fn fail(&mut self, e: XmlError) -> XmlError {
        self.failed = Some(e.clone());
        // Nothing will be parsed any more; release what the peer made us hold.
        self.pending = Vec::new();
        self.pos = 0;
        self.stack = Vec::new();
        self.scopes = Vec::new();
        self.tag = None;
        self.tag_attrs = Vec::new();
        self.plain_attrs = Vec::new();
        self.raw = RawParser::new();
        e
    }

    /// The bytes the current unit may still take.
    fn budget(&self) -> usize {
        let used = self.consumed.saturating_sub(self.unit_start);
        let limit = match self.phase {
            Phase::Prolog => self.limits.max_header_bytes,
            Phase::Top | Phase::InElement => self.limits.max_element_bytes,
            Phase::Closed => usize::MAX,
        };
        (limit as u64).saturating_sub(used).min(usize::MAX as u64) as usize
    }

    /// The next event, or `Ok(None)` if more bytes are needed.
    ///
    /// After an `Err` the reader stays failed and returns the same error again; the host should
    /// send the stream error named by [`XmlError::condition`] and close the stream.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        loop {
            let Some(ev) = self.next_rxml_event()? else {
                return Ok(None);
            };
            match self.on_event(ev) {
                Ok(Some(out)) => return Ok(Some(out)),
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// One raw event from rxml, fed no more than the budget allows.
    fn next_rxml_event(&mut self) -> Result<Option<RawEvent>, XmlError> {
        if !self.started {
            // rxml takes neither a byte order mark (XML 1.0 §4.3.3 allows one in UTF-8) nor
            // whitespace before the root (allowed without a declaration, XML 1.0 §2.8).
            if self.consumed == 0 {
                match BOM.len().min(self.buffered()) {
                    n if self.unread()[..n] != BOM[..n] => {}
                    n if n < BOM.len() => return Ok(None),
                    _ => self.advance(BOM.len()),
                }
            }
            let spaces = self
                .unread()
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .count()
                .min(self.budget());
            if spaces > 0 {
                self.advance(spaces);
                self.leading_space = true;
            }
            if self.buffered() == 0 {
                return Ok(None);
            }
            if self.budget() == 0 {
                return Err(self.fail(policy(format!(
                    "stream header larger than {} bytes",
                    self.limits.max_header_bytes
                ))));
            }
            self.started = true;
        }
        let avail = self.buffered().min(self.budget());
        let mut input = &self.pending[self.pos..self.pos + avail];
        let result = self.raw.parse(&mut input, false);
        let used = avail - input.len();
        self.advance(used);
        #[cfg(test)]
        {
            self.work += used as u64;
        }
        let outcome = match result {
            Ok(Some(ev)) => Ok(Some(ev)),
            Ok(None) => Err(self.fail(nwf("unexpected end of input"))),
            Err(EndOrError::NeedMoreData) => {
                if self.buffered() == 0 {
                    Ok(None)
                } else {
                    // rxml took every byte the budget allows and wants more.
                    let (what, limit) = match self.phase {
                        Phase::Prolog => ("stream header", self.limits.max_header_bytes),
                        _ => ("element", self.limits.max_element_bytes),
                    };
                    Err(self.fail(policy(format!("{what} larger than {limit} bytes"))))
                }
            }
            Err(EndOrError::Error(e)) => {
                let mapped = map_error(e, &self.recent());
                Err(self.fail(mapped))
            }
        };
        if self.buffered() == 0 {
            self.compact();
        }
        outcome
    }

    fn on_event(&mut self, ev: RawEvent) -> Result<Option<StreamEvent>, XmlError> {
        let limits = &self.limits;
        let qlen = |prefix: &Option<NcName>, local: &NcName| {
            prefix.as_ref().map_or(0, |p| p.len() + 1) + local.len()
        };
        match ev {
            RawEvent::XmlDeclaration(..) if self.leading_space => Err(XmlError::RestrictedXml(
                "XML declaration after whitespace (a processing instruction)".into(),
            )),
            RawEvent::XmlDeclaration(..) => Ok(None),
            RawEvent::ElementHeadOpen(_, (prefix, local)) => {
                if qlen(&prefix, &local) > limits.max_name_bytes {
                    return Err(policy(format!(
                        "element name longer than {} bytes",
                        limits.max_name_bytes
                    )));
                }
                // A top-level element is at depth 1 (the stream root is depth 0).
                if self.depth > limits.max_depth {
                    return Err(policy(format!(
                        "elements nested deeper than {}",
                        limits.max_depth
                    )));
                }
                self.tag = Some(RawTag { prefix, local });
                self.tag_attrs.clear();
                Ok(None)
            }
            RawEvent::Attribute(_, (prefix, local), value) => {
                if qlen(&prefix, &local) > limits.max_name_bytes {
                    return Err(policy(format!(
                        "attribute name longer than {} bytes",
                        limits.max_name_bytes
                    )));
                }
                if self.tag.is_none() {
                    return Err(nwf("attribute outside a tag"));
                }
                if self.tag_attrs.len() >= limits.max_attributes {
                    return Err(policy(format!(
                        "more than {} attributes",
                        limits.max_attributes
                    )));
                }
                self.tag_attrs.push((prefix, local, value));
                Ok(None)
            }
            RawEvent::ElementHeadClose(_) => {
                let tag = self
                    .tag
                    .take()
                    .ok_or_else(|| nwf("tag end outside a tag"))?;
                self.open(tag)
            }
            RawEvent::Text(_, text) => {
                match self.stack.last_mut() {
                    Some(el) => el.append_text(text),
                    None if is_xml_space(&text) => {
                        // A keepalive between stanzas: consumed, not charged to the next one.
                        if self.phase == Phase::Top {
                            self.unit_start = self.consumed;
                        }
                    }
                    None => return Err(nwf("character data outside a stanza")),
                }
                Ok(None)
            }
            RawEvent::ElementFoot(_) => {
                self.scopes.pop();
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 {
                    self.phase = Phase::Closed;
                    return Ok(Some(StreamEvent::End));
                }
                let el = self.stack.pop().ok_or_else(|| nwf("unbalanced end tag"))?;
                match self.stack.last_mut() {
                    Some(parent) => {
                        parent.append_child(el);
                        Ok(None)
                    }
                    None => {
                        self.phase = Phase::Top;
                        self.unit_start = self.consumed;
                        Ok(Some(StreamEvent::Element(el)))
                    }
                }
            }
        }
    }

    /// The namespace bound to `prefix` in the open scopes.
    fn lookup(&self, prefix: &NcName) -> Option<Namespace<'static>> {
        if prefix.as_str() == "xml" {
            return Some(Namespace::xml().clone());
        }
        self.scopes.iter().rev().find_map(|s| {
            s.prefixes
                .iter()
                .find(|(p, _)| p == prefix)
                .map(|(_, n)| n.clone())
        })
    }

    /// A start tag complete: namespace declarations into a new scope, names resolved.
    fn open(&mut self, tag: RawTag) -> Result<Option<StreamEvent>, XmlError> {
        let at_root = self.depth == 0;
        let mut scope = Scope {
            default: None,
            prefixes: Vec::new(),
        };
        // Both buffers are empty again when this returns (a failure drops them).
        let mut as_written = std::mem::take(&mut self.tag_attrs);
        let mut plain = std::mem::take(&mut self.plain_attrs);
        for (prefix, local, value) in as_written.drain(..) {
            match prefix {
                None if local.as_str() == "xmlns" => {
                    if scope.default.is_some() {
                        return Err(nwf("duplicate attribute"));
                    }
                    scope.default = Some(declared_namespace(value));
                }
                Some(p) if p.as_str() == "xmlns" => {
                    // rxml already refused reserved bindings and empty (undeclaring) values.
                    if scope.prefixes.iter().any(|(q, _)| *q == local) {
                        return Err(nwf("duplicate attribute"));
                    }
                    scope.prefixes.push((local, declared_namespace(value)));
                }
                other => plain.push((other, local, value)),
            }
        }
        self.tag_attrs = as_written;
        self.scopes.push(scope);
        let namespace = match &tag.prefix {
            None => self
                .scopes
                .iter()
                .rev()
                .find_map(|s| s.default.clone())
                .unwrap_or(Namespace::NONE),
            Some(p) => match self.lookup(p) {
                Some(n) => n,
                // The stream namespace itself is not declared (RFC 6120 §4.9.3.10).
                None if at_root => {
                    return Err(XmlError::InvalidNamespace(
                        "undeclared prefix on the stream root".into(),
                    ));
                }
                None => return Err(nwf("undeclared namespace prefix")),
            },
        };
        let mut attrs = AttrMap::new();
        for (prefix, local, value) in plain.drain(..) {
            let attr_ns = match &prefix {
                None => Namespace::NONE,
                Some(p) => self
                    .lookup(p)
                    .ok_or_else(|| nwf("undeclared namespace prefix"))?,
            };
            // Namespaces in XML 1.0, "Attributes Unique": also after prefix expansion.
            if attrs.insert(attr_ns, local, value).is_some() {
                return Err(nwf("duplicate attribute"));
            }
        }
        self.plain_attrs = plain;
        self.depth += 1;
        if at_root {
            if tag.local.as_str() != "stream" || namespace.as_str() != ns::STREAM {
                return Err(XmlError::InvalidNamespace(
                    "the stream root must be <stream> in http://etherx.jabber.org/streams".into(),
                ));
            }
            // The values move into the header; the map is not used again.
            let attrs = attrs
                .into_iter()
                .filter_map(|((attr_ns, n), v)| {
                    if attr_ns.is_none() {
                        Some((n.as_str().to_owned(), v))
                    } else if attr_ns == *Namespace::xml() {
                        Some((format!("xml:{}", n.as_str()), v))
                    } else {
                        None
                    }
                })
                .collect();
            let default_ns = self.scopes[0]
                .default
                .as_ref()
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default();
            self.phase = Phase::Top;
            self.unit_start = self.consumed;
            return Ok(Some(StreamEvent::Header(StreamHeader {
                attrs,
                default_ns,
            })));
        }
        let mut el = Element::builder(tag.local.as_str(), namespace.as_str()).build();
        *el.attrs_mut() = attrs;
        self.stack.push(el);
        self.phase = Phase::InElement;
        Ok(None)
    }
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Bytes of recent input kept for [`map_error`].
const RECENT_BYTES: usize = 16;

/// Capacity an empty input buffer may keep (larger ones are freed): a typical read fits, and
/// an idle connection does not pin the buffer of the largest read it ever had.
const RETAINED_BUFFER: usize = 4096;

/// True if `recent` ends in a markup declaration: `<!` and an upper-case keyword letter
/// (`<!DOCTYPE`, `<!ENTITY`, `<!ELEMENT`, `<!ATTLIST`, `<!NOTATION`), which rxml rejects as
/// a malformed comment or CDATA start.
fn ends_in_markup_declaration(recent: &[u8]) -> bool {
    recent
        .windows(3)
        .rev()
        .take(2)
        .any(|w| w[0] == b'<' && w[1] == b'!' && w[2].is_ascii_uppercase())
}

/// True if `recent` ends in `<?xml` continued by a name character: a processing instruction
/// whose target merely starts with `xml` (`<?xml-stylesheet`), which rxml reads as a broken
/// XML declaration. Anchored at the end: rxml stops at the byte it rejects, so an earlier
/// match would be about some other part of the input.
fn ends_in_xml_named_pi(recent: &[u8]) -> bool {
    recent.windows(6).rev().take(2).any(|w| {
        &w[..5] == b"<?xml"
            && (w[5].is_ascii_alphanumeric() || matches!(w[5], b'-' | b'_' | b'.' | b':'))
    })
}

/// The stream error for an rxml error, by what RFC 6120 §4.9.3 says about it.
fn map_error(e: RxmlError, recent: &[u8]) -> XmlError {
    match e {
        // XMPP is UTF-8 only (RFC 6120 §11.6): another encoding is not-well-formed input, not a
        // forbidden feature.
        RxmlError::RestrictedXml(what) if what.contains("encoding") => nwf(what),
        // Comments, processing instructions, DTDs and entity declarations (§11.1).
        RxmlError::RestrictedXml(what) => XmlError::RestrictedXml(what.to_owned()),
        _ if ends_in_markup_declaration(recent) => {
            XmlError::RestrictedXml("DTD or markup declaration".into())
        }
        _ if ends_in_xml_named_pi(recent) => {
            XmlError::RestrictedXml("processing instructions".into())
        }
        // rxml's texts name the construct, never quote the input.
        other => nwf(other.to_string()),
    }
}
