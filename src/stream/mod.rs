//! TEMPORARY adapter: the old hand-written reader behind the new `stream` API, so the host
//! builds while the rxml-based reader is finished. Replaced wholesale by that reader.
#![allow(missing_docs)]

use minidom::Element;
use xmpp_parsers::stream_error::DefinedCondition;

pub use crate::xml::reader::{FEED_SLACK, Limits, STREAM_FOOTER, StreamHeader, stream_header_xml};

#[derive(Debug)]
pub enum StreamEvent {
    Header(StreamHeader),
    Element(Element),
    End,
}

#[derive(Debug, Clone)]
pub struct XmlError(crate::xml::reader::XmlError);

impl XmlError {
    pub fn condition(&self) -> DefinedCondition {
        match self.0.condition() {
            "not-well-formed" => DefinedCondition::NotWellFormed,
            "restricted-xml" => DefinedCondition::RestrictedXml,
            "invalid-namespace" => DefinedCondition::InvalidNamespace,
            _ => DefinedCondition::PolicyViolation,
        }
    }
}

#[derive(Debug)]
pub struct StreamReader(crate::xml::reader::StreamReader);

impl StreamReader {
    pub fn new(limits: Limits) -> Self {
        StreamReader(crate::xml::reader::StreamReader::new(limits))
    }
    pub fn feed(&mut self, data: &[u8]) -> Result<(), XmlError> {
        self.0.feed(data).map_err(XmlError)
    }
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        use crate::xml::reader::StreamEvent as E;
        Ok(self.0.next_event().map_err(XmlError)?.map(|e| match e {
            E::Header(h) => StreamEvent::Header(h),
            E::Element(el) => StreamEvent::Element(convert(&el)),
            E::End => StreamEvent::End,
        }))
    }
    pub fn reset(&mut self) {
        self.0.reset()
    }
}

fn convert(el: &crate::xml::Element) -> Element {
    let mut out = Element::bare(el.name(), el.ns());
    for (k, v) in el.attrs() {
        let (ns, name) = match k.strip_prefix("xml:") {
            Some(n) => (rxml::Namespace::xml().clone(), n),
            None => (rxml::Namespace::NONE, k),
        };
        if let Ok(name) = rxml::NcName::try_from(name) {
            out.set_attr(ns, name, v);
        }
    }
    for n in el.nodes() {
        match n {
            crate::xml::Node::Element(c) => {
                out.append_child(convert(c));
            }
            crate::xml::Node::Text(t) => out.append_text(t.clone()),
        }
    }
    out
}

pub fn write_element(out: &mut String, el: &Element, _stream_ns: &str) {
    out.push_str(&String::from(el));
}
