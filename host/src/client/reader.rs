//! The client's side of the XML stream, parsed the way minidom parses: rxml's `RawParser` feeding
//! minidom's `TreeBuilder`, one top-level element at a time. Deliberately not the server's
//! bounded reader (`sasl2_fast::stream`): an independent parser catches what a shared one
//! would hide.

use minidom::Element;
use minidom::tree_builder::TreeBuilder;
use rxml::{Parse as _, RawParser, error::EndOrError};

/// What the client reads.
#[derive(Debug)]
pub enum ClientEvent {
    /// The server's stream header, as the (childless) `<stream:stream>` element with its
    /// attributes.
    Header(Element),
    /// A top-level element.
    Element(Element),
    /// `</stream:stream>`.
    End,
}

/// Bytes this client buffers for one element before it gives up on a server (generous: the
/// client trusts the server it tests, this only stops a runaway).
const MAX_PENDING: usize = 1 << 20;

/// An incremental reader of one stream.
pub struct ClientReader {
    parser: RawParser,
    tree: TreeBuilder,
    header_seen: bool,
    ended: bool,
    pending: Vec<u8>,
}

impl std::fmt::Debug for ClientReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientReader")
            .field("depth", &self.tree.depth())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Default for ClientReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientReader {
    /// A reader expecting a stream header.
    pub fn new() -> Self {
        ClientReader {
            parser: RawParser::new(),
            tree: TreeBuilder::new(),
            header_seen: false,
            ended: false,
            pending: Vec::new(),
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        if self.pending.len() + data.len() > MAX_PENDING {
            return Err("server sent more than 1 MiB without completing an element".into());
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }

    /// The next event, or `None` if more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<ClientEvent>, String> {
        if self.ended {
            return Ok(None);
        }
        loop {
            let mut input = &self.pending[..];
            let before = input.len();
            let ev = self.parser.parse(&mut input, false);
            let used = before - input.len();
            self.pending.drain(..used);
            let ev = match ev {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    self.ended = true;
                    return Ok(Some(ClientEvent::End));
                }
                Err(EndOrError::NeedMoreData) => return Ok(None),
                Err(EndOrError::Error(e)) => return Err(format!("server XML: {e}")),
            };
            let closes = matches!(ev, rxml::RawEvent::ElementFoot(_));
            let opens = matches!(ev, rxml::RawEvent::ElementHeadClose(_));
            self.tree
                .process_event(ev)
                .map_err(|e| format!("server XML: {e}"))?;
            let depth = self.tree.depth();
            if opens && depth == 1 && !self.header_seen {
                self.header_seen = true;
                if let Some(h) = self.tree.top() {
                    return Ok(Some(ClientEvent::Header(h.clone())));
                }
            }
            if closes {
                match depth {
                    // A top-level child completed: take it out of the stream element.
                    1 => {
                        if let Some(el) = self.tree.unshift_child() {
                            return Ok(Some(ClientEvent::Element(el)));
                        }
                    }
                    0 => {
                        self.ended = true;
                        return Ok(Some(ClientEvent::End));
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_elements_and_end_in_pieces() {
        let doc = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='x' version='1.0'>\
            <stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>\
            <iq type='result' id='1'/></stream:stream>";
        let mut r = ClientReader::new();
        let mut events = Vec::new();
        for chunk in doc.chunks(7) {
            r.feed(chunk).unwrap();
            while let Some(ev) = r.next_event().unwrap() {
                events.push(ev);
            }
        }
        assert!(matches!(&events[0], ClientEvent::Header(h) if h.attr("id") == Some("x")));
        assert!(
            matches!(&events[1], ClientEvent::Element(e) if e.is("features", "http://etherx.jabber.org/streams"))
        );
        assert!(matches!(&events[2], ClientEvent::Element(e) if e.is("iq", "jabber:client")));
        assert!(matches!(&events[3], ClientEvent::End));
    }
}
