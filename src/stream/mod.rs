//! A bounded, incremental (sans-IO) reader for XMPP streams, as a thin layer over rxml, and
//! the writer for elements inside a stream.
//!
//! [`StreamReader`] turns bytes from a socket into [`StreamEvent`]s: the stream header, one
//! [`minidom::Element`] per top-level element, and the end of the stream. rxml (the parser
//! under minidom) does the XML: well-formedness, namespaces, and RFC 6120 §11's restricted
//! XML (no DTD, entity declarations, comments or processing instructions). rxml only bounds
//! the length of one token, so every other bound an unauthenticated peer must not exceed lives
//! here, in [`Limits`]: bytes per top-level element and for the stream prologue, nesting
//! depth, attributes per element, name length, and unparsed backlog.
//!
//! Limits are enforced by position: the reader never hands rxml a byte beyond the current
//! budget (the header budget before the stream header, the element budget inside a top-level
//! element). An endless element is therefore cut off as soon as it passes the limit, and the
//! outcome (events and error) does not depend on how the input was chunked.
//!
//! [`write_element`] serializes a top-level element the way the reader reads it back.
//! [`ElementBudget`] bounds elements for hosts that parse with another reader (tokio-xmpp).

mod budget;
mod header;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

use xmpp_parsers::stream_error::DefinedCondition;

pub use budget::ElementBudget;
pub use header::StreamHeader;
pub use reader::StreamReader;
pub use writer::{stream_header_xml, to_xml, write_element, write_stream_error};

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
#[non_exhaustive]
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

impl Limits {
    /// The defaults with another element size limit.
    pub fn with_max_element_bytes(mut self, bytes: usize) -> Self {
        self.max_element_bytes = bytes;
        self
    }
}

/// What the reader produced.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// The stream header arrived.
    Header(StreamHeader),
    /// A complete top-level element (stanza or nonza) arrived. Its `Debug` is minidom's, which
    /// prints everything: log it through [`crate::xmpp::Redacted`].
    Element(minidom::Element),
    /// The peer closed the stream (`</stream:stream>`).
    End,
}

/// Why the reader rejected the input. Each variant maps to an RFC 6120 §4.9.3 stream error.
/// The texts never quote the input (it may hold credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The input is not well-formed XML (or not namespace-well-formed).
    #[error("not-well-formed: {0}")]
    NotWellFormed(String),
    /// The input exceeded a [`Limits`] bound.
    #[error("policy-violation: {0}")]
    PolicyViolation(String),
    /// The input used XML features RFC 6120 §11.1 forbids (comments, PIs, DTDs, entities).
    #[error("restricted-xml: {0}")]
    RestrictedXml(String),
    /// The stream root is not `stream` in `http://etherx.jabber.org/streams`.
    #[error("invalid-namespace: {0}")]
    InvalidNamespace(String),
}

impl XmlError {
    /// The RFC 6120 §4.9.3 stream error condition to send before closing the stream.
    pub fn condition(&self) -> DefinedCondition {
        match self {
            XmlError::NotWellFormed(_) => DefinedCondition::NotWellFormed,
            XmlError::PolicyViolation(_) => DefinedCondition::PolicyViolation,
            XmlError::RestrictedXml(_) => DefinedCondition::RestrictedXml,
            XmlError::InvalidNamespace(_) => DefinedCondition::InvalidNamespace,
        }
    }
}
