//! Bounded, incremental (sans-IO) reader for XMPP streams.
//!
//! RFC 6120 §11 restricts XMPP to a small subset of XML: no comments, processing instructions,
//! DTDs or entity declarations. That subset is small enough to parse by hand, which keeps every
//! limit under this crate's control: the bytes parsed here come from peers that have not
//! authenticated yet.
//!
//! # How it works
//!
//! Bytes go in with [`StreamReader::feed`]; events come out of [`StreamReader::next_event`].
//! Only the *incomplete token* stays buffered: complete tokens are folded into the element tree
//! at once. For tokens that can be long (tags, CDATA sections, the XML declaration) the search
//! for their end resumes where it stopped, and text is consumed as it arrives, so input that
//! trickles in one byte at a time costs O(n) in total rather than O(n²).
//!
//! Limits are enforced by position: the reader never examines a byte that lies beyond the
//! current budget (the header budget before the stream header, the element budget inside a
//! top-level element). An endless element is therefore cut off as soon as it passes the limit,
//! and the outcome (events and error) does not depend on how the input was chunked.
//!
//! # Choices the RFC leaves open
//!
//! - References to entities other than the five predefined ones are `not-well-formed`: without
//!   a DTD (which is refused) they are undeclared, which XML 1.0 makes a well-formedness error.
//! - An undeclared namespace prefix is `not-well-formed`, except on the stream root, where it is
//!   `invalid-namespace` (the stream namespace was not declared, RFC 6120 §4.9.3.10).
//! - An XML declaration naming an encoding other than UTF-8 is `not-well-formed`; XMPP is
//!   UTF-8 only (RFC 6120 §11.6) and there is no separate error variant for it.
//! - Line ends are normalized (XML 1.0 §2.11) and attribute values have their whitespace
//!   normalized (§3.3.3), as any conforming parser must.
//! - A self-closing stream header (`<stream:stream .../>`) yields `Header` followed by `End`.

use std::fmt;

use super::{Element, NS_STREAM, escape_into};

/// The namespace bound to the `xml` prefix by definition (Namespaces in XML 1.0 §3).
const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of `xmlns` itself, which must never be declared.
const NS_XMLNS: &str = "http://www.w3.org/2000/xmlns/";

/// Longest reference accepted, `&` and `;` included. The longest useful one is
/// `&#x10FFFF;`; leading zeros are legal, so leave room, but a bound keeps a run of `&` from
/// making the reader wait (and buffer) for a `;` that never comes.
const MAX_REF_BYTES: usize = 32;

const BOM: &[u8] = b"\xEF\xBB\xBF";
const CDATA_OPEN: &[u8] = b"<![CDATA[";

/// Bytes [`StreamReader::feed`] accepts beyond the largest unit a limit allows.
///
/// After `next_event` has returned `Ok(None)`, the reader holds at most one incomplete unit
/// (header or element) that is within its limit. A host that drains events after every feed and
/// feeds at most `FEED_SLACK` bytes at a time therefore never trips the backlog check, while a
/// host that feeds without draining cannot make the reader buffer without bound.
pub const FEED_SLACK: usize = 16 * 1024;

/// The closing tag of a stream.
pub const STREAM_FOOTER: &str = "</stream:stream>";

/// Bounds on what a peer can make the reader hold. Exceeding any of them is a
/// `policy-violation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest top-level element, in raw bytes from its `<` to the end of its end tag.
    pub max_element_bytes: usize,
    /// Deepest nesting; a top-level element is at depth 1.
    pub max_depth: usize,
    /// Most attributes on one element or the stream header, namespace declarations included.
    pub max_attributes: usize,
    /// Longest element or attribute name, qualified, in bytes.
    pub max_name_bytes: usize,
    /// Largest stream prologue in bytes: the optional XML declaration plus the stream header.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    /// Generous for stream negotiation (a SASL2 `<authenticate>` is well under 4 KiB) while
    /// keeping what one unauthenticated peer can pin to well under a megabyte.
    fn default() -> Self {
        Limits {
            max_element_bytes: 65536,
            max_depth: 16,
            max_attributes: 32,
            max_name_bytes: 256,
            max_header_bytes: 4096,
        }
    }
}

/// The opening `<stream:stream>` tag of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    attrs: Vec<(String, String)>,
    default_ns: String,
}

impl StreamHeader {
    /// The value of attribute `name` (qualified as written, e.g. `xml:lang`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All attributes in document order (namespace declarations excluded).
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The default namespace declared on the header (`jabber:client`, `jabber:server`, ...),
    /// or `""` if none was declared.
    pub fn default_ns(&self) -> &str {
        &self.default_ns
    }

    /// The `to` attribute.
    pub fn to(&self) -> Option<&str> {
        self.attr("to")
    }

    /// The `from` attribute.
    pub fn from(&self) -> Option<&str> {
        self.attr("from")
    }

    /// The `version` attribute.
    pub fn version(&self) -> Option<&str> {
        self.attr("version")
    }

    /// The `id` attribute.
    pub fn id(&self) -> Option<&str> {
        self.attr("id")
    }

    /// The `xml:lang` attribute.
    pub fn lang(&self) -> Option<&str> {
        self.attr("xml:lang")
    }
}

/// What the reader produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The stream header arrived.
    Header(StreamHeader),
    /// A complete top-level element (stanza or nonza) arrived.
    Element(Element),
    /// The peer closed the stream (`</stream:stream>`).
    End,
}

/// Why the reader rejected the input. Each variant maps to an RFC 6120 §4.9.3 stream error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// The input is not well-formed XML (or not namespace-well-formed).
    #[error("not-well-formed: {0}")]
    NotWellFormed(String),
    /// The input exceeded a [`Limits`] bound.
    #[error("policy-violation: {0}")]
    PolicyViolation(String),
    /// The input used XML features RFC 6120 §11.1 forbids (comments, PIs, DTDs).
    #[error("restricted-xml: {0}")]
    RestrictedXml(String),
    /// The stream root is not `stream` in `http://etherx.jabber.org/streams`.
    #[error("invalid-namespace: {0}")]
    InvalidNamespace(String),
}

impl XmlError {
    /// The RFC 6120 §4.9.3 stream error condition to send before closing the stream.
    pub fn condition(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::PolicyViolation(_) => "policy-violation",
            XmlError::RestrictedXml(_) => "restricted-xml",
            XmlError::InvalidNamespace(_) => "invalid-namespace",
        }
    }
}

fn nwf(msg: impl Into<String>) -> XmlError {
    XmlError::NotWellFormed(msg.into())
}

fn policy(msg: impl Into<String>) -> XmlError {
    XmlError::PolicyViolation(msg.into())
}

fn restricted(msg: impl Into<String>) -> XmlError {
    XmlError::RestrictedXml(msg.into())
}

/// Serializes an opening stream header: an XML declaration, then `<stream:stream>` with the
/// content namespace `ns` as default namespace and the given attributes (escaped).
pub fn stream_header_xml(
    ns: &str,
    from: Option<&str>,
    to: Option<&str>,
    id: Option<&str>,
    version: Option<&str>,
    lang: Option<&str>,
) -> String {
    let mut s = String::from("<?xml version='1.0'?><stream:stream xmlns='");
    escape_into(&mut s, ns);
    s.push_str("' xmlns:stream='");
    s.push_str(NS_STREAM);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the stream header: optional BOM and XML declaration, whitespace.
    Prolog,
    /// Between top-level elements.
    Top,
    /// Inside a top-level element.
    InElement,
    /// After `</stream:stream>`.
    Closed,
}

/// Outcome of one parsing step.
enum Step {
    Event(StreamEvent),
    Continue,
    NeedMore,
}

/// An open element whose end tag has not arrived yet.
struct Frame {
    /// Qualified name as written, to match the end tag against.
    qname: String,
    element: Element,
    /// Prefix declarations made on this element.
    prefixes: Vec<(String, String)>,
    /// Default namespace in scope for this element's content.
    default_ns: String,
}

/// A start tag as written, before namespace processing.
struct RawTag {
    name: String,
    attrs: Vec<(String, String)>,
    self_closing: bool,
}

/// Namespace declarations found among a tag's attributes.
struct Decls {
    default: Option<String>,
    prefixes: Vec<(String, String)>,
}

/// Line-end and `]]>` tracking that must survive text arriving in pieces.
#[derive(Default, Clone, Copy)]
struct TextState {
    /// The previous character was CR, so a following LF is part of the same line end.
    prev_cr: bool,
    /// Consecutive `]` just seen, to reject a literal `]]>` in character data.
    brackets: u8,
}

/// Incremental parser for one XMPP stream (and, after [`StreamReader::reset`], the next).
pub struct StreamReader {
    limits: Limits,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    /// Stream offset of `buf[0]`; absolute offsets let budgets span buffer compactions.
    base: u64,
    phase: Phase,
    /// The XML declaration is only allowed as the very first thing (after a BOM).
    decl_allowed: bool,
    /// How far the search for the end of the pending token got, relative to `pos`.
    scan: usize,
    /// Quote character the tag scan is inside of (0 if none).
    quote: u8,
    /// Stream offset of the current top-level element's `<`.
    elem_start: u64,
    header_qname: String,
    header_prefixes: Vec<(String, String)>,
    header_default_ns: String,
    stack: Vec<Frame>,
    /// Character data not yet attached to the innermost open element.
    text: String,
    text_state: TextState,
    end_queued: bool,
    failed: Option<XmlError>,
    /// Bytes examined, so tests can check that work stays linear in the input.
    #[cfg(test)]
    work: u64,
}

impl fmt::Debug for StreamReader {
    // The buffer may hold credentials (SASL responses, FAST tokens), so only the shape shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader")
            .field("phase", &self.phase)
            .field("depth", &self.stack.len())
            .field("buffered", &self.buffered())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl StreamReader {
    /// A reader expecting a stream header, bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        StreamReader {
            limits,
            buf: Vec::new(),
            pos: 0,
            base: 0,
            phase: Phase::Prolog,
            decl_allowed: true,
            scan: 0,
            quote: 0,
            elem_start: 0,
            header_qname: String::new(),
            header_prefixes: Vec::new(),
            header_default_ns: String::new(),
            stack: Vec::new(),
            text: String::new(),
            text_state: TextState::default(),
            end_queued: false,
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
            let e = policy(format!("more than {cap} bytes of unparsed input"));
            self.fail(e.clone());
            return Err(e);
        }
        // Compact only once the consumed prefix is at least half the buffer, so the cost of
        // moving the remainder is paid for by the bytes consumed (amortized O(1) per byte).
        if self.pos > 0 && self.pos.saturating_mul(2) >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.base = self.base.saturating_add(self.pos as u64);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next event, or `Ok(None)` if more bytes are needed.
    ///
    /// After an `Err` the reader stays failed and returns the same error again; the host should
    /// send the stream error named by [`XmlError::condition`] and close the stream.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.step() {
            Ok(ev) => Ok(ev),
            Err(e) => {
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    /// Restarts the stream (after STARTTLS `<proceed/>` or SASL success): drops buffered bytes
    /// and all state, including a failure, and expects a new stream header.
    pub fn reset(&mut self) {
        *self = StreamReader::new(self.limits);
    }

    /// Bytes fed but not consumed yet.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn fail(&mut self, e: XmlError) {
        self.failed = Some(e);
        // Nothing will be parsed any more; release what the peer made us hold.
        self.buf = Vec::new();
        self.pos = 0;
        self.stack = Vec::new();
        self.text = String::new();
    }

    fn step(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        if self.end_queued {
            self.end_queued = false;
            self.phase = Phase::Closed;
            return Ok(Some(StreamEvent::End));
        }
        loop {
            let step = match self.phase {
                Phase::Prolog => self.step_prolog()?,
                Phase::Top => self.step_top()?,
                Phase::InElement => self.step_element()?,
                Phase::Closed => self.step_closed()?,
            };
            match step {
                Step::Event(ev) => return Ok(Some(ev)),
                Step::NeedMore => return Ok(None),
                Step::Continue => {}
            }
        }
    }

    fn abs_pos(&self) -> u64 {
        self.base.saturating_add(self.pos as u64)
    }

    /// How many bytes from `pos` may still belong to the current unit (header or element).
    fn budget_left(&self) -> usize {
        let (start, max) = match self.phase {
            Phase::Prolog => (0, self.limits.max_header_bytes),
            Phase::Top | Phase::InElement => (self.elem_start, self.limits.max_element_bytes),
            Phase::Closed => return usize::MAX,
        };
        let used = self.abs_pos().saturating_sub(start);
        usize::try_from((max as u64).saturating_sub(used)).unwrap_or(usize::MAX)
    }

    /// The unconsumed bytes that are within budget. Parsing only ever looks at these, which is
    /// what makes limits positional (see the module docs).
    fn window(&self) -> &[u8] {
        let avail = self.buf.get(self.pos..).unwrap_or_default();
        let n = avail.len().min(self.budget_left());
        avail.get(..n).unwrap_or_default()
    }

    /// The pending token cannot be completed within the window: wait for more bytes, unless
    /// bytes beyond the budget already exist, in which case the unit is over its limit.
    fn need_more(&self) -> Result<Step, XmlError> {
        if self.buffered() <= self.budget_left() {
            return Ok(Step::NeedMore);
        }
        Err(match self.phase {
            Phase::Prolog => policy(format!(
                "stream header larger than {} bytes",
                self.limits.max_header_bytes
            )),
            _ => policy(format!(
                "element larger than {} bytes",
                self.limits.max_element_bytes
            )),
        })
    }

    fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.buf.len());
        self.scan = 0;
        self.quote = 0;
    }

    fn tally(&mut self, _n: usize) {
        #[cfg(test)]
        {
            self.work = self.work.saturating_add(_n as u64);
        }
    }

    /// Finds the end of the tag starting at `pos`, resuming the previous scan. Returns its
    /// length once the closing `>` (outside quotes) is in the window.
    fn scan_tag(&mut self) -> Result<Option<usize>, XmlError> {
        let w = self.window();
        let from = self.scan.max(1);
        let mut quote = self.quote;
        let mut end = None;
        if let Some(rest) = w.get(from..) {
            for (i, &b) in rest.iter().enumerate() {
                if quote != 0 {
                    if b == quote {
                        quote = 0;
                    }
                    continue;
                }
                match b {
                    b'\'' | b'"' => quote = b,
                    b'>' => {
                        end = Some(from + i + 1);
                        break;
                    }
                    // Catch garbage early rather than after scanning to some far-off '>'.
                    b'<' => return Err(nwf("'<' inside a tag")),
                    _ => {}
                }
            }
        }
        let scanned = end.unwrap_or(w.len()).max(from);
        self.tally(scanned - from);
        self.scan = scanned;
        self.quote = quote;
        Ok(end)
    }

    /// Finds `pat` at or after `min`, resuming the previous scan (backing up just enough to
    /// catch a `pat` split across feeds). Returns the token length including `pat`.
    fn scan_until(&mut self, pat: &[u8], min: usize) -> Option<usize> {
        let w = self.window();
        let from = self
            .scan
            .saturating_sub(pat.len().saturating_sub(1))
            .max(min);
        let end = w
            .get(from..)
            .and_then(|rest| rest.windows(pat.len()).position(|x| x == pat))
            .map(|i| from + i + pat.len());
        let scanned = end.unwrap_or(w.len()).max(from);
        self.tally(scanned - from);
        self.scan = scanned;
        end
    }

    fn step_prolog(&mut self) -> Result<Step, XmlError> {
        let w = self.window();
        if self.decl_allowed && self.abs_pos() == 0 && w.first() == Some(&0xEF) {
            if w.starts_with(BOM) {
                self.consume(BOM.len());
                return Ok(Step::Continue);
            }
            if BOM.starts_with(w) {
                return self.need_more();
            }
            // Not a BOM: the '<' check below rejects it.
        }
        let ws = w.iter().take_while(|b| is_ws(**b)).count();
        if ws > 0 {
            self.decl_allowed = false;
            self.tally(ws);
            self.consume(ws);
            return Ok(Step::Continue);
        }
        let Some(&first) = w.first() else {
            return self.need_more();
        };
        if first != b'<' {
            return Err(nwf("text before the stream header"));
        }
        match w.get(1).copied() {
            None => self.need_more(),
            Some(b'?') => {
                if !self.decl_allowed {
                    return Err(restricted("processing instructions are not allowed"));
                }
                let head = b"<?xml";
                let k = w.len().min(head.len());
                if w.get(..k) != head.get(..k) {
                    return Err(restricted("processing instructions are not allowed"));
                }
                match w.get(head.len()).copied() {
                    None => return self.need_more(),
                    Some(b) if is_ws(b) => {}
                    // `<?xml-stylesheet` and the like are PIs, not the declaration.
                    Some(_) => return Err(restricted("processing instructions are not allowed")),
                }
                match self.scan_until(b"?>", head.len() + 1) {
                    None => self.need_more(),
                    Some(len) => {
                        parse_xml_decl(utf8(self.window().get(..len))?, &self.limits)?;
                        self.decl_allowed = false;
                        self.consume(len);
                        Ok(Step::Continue)
                    }
                }
            }
            Some(b'!') => match w.get(2).copied() {
                None => self.need_more(),
                Some(b'[') => Err(nwf("CDATA section before the stream header")),
                Some(_) => Err(restricted("comments and DTDs are not allowed")),
            },
            Some(b'/') => Err(nwf("end tag before the stream header")),
            Some(_) => match self.scan_tag()? {
                None => self.need_more(),
                Some(len) => {
                    let tag = parse_start_tag(utf8(self.window().get(..len))?, &self.limits)?;
                    self.consume(len);
                    self.open_stream(tag)
                }
            },
        }
    }

    fn step_top(&mut self) -> Result<Step, XmlError> {
        // Nothing of a top-level element is consumed while in this phase, so the element (if
        // one is starting) begins right here.
        self.elem_start = self.abs_pos();
        let w = self.window();
        let ws = w.iter().take_while(|b| is_ws(**b)).count();
        if ws > 0 {
            // Whitespace keepalives: discard.
            self.tally(ws);
            self.consume(ws);
            return Ok(Step::Continue);
        }
        let Some(&first) = w.first() else {
            return self.need_more();
        };
        if first != b'<' {
            return Err(nwf("text at stream level"));
        }
        match w.get(1).copied() {
            None => self.need_more(),
            Some(b'/') => match self.scan_tag()? {
                None => self.need_more(),
                Some(len) => {
                    let name = parse_end_tag(utf8(self.window().get(..len))?, &self.limits)?;
                    self.consume(len);
                    if name != self.header_qname {
                        return Err(nwf(format!("unexpected end tag '{name}' at stream level")));
                    }
                    self.phase = Phase::Closed;
                    Ok(Step::Event(StreamEvent::End))
                }
            },
            Some(b'?') => Err(restricted("processing instructions are not allowed")),
            Some(b'!') => match w.get(2).copied() {
                None => self.need_more(),
                Some(b'[') => Err(nwf("CDATA section at stream level")),
                Some(_) => Err(restricted("comments and DTDs are not allowed")),
            },
            Some(_) => self.start_tag(),
        }
    }

    fn step_closed(&mut self) -> Result<Step, XmlError> {
        let w = self.window();
        let ws = w.iter().take_while(|b| is_ws(**b)).count();
        if ws > 0 {
            self.tally(ws);
            self.consume(ws);
            return Ok(Step::Continue);
        }
        if w.is_empty() {
            return Ok(Step::NeedMore);
        }
        Err(nwf("data after the end of the stream"))
    }

    fn step_element(&mut self) -> Result<Step, XmlError> {
        match self.window().first().copied() {
            None => self.need_more(),
            Some(b'<') => {
                self.text_state = TextState::default();
                self.step_markup()
            }
            Some(b'&') => {
                self.text_state = TextState::default();
                self.step_reference()
            }
            Some(_) => self.step_text(),
        }
    }

    fn step_text(&mut self) -> Result<Step, XmlError> {
        let w = self.window();
        let run = w
            .iter()
            .position(|&b| b == b'<' || b == b'&')
            .unwrap_or(w.len());
        let bytes = w.get(..run).unwrap_or_default();
        // The valid prefix is processed before an encoding error is reported, so errors come
        // out in input order whatever the chunking.
        let (valid, bad) = match std::str::from_utf8(bytes) {
            Ok(_) => (run, false),
            // A character split across feeds: take what is complete, wait for the rest.
            Err(e) if e.error_len().is_none() && run == w.len() => (e.valid_up_to(), false),
            Err(e) => (e.valid_up_to(), true),
        };
        if valid == 0 && !bad {
            return self.need_more();
        }
        self.tally(run);
        let start = self.pos;
        let chunk = self
            .buf
            .get(start..start.saturating_add(valid))
            .unwrap_or_default();
        let s = std::str::from_utf8(chunk).map_err(|_| nwf("invalid UTF-8"))?;
        push_char_data(&mut self.text, s, &mut self.text_state, true)?;
        if bad {
            return Err(nwf("invalid UTF-8"));
        }
        self.consume(valid);
        Ok(Step::Continue)
    }

    fn step_reference(&mut self) -> Result<Step, XmlError> {
        let w = self.window();
        let probe = w.get(1..w.len().min(MAX_REF_BYTES)).unwrap_or_default();
        // Every reference that can be valid is ASCII letters, digits and '#', so the first
        // other byte decides; waiting for a ';' would only let `&amp</a>` stall the stream.
        let Some(semi) = probe
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b == b'#'))
        else {
            if w.len() >= MAX_REF_BYTES {
                return Err(nwf("unterminated or overlong reference"));
            }
            return self.need_more();
        };
        if probe.get(semi) != Some(&b';') {
            return Err(nwf("malformed reference"));
        }
        let c = parse_ref(utf8(probe.get(..semi))?)?;
        self.tally(semi + 2);
        self.text.push(c);
        self.consume(semi + 2);
        Ok(Step::Continue)
    }

    fn step_markup(&mut self) -> Result<Step, XmlError> {
        let w = self.window();
        match w.get(1).copied() {
            None => self.need_more(),
            Some(b'/') => match self.scan_tag()? {
                None => self.need_more(),
                Some(len) => {
                    let name = parse_end_tag(utf8(self.window().get(..len))?, &self.limits)?;
                    self.consume(len);
                    match self.close_element(&name)? {
                        Some(el) => {
                            self.phase = Phase::Top;
                            Ok(Step::Event(StreamEvent::Element(el)))
                        }
                        None => Ok(Step::Continue),
                    }
                }
            },
            Some(b'?') => Err(restricted("processing instructions are not allowed")),
            Some(b'!') => {
                if w.starts_with(CDATA_OPEN) {
                    let Some(len) = self.scan_until(b"]]>", CDATA_OPEN.len()) else {
                        return self.need_more();
                    };
                    let start = self.pos.saturating_add(CDATA_OPEN.len());
                    let end = self.pos.saturating_add(len.saturating_sub(3));
                    let s = utf8(self.buf.get(start..end))?;
                    let mut st = TextState::default();
                    push_char_data(&mut self.text, s, &mut st, false)?;
                    self.consume(len);
                    Ok(Step::Continue)
                } else if CDATA_OPEN.starts_with(w) {
                    self.need_more()
                } else if w.get(2) == Some(&b'[') {
                    Err(nwf("malformed CDATA section"))
                } else {
                    Err(restricted("comments and DTDs are not allowed"))
                }
            }
            Some(_) => self.start_tag(),
        }
    }

    /// Handles a start tag at `pos`, at stream level or inside an element.
    fn start_tag(&mut self) -> Result<Step, XmlError> {
        let Some(len) = self.scan_tag()? else {
            return self.need_more();
        };
        let tag = parse_start_tag(utf8(self.window().get(..len))?, &self.limits)?;
        self.tally(len);
        self.consume(len);
        match self.open_element(tag)? {
            Some(el) => {
                self.phase = Phase::Top;
                Ok(Step::Event(StreamEvent::Element(el)))
            }
            None => {
                self.phase = Phase::InElement;
                Ok(Step::Continue)
            }
        }
    }

    fn open_stream(&mut self, tag: RawTag) -> Result<Step, XmlError> {
        let (decls, attrs) = split_decls(tag.attrs)?;
        let (prefix, local) = split_qname(&tag.name)?;
        let ns = match prefix {
            None => decls.default.as_deref().unwrap_or(""),
            Some(p) => self.resolve(p, &decls.prefixes).ok_or_else(|| {
                XmlError::InvalidNamespace(format!("stream prefix '{p}' is not declared"))
            })?,
        };
        if local != "stream" || ns != NS_STREAM {
            return Err(XmlError::InvalidNamespace(format!(
                "the stream root must be 'stream' in {NS_STREAM}"
            )));
        }
        self.check_attr_namespaces(&attrs, &decls.prefixes)?;
        self.header_qname = tag.name;
        self.header_prefixes = decls.prefixes;
        self.header_default_ns = decls.default.unwrap_or_default();
        self.phase = Phase::Top;
        self.end_queued = tag.self_closing;
        Ok(Step::Event(StreamEvent::Header(StreamHeader {
            attrs,
            default_ns: self.header_default_ns.clone(),
        })))
    }

    /// Opens an element; returns it if it was a self-closing top-level element.
    fn open_element(&mut self, tag: RawTag) -> Result<Option<Element>, XmlError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(policy(format!(
                "elements nested deeper than {}",
                self.limits.max_depth
            )));
        }
        let (decls, attrs) = split_decls(tag.attrs)?;
        let (prefix, local) = split_qname(&tag.name)?;
        let inherited = self
            .stack
            .last()
            .map_or(self.header_default_ns.as_str(), |f| f.default_ns.as_str());
        let default_ns = decls.default.unwrap_or_else(|| inherited.to_owned());
        let ns = match prefix {
            None => default_ns.clone(),
            Some(p) => self
                .resolve(p, &decls.prefixes)
                .ok_or_else(|| nwf(format!("namespace prefix '{p}' is not declared")))?
                .to_owned(),
        };
        self.check_attr_namespaces(&attrs, &decls.prefixes)?;
        let mut el = Element::new(local, ns);
        for (k, v) in attrs {
            // A prefixed attribute keeps its name as written, so the element also carries the
            // declaration of that prefix (found by the fuzzer): without it, `to_xml` would emit
            // a prefix that is not declared, which no conforming parser accepts.
            if let (Some(p), _) = split_qname(&k)?
                && p != "xml"
            {
                let decl = format!("xmlns:{p}");
                if el.attr(&decl).is_none() {
                    let uri = self
                        .resolve(p, &decls.prefixes)
                        .ok_or_else(|| nwf(format!("namespace prefix '{p}' is not declared")))?
                        .to_owned();
                    el.set_attr(decl, uri);
                }
            }
            el.set_attr(k, v);
        }
        self.flush_text();
        if tag.self_closing {
            return Ok(self.attach(el));
        }
        self.stack.push(Frame {
            qname: tag.name,
            element: el,
            prefixes: decls.prefixes,
            default_ns,
        });
        Ok(None)
    }

    /// Closes the innermost element; returns it if it was top-level.
    fn close_element(&mut self, name: &str) -> Result<Option<Element>, XmlError> {
        self.flush_text();
        let Some(frame) = self.stack.pop() else {
            return Err(nwf("end tag without a start tag"));
        };
        if frame.qname != name {
            return Err(nwf(format!(
                "end tag '{name}' does not match start tag '{}'",
                frame.qname
            )));
        }
        Ok(self.attach(frame.element))
    }

    fn attach(&mut self, el: Element) -> Option<Element> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.element.push_child(el);
                None
            }
            None => Some(el),
        }
    }

    fn flush_text(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.text);
        if let Some(frame) = self.stack.last_mut() {
            frame.element.push_text(text);
        }
    }

    /// The namespace bound to `prefix`, innermost scope first.
    fn resolve<'a>(&'a self, prefix: &str, local: &'a [(String, String)]) -> Option<&'a str> {
        lookup(local, prefix)
            .or_else(|| {
                self.stack
                    .iter()
                    .rev()
                    .find_map(|f| lookup(&f.prefixes, prefix))
            })
            .or_else(|| lookup(&self.header_prefixes, prefix))
            .or_else(|| (prefix == "xml").then_some(NS_XML))
    }

    /// Prefixed attributes must use declared prefixes, and no two attributes may share an
    /// expanded name (Namespaces in XML 1.0 §6.3).
    fn check_attr_namespaces(
        &self,
        attrs: &[(String, String)],
        local: &[(String, String)],
    ) -> Result<(), XmlError> {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (name, _) in attrs {
            if let (Some(p), l) = split_qname(name)? {
                let uri = self
                    .resolve(p, local)
                    .ok_or_else(|| nwf(format!("namespace prefix '{p}' is not declared")))?;
                if seen.contains(&(uri, l)) {
                    return Err(nwf(format!("duplicate attribute '{name}'")));
                }
                seen.push((uri, l));
            }
        }
        Ok(())
    }
}

fn lookup<'a>(decls: &'a [(String, String)], prefix: &str) -> Option<&'a str> {
    decls
        .iter()
        .rev()
        .find(|(p, _)| p == prefix)
        .map(|(_, u)| u.as_str())
}

fn utf8(bytes: Option<&[u8]>) -> Result<&str, XmlError> {
    std::str::from_utf8(bytes.unwrap_or_default()).map_err(|_| nwf("invalid UTF-8"))
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// XML 1.0 `Char` (surrogates cannot occur in a Rust `char`).
fn is_xml_char(c: char) -> bool {
    matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// XML 1.0 (5th edition) `NameStartChar`.
fn is_name_start_char(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 (5th edition) `NameChar`.
fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Appends character data, normalizing line ends (XML 1.0 §2.11) and rejecting characters XML
/// forbids. Outside CDATA sections a literal `]]>` is not allowed either (§2.4).
fn push_char_data(
    out: &mut String,
    s: &str,
    st: &mut TextState,
    reject_cdata_end: bool,
) -> Result<(), XmlError> {
    for c in s.chars() {
        if !is_xml_char(c) {
            return Err(nwf(format!("character U+{:04X} is not allowed", c as u32)));
        }
        if c == '\n' && st.prev_cr {
            st.prev_cr = false;
            st.brackets = 0;
            continue;
        }
        st.prev_cr = c == '\r';
        if reject_cdata_end && c == '>' && st.brackets >= 2 {
            return Err(nwf("']]>' in character data"));
        }
        st.brackets = if c == ']' {
            st.brackets.saturating_add(1)
        } else {
            0
        };
        out.push(if c == '\r' { '\n' } else { c });
    }
    Ok(())
}

/// Decodes the name between `&` and `;`.
fn parse_ref(name: &str) -> Result<char, XmlError> {
    match name {
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "amp" => return Ok('&'),
        "apos" => return Ok('\''),
        "quot" => return Ok('"'),
        _ => {}
    }
    let Some(num) = name.strip_prefix('#') else {
        return Err(nwf(
            "undefined entity (only the five predefined ones exist)",
        ));
    };
    let (digits, radix) = match num.strip_prefix('x') {
        Some(hex) => (hex, 16),
        None => (num, 10),
    };
    // from_str_radix would accept a leading '+'; XML does not.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(nwf("malformed character reference"));
    }
    u32::from_str_radix(digits, radix)
        .ok()
        .and_then(char::from_u32)
        .filter(|c| is_xml_char(*c))
        .ok_or_else(|| nwf("character reference to a character XML does not allow"))
}

/// A tiny cursor over a complete tag. It only ever advances by whole characters, so every
/// slice it takes falls on character boundaries.
struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor { s, i: 0 }
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.i..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.i += s.len();
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) -> bool {
        let n = self.rest().bytes().take_while(|b| is_ws(*b)).count();
        self.i += n;
        n > 0
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }
}

fn parse_name<'a>(cur: &mut Cursor<'a>, limits: &Limits) -> Result<&'a str, XmlError> {
    let start = cur.i;
    match cur.peek() {
        Some(c) if is_name_start_char(c) => {}
        _ => return Err(nwf("expected a name")),
    }
    while let Some(c) = cur.peek() {
        if !is_name_char(c) {
            break;
        }
        cur.bump();
        if cur.i - start > limits.max_name_bytes {
            return Err(policy(format!(
                "name longer than {} bytes",
                limits.max_name_bytes
            )));
        }
    }
    Ok(cur.s.get(start..cur.i).unwrap_or(""))
}

/// Parses `(S Name S? '=' S? AttValue)*`, leaving the cursor before the tag's terminator.
fn parse_attrs(cur: &mut Cursor<'_>, limits: &Limits) -> Result<Vec<(String, String)>, XmlError> {
    let mut attrs: Vec<(String, String)> = Vec::new();
    loop {
        let had_ws = cur.skip_ws();
        match cur.peek() {
            Some(c) if is_name_start_char(c) => {
                if !had_ws {
                    return Err(nwf("attributes must be separated by whitespace"));
                }
            }
            _ => return Ok(attrs),
        }
        let name = parse_name(cur, limits)?;
        cur.skip_ws();
        if !cur.eat("=") {
            return Err(nwf(format!("attribute '{name}' has no value")));
        }
        cur.skip_ws();
        let quote = match cur.bump() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(nwf("attribute value must be quoted")),
        };
        let rest = cur.rest();
        let Some(end) = rest.find(quote) else {
            return Err(nwf("unterminated attribute value"));
        };
        let value = decode_attr_value(rest.get(..end).unwrap_or(""))?;
        cur.i += end + quote.len_utf8();
        if attrs.len() >= limits.max_attributes {
            return Err(policy(format!(
                "more than {} attributes",
                limits.max_attributes
            )));
        }
        if attrs.iter().any(|(n, _)| n == name) {
            return Err(nwf(format!("duplicate attribute '{name}'")));
        }
        attrs.push((name.to_owned(), value));
    }
}

/// Decodes references and normalizes whitespace (XML 1.0 §3.3.3: each literal TAB, LF, CR or
/// CRLF becomes one space; characters written as references are kept).
fn decode_attr_value(raw: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        rest = rest.get(c.len_utf8()..).unwrap_or("");
        match c {
            '<' => return Err(nwf("'<' in an attribute value")),
            '&' => {
                let semi = rest
                    .bytes()
                    .take(MAX_REF_BYTES)
                    .position(|b| b == b';')
                    .ok_or_else(|| nwf("unterminated or overlong reference"))?;
                out.push(parse_ref(rest.get(..semi).unwrap_or(""))?);
                rest = rest.get(semi + 1..).unwrap_or("");
            }
            '\r' => {
                out.push(' ');
                rest = rest.strip_prefix('\n').unwrap_or(rest);
            }
            '\t' | '\n' => out.push(' '),
            c if is_xml_char(c) => out.push(c),
            c => {
                return Err(nwf(format!("character U+{:04X} is not allowed", c as u32)));
            }
        }
    }
    Ok(out)
}

fn parse_start_tag(raw: &str, limits: &Limits) -> Result<RawTag, XmlError> {
    let mut cur = Cursor::new(raw);
    if !cur.eat("<") {
        return Err(nwf("expected '<'"));
    }
    let name = parse_name(&mut cur, limits)?.to_owned();
    let attrs = parse_attrs(&mut cur, limits)?;
    cur.skip_ws();
    let self_closing = cur.eat("/");
    if !cur.eat(">") || !cur.at_end() {
        return Err(nwf(format!("malformed start tag '{name}'")));
    }
    Ok(RawTag {
        name,
        attrs,
        self_closing,
    })
}

fn parse_end_tag(raw: &str, limits: &Limits) -> Result<String, XmlError> {
    let mut cur = Cursor::new(raw);
    if !cur.eat("</") {
        return Err(nwf("expected '</'"));
    }
    let name = parse_name(&mut cur, limits)?.to_owned();
    cur.skip_ws();
    if !cur.eat(">") || !cur.at_end() {
        return Err(nwf(format!("malformed end tag '{name}'")));
    }
    Ok(name)
}

/// Checks `<?xml version='1.x' [encoding='UTF-8'] [standalone='yes|no']?>`.
fn parse_xml_decl(raw: &str, limits: &Limits) -> Result<(), XmlError> {
    let mut cur = Cursor::new(raw);
    if !cur.eat("<?xml") {
        return Err(nwf("malformed XML declaration"));
    }
    let attrs = parse_attrs(&mut cur, limits)?;
    cur.skip_ws();
    if !cur.eat("?>") || !cur.at_end() {
        return Err(nwf("malformed XML declaration"));
    }
    let mut it = attrs.iter();
    let version_ok = it.next().is_some_and(|(n, v)| {
        n == "version"
            && v.strip_prefix("1.")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    });
    if !version_ok {
        return Err(nwf("XML declaration without a valid version"));
    }
    let (mut seen_encoding, mut seen_standalone) = (false, false);
    for (n, v) in it {
        match n.as_str() {
            "encoding" if !seen_encoding && !seen_standalone => {
                seen_encoding = true;
                if !v.eq_ignore_ascii_case("UTF-8") {
                    return Err(nwf("only UTF-8 is supported"));
                }
            }
            "standalone" if !seen_standalone => {
                seen_standalone = true;
                if v != "yes" && v != "no" {
                    return Err(nwf("malformed standalone declaration"));
                }
            }
            _ => return Err(nwf("unexpected item in the XML declaration")),
        }
    }
    Ok(())
}

/// Splits a qualified name into prefix and local part, checking both are NCNames.
fn split_qname(name: &str) -> Result<(Option<&str>, &str), XmlError> {
    match name.split_once(':') {
        None => Ok((None, name)),
        Some((p, l)) => {
            let local_ok = !l.contains(':') && l.chars().next().is_some_and(is_name_start_char);
            if p.is_empty() || !local_ok {
                return Err(nwf(format!("invalid qualified name '{name}'")));
            }
            Ok((Some(p), l))
        }
    }
}

/// Separates namespace declarations from ordinary attributes, enforcing the reserved-prefix
/// rules of Namespaces in XML 1.0 §3.
fn split_decls(attrs: Vec<(String, String)>) -> Result<(Decls, Vec<(String, String)>), XmlError> {
    let mut decls = Decls {
        default: None,
        prefixes: Vec::new(),
    };
    let mut rest = Vec::with_capacity(attrs.len());
    for (name, value) in attrs {
        if name == "xmlns" {
            if value == NS_XML || value == NS_XMLNS {
                return Err(nwf("reserved namespace used as default namespace"));
            }
            decls.default = Some(value);
        } else if name.starts_with("xmlns:") {
            let (_, p) = split_qname(&name)?;
            let reserved_ok = match p {
                "xmlns" => false,
                "xml" => value == NS_XML,
                _ => value != NS_XML && value != NS_XMLNS,
            };
            if !reserved_ok {
                return Err(nwf(format!("illegal declaration of prefix '{p}'")));
            }
            if value.is_empty() {
                return Err(nwf(format!("prefix '{p}' bound to the empty namespace")));
            }
            decls.prefixes.push((p.to_owned(), value));
        } else {
            rest.push((name, value));
        }
    }
    Ok((decls, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{NS_CLIENT, NS_FAST, NS_SASL, NS_SASL2, Node};
    use proptest::prelude::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' \
        xml:lang='en'>";

    fn drain(r: &mut StreamReader, out: &mut Vec<StreamEvent>) -> Result<(), XmlError> {
        while let Some(ev) = r.next_event()? {
            out.push(ev);
        }
        Ok(())
    }

    /// Feeds `input` in chunks of the given sizes (cycled), draining after each feed.
    fn run_chunks(
        input: &[u8],
        sizes: &[usize],
        limits: Limits,
    ) -> (Vec<StreamEvent>, Option<XmlError>) {
        let mut r = StreamReader::new(limits);
        let mut out = Vec::new();
        let mut i = 0;
        let mut k = 0;
        while i < input.len() {
            let n = sizes
                .get(k % sizes.len().max(1))
                .copied()
                .unwrap_or(1)
                .clamp(1, input.len() - i);
            k += 1;
            if let Err(e) = r
                .feed(&input[i..i + n])
                .and_then(|()| drain(&mut r, &mut out))
            {
                return (out, Some(e));
            }
            i += n;
        }
        (out, None)
    }

    fn parse_all(input: &str) -> (Vec<StreamEvent>, Option<XmlError>) {
        run_chunks(input.as_bytes(), &[input.len()], Limits::default())
    }

    fn in_stream(body: &str) -> String {
        format!("{HEADER}{body}")
    }

    /// Parses `body` inside a stream and returns the single element it must contain.
    fn one_element(body: &str) -> Element {
        let (events, err) = parse_all(&in_stream(body));
        assert_eq!(err, None, "unexpected error for {body}");
        assert_eq!(events.len(), 2, "events: {events:?}");
        match &events[1] {
            StreamEvent::Element(e) => e.clone(),
            other => panic!("expected an element, got {other:?}"),
        }
    }

    fn error_of(input: &str) -> XmlError {
        match parse_all(input) {
            (_, Some(e)) => e,
            (events, None) => panic!("no error for {input:?}; events {events:?}"),
        }
    }

    fn stream_error(body: &str) -> XmlError {
        error_of(&in_stream(body))
    }

    const AUTH: &str = "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'>\
        <initial-response>dXNlcgBzZWNyZXQ=</initial-response>\
        <user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'><software>x</software>\
        </user-agent><fast xmlns='urn:xmpp:fast:0' count='3'/></authenticate>";

    fn client_stream() -> String {
        format!("{HEADER}\n  {AUTH} \n</stream:stream>")
    }

    #[test]
    fn parses_a_realistic_client_stream() {
        let (events, err) = parse_all(&client_stream());
        assert_eq!(err, None);
        assert_eq!(events.len(), 3, "{events:?}");
        let StreamEvent::Header(h) = &events[0] else {
            panic!("expected header, got {:?}", events[0]);
        };
        assert_eq!(h.default_ns(), NS_CLIENT);
        assert_eq!(h.to(), Some("example.com"));
        assert_eq!(h.version(), Some("1.0"));
        assert_eq!(h.lang(), Some("en"));
        assert_eq!(h.from(), None);
        assert_eq!(h.id(), None);
        assert_eq!(h.attr("xmlns"), None, "declarations are not attributes");

        let StreamEvent::Element(auth) = &events[1] else {
            panic!("expected element, got {:?}", events[1]);
        };
        assert!(auth.is("authenticate", NS_SASL2));
        assert_eq!(auth.attr("mechanism"), Some("HT-SHA-256-NONE"));
        assert_eq!(auth.attrs().count(), 1);
        let ir = auth.get_child("initial-response", NS_SASL2).unwrap();
        assert_eq!(ir.text(), "dXNlcgBzZWNyZXQ=");
        let ua = auth.get_child("user-agent", NS_SASL2).unwrap();
        assert_eq!(ua.attr("id"), Some("d4565fa7-4d72-4749-b3d3-740edbf87770"));
        assert_eq!(ua.get_child("software", NS_SASL2).unwrap().text(), "x");
        let fast = auth.get_child("fast", NS_FAST).unwrap();
        assert_eq!(fast.attr("count"), Some("3"));
        assert!(fast.is_empty());
        assert_eq!(auth.children().count(), 3);

        assert_eq!(events[2], StreamEvent::End);
    }

    #[test]
    fn chunking_does_not_change_events() {
        let input = client_stream();
        let whole = parse_all(&input);
        assert_eq!(whole.1, None);
        assert_eq!(run_chunks(input.as_bytes(), &[1], Limits::default()), whole);
        // Deterministic pseudo-random chunk sizes (an LCG), many seeds.
        for seed in 1u64..200 {
            let mut x = seed;
            let sizes: Vec<usize> = (0..64)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 33) as usize % 23 + 1
                })
                .collect();
            assert_eq!(
                run_chunks(input.as_bytes(), &sizes, Limits::default()),
                whole,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn resolves_prefixed_namespaces_from_the_header() {
        let e = one_element(
            "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
             <mechanism>PLAIN</mechanism></mechanisms></stream:features>",
        );
        assert!(e.is("features", NS_STREAM));
        let mechs = e.get_child("mechanisms", NS_SASL).unwrap();
        assert_eq!(
            mechs.get_child("mechanism", NS_SASL).unwrap().text(),
            "PLAIN"
        );
    }

    #[test]
    fn default_namespace_changes_are_scoped() {
        let e = one_element(
            "<message to='a@b'><body>hi</body><x xmlns='urn:a'><y/><z xmlns=''/></x><w/></message>",
        );
        assert!(e.is("message", NS_CLIENT));
        assert_eq!(e.attr("to"), Some("a@b"));
        assert!(e.get_child("body", NS_CLIENT).is_some());
        let x = e.get_child("x", "urn:a").unwrap();
        assert!(x.get_child("y", "urn:a").is_some());
        assert!(x.get_child("z", "").is_some());
        assert!(e.get_child("w", NS_CLIENT).is_some());
    }

    #[test]
    fn prefixed_elements_and_attributes() {
        let e = one_element(
            "<message xmlns:p='urn:p'><p:q p:attr='1' xml:lang='de' plain='2'>t</p:q></message>",
        );
        let q = e.get_child("q", "urn:p").unwrap();
        let attrs: Vec<_> = q.attrs().collect();
        assert_eq!(
            attrs,
            vec![
                ("xmlns:p", "urn:p"),
                ("p:attr", "1"),
                ("xml:lang", "de"),
                ("plain", "2")
            ]
        );
        assert_eq!(q.text(), "t");
    }

    /// Fuzzer finding (xml_reader target): a prefixed attribute whose prefix was declared on
    /// the element (or an ancestor) serialized with an undeclared prefix, so the element did not
    /// parse back, e.g. when a host relays it to another stream.
    #[test]
    fn prefixed_attributes_serialize_with_their_declaration() {
        for input in [
            "<iq><q xmlns:p='urn:x' p:a='1'/></iq>",
            "<iq xmlns:p='urn:x'><q p:a='1' p:b='2'/></iq>",
            "<p:iq xmlns:p='urn:x' p:a='1'/>",
        ] {
            let e = one_element(input);
            let header = stream_header_xml(NS_CLIENT, None, None, None, None, None);
            let again = format!("{header}{}", e.to_xml_in(NS_CLIENT));
            let (events, err) = run_chunks(again.as_bytes(), &[again.len()], Limits::default());
            assert_eq!(err, None, "{input} -> {again}");
            assert_eq!(events.get(1), Some(&StreamEvent::Element(e)), "{input}");
        }
    }

    #[test]
    fn prefix_scope_ends_with_its_element() {
        let err = stream_error("<a xmlns:p='urn:p'><p:b/></a><p:c/>");
        assert!(matches!(err, XmlError::NotWellFormed(_)), "{err:?}");
        let err = stream_error("<a p:x='1'/>");
        assert!(matches!(err, XmlError::NotWellFormed(_)), "{err:?}");
    }

    #[test]
    fn decodes_entities_char_refs_and_cdata() {
        let e = one_element(
            "<body a='&lt;&amp;&#x41;&quot;'>&lt;&gt;&amp;&apos;&quot;&#65;&#x42;&#x1F600;\
             <![CDATA[<not markup> & ]]]]>tail]</body>",
        );
        assert_eq!(e.attr("a"), Some("<&A\""));
        assert_eq!(e.text(), "<>&'\"AB\u{1F600}<not markup> & ]]tail]");
    }

    #[test]
    fn normalizes_line_ends_and_attribute_whitespace() {
        let e = one_element("<b a='x\r\ny\tz&#10;'>1\r\n2\r3\n</b>");
        assert_eq!(e.attr("a"), Some("x y z\n"));
        assert_eq!(e.text(), "1\n2\n3\n");
        // A CR at the end of one feed and LF at the start of the next are still one line end.
        let input = in_stream("<b>1\r\n2</b>");
        let split = input.find('\n').unwrap();
        let (events, err) = run_chunks(input.as_bytes(), &[split, input.len()], Limits::default());
        assert_eq!(err, None);
        let StreamEvent::Element(b) = &events[1] else {
            panic!()
        };
        assert_eq!(b.text(), "1\n2");
    }

    #[test]
    fn whitespace_keepalives_are_ignored() {
        let (events, err) = parse_all(&in_stream(" \n\t\r\n<a/>\n\n<b/> "));
        assert_eq!(err, None);
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn deep_nesting_is_cut_off_before_the_end_arrives() {
        let mut r = StreamReader::new(Limits::default());
        r.feed(HEADER.as_bytes()).unwrap();
        assert!(matches!(r.next_event(), Ok(Some(StreamEvent::Header(_)))));
        r.feed("<a>".repeat(1000).as_bytes()).unwrap();
        let err = r.next_event().unwrap_err();
        assert!(matches!(err, XmlError::PolicyViolation(_)), "{err:?}");
        // Depth 16 is still fine.
        let ok = format!("{}{}", "<a>".repeat(16), "</a>".repeat(16));
        assert_eq!(stream_error_or_none(&ok), None);
        let too_deep = format!("{}{}", "<a>".repeat(16), "<a/>");
        assert!(matches!(
            stream_error(&too_deep),
            XmlError::PolicyViolation(_)
        ));
    }

    fn stream_error_or_none(body: &str) -> Option<XmlError> {
        parse_all(&in_stream(body)).1
    }

    #[test]
    fn endless_element_is_cut_off_while_feeding() {
        let limits = Limits::default();
        let mut r = StreamReader::new(limits);
        r.feed(HEADER.as_bytes()).unwrap();
        r.next_event().unwrap();
        r.feed(b"<message><body>").unwrap();
        assert_eq!(r.next_event().unwrap(), None);
        let chunk = [b'x'; 1000];
        let mut fed = "<message><body>".len();
        let err = loop {
            if let Err(e) = r.feed(&chunk).and_then(|()| r.next_event().map(|_| ())) {
                break e;
            }
            fed += chunk.len();
            assert!(fed < 2 * limits.max_element_bytes, "never cut off");
        };
        assert!(matches!(err, XmlError::PolicyViolation(_)), "{err:?}");
        // Cut off by the first feed that crossed the limit, not later.
        assert!(fed <= limits.max_element_bytes, "fed {fed}");
        assert!(fed + chunk.len() > limits.max_element_bytes);
        // A failed reader releases what the peer made it hold.
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn endless_tag_is_cut_off_while_feeding() {
        let mut r = StreamReader::new(Limits::default());
        r.feed(HEADER.as_bytes()).unwrap();
        r.next_event().unwrap();
        r.feed(b"<message a='").unwrap();
        let mut fed = 12;
        let err = loop {
            if let Err(e) = r
                .feed(&[b'y'; 999])
                .and_then(|()| r.next_event().map(|_| ()))
            {
                break e;
            }
            fed += 999;
            assert!(fed < 200_000, "never cut off");
        };
        assert!(matches!(err, XmlError::PolicyViolation(_)), "{err:?}");
        assert!(fed <= 65536 && fed + 999 > 65536, "fed {fed}");
    }

    #[test]
    fn element_exactly_at_the_limit_is_accepted() {
        let limits = Limits {
            max_element_bytes: 20,
            ..Limits::default()
        };
        let ok = in_stream("<a>0123456789abc</a>"); // 20 bytes
        assert_eq!(run_chunks(ok.as_bytes(), &[1], limits).1, None);
        let bad = in_stream("<a>0123456789abcd</a>");
        let err = run_chunks(bad.as_bytes(), &[1], limits).1.unwrap();
        assert!(matches!(err, XmlError::PolicyViolation(_)));
    }

    #[test]
    fn header_attribute_and_name_limits() {
        let big = format!(
            "<stream:stream xmlns:stream='{NS_STREAM}' pad='{}'>",
            "p".repeat(5000)
        );
        assert!(matches!(error_of(&big), XmlError::PolicyViolation(_)));
        // Same with a header that never ends.
        let mut r = StreamReader::new(Limits::default());
        r.feed(b"<stream:stream a='").unwrap();
        let mut err = None;
        for _ in 0..10 {
            if let Err(e) = r
                .feed(&[b'z'; 1000])
                .and_then(|()| r.next_event().map(|_| ()))
            {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(XmlError::PolicyViolation(_))), "{err:?}");

        let attrs: String = (0..33).map(|i| format!(" a{i}='v'")).collect();
        assert!(matches!(
            stream_error(&format!("<x{attrs}/>")),
            XmlError::PolicyViolation(_)
        ));
        let attrs: String = (0..32).map(|i| format!(" a{i}='v'")).collect();
        assert_eq!(stream_error_or_none(&format!("<x{attrs}/>")), None);
        let long = "n".repeat(257);
        assert!(matches!(
            stream_error(&format!("<{long}/>")),
            XmlError::PolicyViolation(_)
        ));
        assert!(matches!(
            stream_error(&format!("<x {long}='1'/>")),
            XmlError::PolicyViolation(_)
        ));
    }

    #[test]
    fn comments_pis_and_dtds_are_restricted_xml() {
        for body in [
            "<!-- hi -->",
            "<a><!-- hi --></a>",
            "<a><?pi x?></a>",
            "<?pi?>",
            "<a><!ENTITY x 'y'></a>",
        ] {
            let err = stream_error(body);
            assert!(matches!(err, XmlError::RestrictedXml(_)), "{body}: {err:?}");
        }
        for input in [
            "<!DOCTYPE stream>",
            "<?xml version='1.0'?><!-- c --><stream:stream>",
            "<?xml-stylesheet href='x'?>",
            "<?xml version='1.0'?><?xml version='1.0'?>",
            " <?xml version='1.0'?>",
        ] {
            let err = error_of(input);
            assert!(
                matches!(err, XmlError::RestrictedXml(_)),
                "{input}: {err:?}"
            );
        }
    }

    #[test]
    fn wrong_root_is_invalid_namespace() {
        for input in [
            "<stream:stream xmlns:stream='urn:wrong'>",
            "<stream:stream xmlns='jabber:client'>",
            "<stream xmlns='jabber:client'>",
            "<foo:stream xmlns:foo='jabber:client'>",
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>",
        ] {
            let err = error_of(input);
            assert!(
                matches!(err, XmlError::InvalidNamespace(_)),
                "{input}: {err:?}"
            );
            assert_eq!(err.condition(), "invalid-namespace");
        }
        // Any prefix is fine.
        let (events, err) = parse_all(&format!(
            "<s:stream xmlns:s='{NS_STREAM}'><s:x/></s:stream>"
        ));
        assert_eq!(err, None);
        assert_eq!(events.len(), 3);
        let StreamEvent::Element(x) = &events[1] else {
            panic!()
        };
        assert!(x.is("x", NS_STREAM));
    }

    #[test]
    fn invalid_utf8_is_not_well_formed() {
        let cases: [&[u8]; 4] = [
            b"<a>\xff</a>",
            b"<a b='\xc3\x28'/>",
            b"<a>\xe2\x82</a>", // truncated sequence followed by '<'
            b"<a\xff/>",
        ];
        for body in cases {
            let mut input = HEADER.as_bytes().to_vec();
            input.extend_from_slice(body);
            for sizes in [&[input.len()][..], &[1][..]] {
                let (_, err) = run_chunks(&input, sizes, Limits::default());
                assert!(
                    matches!(err, Some(XmlError::NotWellFormed(_))),
                    "{body:?}: {err:?}"
                );
            }
        }
        // A multibyte character split across feeds is fine.
        let e = one_element("<a>\u{e9}\u{1F600}</a>");
        assert_eq!(e.text(), "\u{e9}\u{1F600}");
    }

    #[test]
    fn other_well_formedness_errors() {
        for body in [
            "<a></b>",
            "<a><b></a></b>",
            "<a x='1' x='2'/>",
            "<a xmlns:p='u' xmlns:q='u' p:x='1' q:x='2'/>",
            "<a>&nbsp;</a>",
            "<a>&#0;</a>",
            "<a>&#xD800;</a>",
            "<a>&#x;</a>",
            "<a>&#+65;</a>",
            "<a>&#99999999999;</a>",
            "<a>&amp</a>",
            "<a>&am p;</a>",
            "<a>\u{1}</a>",
            "<a>]]></a>",
            "<a b=c/>",
            "<a b='1'c='2'/>",
            "<a b='<'/>",
            "< a/>",
            "<a/ >",
            "<a:/>",
            "<:a/>",
            "<a:b:c/>",
            "<a xmlns:p=''/>",
            "<a xmlns:xmlns='u'/>",
            "hello",
            "&amp;",
            "</a>",
            "<![CDATA[x]]>",
            "<a><![CDAT[x]]></a>",
            "</stream:stream> <a/>",
        ] {
            let err = stream_error(body);
            assert!(matches!(err, XmlError::NotWellFormed(_)), "{body}: {err:?}");
            assert_eq!(err.condition(), "not-well-formed");
        }
        for input in [
            "<?xml version='1.0' encoding='ISO-8859-1'?>",
            "<?xml encoding='UTF-8'?>",
            "text",
        ] {
            assert!(
                matches!(error_of(input), XmlError::NotWellFormed(_)),
                "{input}"
            );
        }
    }

    #[test]
    fn xml_declaration_variants_and_bom() {
        for input in [
            "<?xml version='1.0' encoding='utf-8' standalone='yes' ?>",
            "<?xml version=\"1.0\"?>\n",
            "\u{feff}<?xml version='1.0'?>",
            "",
        ] {
            let s = format!("{input}<stream:stream xmlns:stream='{NS_STREAM}'>");
            let (events, err) = parse_all(&s);
            assert_eq!(err, None, "{input}");
            assert_eq!(events.len(), 1);
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut r = StreamReader::new(Limits::default());
        r.feed(b"<!-- x -->").unwrap();
        let e1 = r.next_event().unwrap_err();
        assert_eq!(e1.condition(), "restricted-xml");
        assert_eq!(r.next_event().unwrap_err(), e1);
        assert_eq!(r.feed(HEADER.as_bytes()).unwrap_err(), e1);
        assert_eq!(r.next_event().unwrap_err(), e1);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn undrained_backlog_is_bounded() {
        let mut r = StreamReader::new(Limits::default());
        let chunk = vec![b' '; 8192];
        let mut total = 0;
        let err = loop {
            match r.feed(&chunk) {
                Ok(()) => total += chunk.len(),
                Err(e) => break e,
            }
            assert!(total < 1 << 20);
        };
        assert_eq!(err.condition(), "policy-violation");
        assert!(total <= 65536 + FEED_SLACK);
    }

    #[test]
    fn reset_expects_a_new_header() {
        let mut r = StreamReader::new(Limits::default());
        r.feed(HEADER.as_bytes()).unwrap();
        r.feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\x16\x03\x01garbage")
            .unwrap();
        assert!(matches!(r.next_event(), Ok(Some(StreamEvent::Header(_)))));
        let Ok(Some(StreamEvent::Element(e))) = r.next_event() else {
            panic!()
        };
        assert_eq!(e.name(), "starttls");
        r.reset();
        assert_eq!(r.buffered(), 0);
        r.feed(
            stream_header_xml(
                NS_CLIENT,
                None,
                Some("example.com"),
                None,
                Some("1.0"),
                None,
            )
            .as_bytes(),
        )
        .unwrap();
        let Ok(Some(StreamEvent::Header(h))) = r.next_event() else {
            panic!()
        };
        assert_eq!(h.to(), Some("example.com"));
        // reset also clears a failure.
        r.feed(b"oops").unwrap();
        assert!(r.next_event().is_err());
        r.reset();
        r.feed(HEADER.as_bytes()).unwrap();
        assert!(matches!(r.next_event(), Ok(Some(StreamEvent::Header(_)))));
    }

    #[test]
    fn self_closing_header_is_header_then_end() {
        let (events, err) = parse_all(&format!("<stream:stream xmlns:stream='{NS_STREAM}'/>"));
        assert_eq!(err, None);
        assert!(matches!(
            events.as_slice(),
            [StreamEvent::Header(_), StreamEvent::End]
        ));
    }

    #[test]
    fn stream_header_xml_escapes_and_parses_back() {
        let s = stream_header_xml(
            "jabber:client",
            Some("a'b@example.com"),
            Some("example.com"),
            Some("id<1>"),
            Some("1.0"),
            Some("en"),
        );
        assert_eq!(
            s,
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' from='a&apos;b@example.com' \
             to='example.com' id='id&lt;1&gt;' version='1.0' xml:lang='en'>"
        );
        let (events, err) = parse_all(&format!("{s}{STREAM_FOOTER}"));
        assert_eq!(err, None);
        let StreamEvent::Header(h) = &events[0] else {
            panic!()
        };
        assert_eq!(h.from(), Some("a'b@example.com"));
        assert_eq!(h.id(), Some("id<1>"));
        assert_eq!(h.lang(), Some("en"));
        assert_eq!(h.default_ns(), NS_CLIENT);
        assert_eq!(events[1], StreamEvent::End);
    }

    #[test]
    fn condition_names() {
        assert_eq!(nwf("x").condition(), "not-well-formed");
        assert_eq!(policy("x").condition(), "policy-violation");
        assert_eq!(restricted("x").condition(), "restricted-xml");
        assert_eq!(
            XmlError::InvalidNamespace("x".into()).condition(),
            "invalid-namespace"
        );
    }

    /// Feeding one byte at a time must cost O(n), not O(n²), for every kind of long token.
    #[test]
    fn byte_at_a_time_work_is_linear() {
        let n = 60_000;
        for body in [
            format!("<a v='{}'/>", "x".repeat(n)),
            format!("<a>{}</a>", "x".repeat(n)),
            format!("<a><![CDATA[{}]]></a>", "]".repeat(n)),
            format!("<a>{}</a>", "&amp;".repeat(n / 5)),
        ] {
            let input = in_stream(&body);
            let mut r = StreamReader::new(Limits::default());
            let mut events = 0;
            for b in input.as_bytes() {
                r.feed(std::slice::from_ref(b)).unwrap();
                while r.next_event().unwrap().is_some() {
                    events += 1;
                }
            }
            assert_eq!(events, 2);
            let len = input.len() as u64;
            assert!(r.work <= 8 * len, "work {} for {} bytes", r.work, len);
        }
    }

    fn tiny_limits() -> Limits {
        Limits {
            max_element_bytes: 64,
            max_depth: 3,
            max_attributes: 2,
            max_name_bytes: 8,
            max_header_bytes: 200,
        }
    }

    const FRAGMENTS: &[&str] = &[
        "<a>",
        "</a>",
        "<b x='1'/>",
        "&amp;",
        "&#x41;",
        "&",
        ";",
        "<![CDATA[",
        "]]>",
        "<!--",
        "-->",
        "<?pi?>",
        "text",
        " ",
        "\r\n",
        " xmlns='u'",
        "<p:c xmlns:p='v'>",
        "</p:c>",
        "\u{e9}",
        "\u{1F600}",
        ">",
        "<",
        "'",
        "\"",
        "/>",
        "</stream:stream>",
        "<stream:x>",
        "</stream:x>",
        "\u{0}",
    ];

    fn arb_xmlish() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<bool>(),
            prop::collection::vec(
                prop_oneof![
                    4 => (0..FRAGMENTS.len()).prop_map(|i| FRAGMENTS[i].as_bytes().to_vec()),
                    1 => prop::collection::vec(any::<u8>(), 1..3),
                ],
                0..40,
            ),
        )
            .prop_map(|(header, parts)| {
                let mut v = if header {
                    HEADER.as_bytes().to_vec()
                } else {
                    Vec::new()
                };
                for p in parts {
                    v.extend(p);
                }
                v
            })
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-zA-Z_\u{e9}][a-zA-Z0-9._\u{b7}-]{0,10}"
    }

    fn arb_ns() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(NS_CLIENT.to_owned()),
            Just(NS_SASL2.to_owned()),
            Just("urn:a".to_owned()),
            Just(String::new()),
            Just("http://x/y?a=1&b='2'<>".to_owned()),
        ]
    }

    // The writer does not escape TAB/LF/CR (and drops other controls), so values that a
    // conforming parser normalizes are left out of attribute values, and CR out of text.
    fn arb_text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 <>&'\"\\]\t\n\u{e9}\u{4e2d}\u{1F600}]{0,12}"
    }

    fn arb_attr_value() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 <>&'\"\\]\u{e9}\u{1F600}]{0,12}"
    }

    fn arb_attrs() -> impl Strategy<Value = Vec<(String, String)>> {
        (
            prop::collection::vec(
                (
                    arb_name().prop_filter("xmlns is a declaration", |n| !n.starts_with("xmlns")),
                    arb_attr_value(),
                ),
                0..4,
            ),
            prop::option::of(arb_attr_value()),
        )
            .prop_map(|(mut attrs, lang)| {
                if let Some(l) = lang {
                    attrs.push(("xml:lang".to_owned(), l));
                }
                attrs
            })
    }

    fn build(name: String, ns: String, attrs: Vec<(String, String)>, kids: Vec<Node>) -> Element {
        let mut e = Element::new(name, ns);
        for (k, v) in attrs {
            e.set_attr(k, v);
        }
        for k in kids {
            match k {
                Node::Element(c) => e.push_child(c),
                Node::Text(t) => e.push_text(t),
            }
        }
        e
    }

    fn arb_element() -> impl Strategy<Value = Element> {
        let leaf = (arb_name(), arb_ns(), arb_attrs(), arb_text())
            .prop_map(|(n, ns, a, t)| build(n, ns, a, vec![Node::Text(t)]));
        leaf.prop_recursive(4, 24, 4, |inner| {
            (
                arb_name(),
                arb_ns(),
                arb_attrs(),
                prop::collection::vec(
                    prop_oneof![
                        inner.prop_map(Node::Element),
                        arb_text().prop_map(Node::Text)
                    ],
                    0..4,
                ),
            )
                .prop_map(|(n, ns, a, kids)| build(n, ns, a, kids))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..600),
            sizes in prop::collection::vec(1usize..64, 1..16),
        ) {
            let _ = run_chunks(&data, &sizes, Limits::default());
            let _ = run_chunks(&data, &sizes, tiny_limits());
        }

        #[test]
        fn xmlish_input_never_panics_and_chunking_is_irrelevant(
            data in arb_xmlish(),
            sizes in prop::collection::vec(1usize..16, 1..16),
        ) {
            for limits in [Limits::default(), tiny_limits()] {
                let whole = run_chunks(&data, &[data.len()], limits);
                let chunked = run_chunks(&data, &sizes, limits);
                prop_assert_eq!(chunked, whole);
            }
        }

        #[test]
        fn serialized_elements_parse_back_equal(
            e in arb_element(),
            sizes in prop::collection::vec(1usize..32, 1..8),
        ) {
            let header =
                stream_header_xml(NS_CLIENT, None, Some("example.com"), None, Some("1.0"), None);
            let input = format!("{header}{}{STREAM_FOOTER}", e.to_xml_in(NS_CLIENT));
            for sizes in [&[input.len()][..], &sizes[..]] {
                let (events, err) = run_chunks(input.as_bytes(), sizes, Limits::default());
                prop_assert_eq!(err, None);
                prop_assert_eq!(events.len(), 3);
                prop_assert_eq!(&events[1], &StreamEvent::Element(e.clone()));
                prop_assert_eq!(&events[2], &StreamEvent::End);
            }
        }
    }
}
