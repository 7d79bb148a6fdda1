//! The bounded stream reader on arbitrary bytes, fed in arbitrary chunks.
//!
//! Input: byte 0 picks the chunking (0 = all at once, otherwise chunk sizes drawn from
//! `1..=byte0` by a generator seeded with it), the rest is the stream.
//!
//! Checks, besides "no panic, no hang, no unbounded memory":
//! - the outcome (events, then the error if any) does not depend on the chunking, as the
//!   module docs promise;
//! - every element serializes with `to_xml_in("jabber:client")` into XML that parses back to
//!   an equal element.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sasl2_fast::xml::Element;
use sasl2_fast::xml::reader::{Limits, StreamEvent, StreamReader, XmlError};

const HEADER: &str = "<stream:stream xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams'>";

/// Events until the first error, and that error.
fn run(data: &[u8], mut chunk: impl FnMut() -> usize) -> (Vec<StreamEvent>, Option<XmlError>) {
    let mut reader = StreamReader::new(Limits::default());
    let mut events = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = chunk().clamp(1, rest.len());
        let (now, later) = rest.split_at(n);
        rest = later;
        if let Err(e) = reader.feed(now) {
            return (events, Some(e));
        }
        loop {
            match reader.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

fn reparse(el: &Element) {
    let xml = el.to_xml_in("jabber:client");
    // Escaping may make the text longer than the original, and `xmlns` declarations may be
    // added (the default namespace, and the prefix of each prefixed attribute):
    // relax the size limits, keep everything else.
    let limits = Limits {
        max_element_bytes: usize::MAX / 4,
        max_attributes: 2 * Limits::default().max_attributes + 1,
        ..Limits::default()
    };
    let mut r = StreamReader::new(limits);
    r.feed(HEADER.as_bytes()).unwrap();
    r.feed(xml.as_bytes()).unwrap();
    match r.next_event() {
        Ok(Some(StreamEvent::Header(_))) => {}
        other => panic!("header: {other:?}"),
    }
    match r.next_event() {
        Ok(Some(StreamEvent::Element(back))) => {
            assert_eq!(&back, el, "round trip changed the element; xml: {xml}")
        }
        other => panic!("re-parse of {xml:?} failed: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let whole = run(stream, || usize::MAX);
    if sel != 0 {
        let mut state = u32::from(sel).wrapping_mul(0x9E37_79B9) | 1;
        let chunked = run(stream, || {
            // xorshift32
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            1 + (state % u32::from(sel)) as usize
        });
        assert_eq!(
            whole, chunked,
            "outcome depends on chunking (max chunk {sel})"
        );
    }
    for ev in &whole.0 {
        if let StreamEvent::Element(el) = ev {
            reparse(el);
        }
    }
});
