//! TLS 1.3 early data on the direct-TLS port: the stream header and one SASL2
//! `<authenticate>`, read once the handshake is complete (Z-8) and marked as early for the
//! negotiator (`Negotiator::set_early_data`), which, with FAST, applies Z-1..Z-5.

use minidom::Element;
use sasl2_fast::stream::StreamEvent;
use sasl2_fast::xmpp::ns;
use xmpp_parsers::stream_error::DefinedCondition;

use super::{Conn, Flow};

impl Conn {
    /// Serves the early data of a connection; `false` when the connection is to be closed
    /// (what it was sent is flushed already).
    pub(super) async fn serve_early_data(&mut self, data: &[u8]) -> bool {
        let shared = self.shared.clone();
        let Some(early) = shared.early_data.as_ref() else {
            return false;
        };
        early.counts.count_accepted();
        let flow = self.on_early_bytes(data).await;
        if self.authed.is_some() {
            early.counts.count_login();
        }
        // Whatever follows arrived after the handshake.
        if let Some(n) = self.negotiator.as_mut() {
            n.set_early_data(false);
        }
        self.flush().await.is_ok() && flow == Flow::Continue
    }

    async fn on_early_bytes(&mut self, data: &[u8]) -> Flow {
        if let Err(e) = self.reader.feed(data) {
            return self.stream_error(e.condition(), None);
        }
        // Z-6 (H-8) is checked on the whole early data before any of it is acted on: a flight
        // with more than the header and one <authenticate> logs nobody in.
        let mut events = Vec::new();
        loop {
            match self.reader.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return self.stream_error(e.condition(), None),
            }
        }
        let shape_ok = match events.as_slice() {
            [] | [StreamEvent::Header(_)] => true,
            [StreamEvent::Header(_), StreamEvent::Element(el)] => is_authenticate(el),
            _ => false,
        };
        // The early data ends with the <authenticate> (or the header): the start of another
        // element, or half of one, is refused too.
        if !shape_ok || !self.reader.at_unit_boundary() || self.header_sent {
            return self.refuse_early_data();
        }
        for ev in events {
            let flow = match ev {
                StreamEvent::Header(h) => {
                    let flow = self.on_header(&h);
                    if let Some(n) = self.negotiator.as_mut() {
                        n.set_early_data(true);
                    }
                    flow
                }
                StreamEvent::Element(el) if self.negotiator.is_some() => self.on_element(el).await,
                _ => return self.refuse_early_data(),
            };
            if flow != Flow::Continue {
                return flow;
            }
        }
        Flow::Continue
    }

    fn refuse_early_data(&mut self) -> Flow {
        if let Some(e) = &self.shared.early_data {
            e.counts.count_refused();
        }
        self.stream_error(
            DefinedCondition::PolicyViolation,
            Some("TLS early data may only hold the stream header and one <authenticate>"),
        )
    }
}

fn is_authenticate(el: &Element) -> bool {
    el.is("authenticate", ns::SASL2)
}
