//! The bounded stream reader on arbitrary bytes, fed in arbitrary chunks.

use minidom::Element;

use crate::stream::{Limits, StreamEvent, StreamReader, XmlError, write_element};
use crate::xmpp::ns;

const HEADER: &str = "<stream:stream xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams'>";

/// Events until the first error, and that error's condition.
fn run(data: &[u8], mut chunk: impl FnMut() -> usize) -> (Vec<StreamEvent>, Option<String>) {
    let mut reader = StreamReader::new(Limits::default());
    let mut events = Vec::new();
    let mut rest = data;
    let condition = |e: XmlError| Some(e.condition().to_string());
    while !rest.is_empty() {
        let n = chunk().clamp(1, rest.len());
        let (now, later) = rest.split_at(n);
        rest = later;
        if let Err(e) = reader.feed(now) {
            return (events, condition(e));
        }
        loop {
            match reader.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return (events, condition(e)),
            }
        }
    }
    (events, None)
}

fn reparse(el: &Element) {
    let mut xml = String::new();
    write_element(&mut xml, el, ns::JABBER_CLIENT);
    // Escaping may make the text longer than the original, and declarations may be added
    // (the default namespace, and a prefix per prefixed attribute): relax the size limits.
    let limits = Limits {
        max_element_bytes: usize::MAX / 4,
        max_attributes: 2 * Limits::default().max_attributes + 1,
        ..Limits::default()
    };
    let mut r = StreamReader::new(limits);
    r.feed(HEADER.as_bytes()).expect("header");
    r.feed(xml.as_bytes()).expect("element");
    match r.next_event() {
        Ok(Some(StreamEvent::Header(_))) => {}
        other => panic!("header: {other:?}"),
    }
    match r.next_event() {
        Ok(Some(StreamEvent::Element(back))) => {
            assert!(&back == el, "round trip changed the element; xml: {xml}")
        }
        other => panic!("re-parse of {xml:?} failed: {other:?}"),
    }
}

/// Input: byte 0 picks the chunking (0 = all at once, otherwise chunk sizes drawn from
/// `1..=byte0` by a generator seeded with it), the rest is the stream. Checks, besides "no
/// panic, no hang, no unbounded memory": the events and the error condition do not depend on
/// the chunking, and every element written with [`write_element`] parses back equal.
pub fn stream_reader(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let whole = run(stream, || usize::MAX);
    if sel != 0 {
        let chunking = |sel: u8| {
            let mut state = u32::from(sel).wrapping_mul(0x9E37_79B9) | 1;
            move || {
                // xorshift32
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                1 + (state % u32::from(sel)) as usize
            }
        };
        let chunked = run(stream, chunking(sel));
        if whole != chunked {
            // rxml may hold a token at the end of the input until it sees the next byte (a
            // trailing CR could start a CRLF), so one run can detect an error that the other
            // reports only once more input arrives. The events must agree, and with one more
            // byte both must reach the same answer.
            assert!(
                whole.0 == chunked.0 && (whole.1.is_none() || chunked.1.is_none()),
                "outcome depends on chunking (max chunk {sel}): {whole:?} vs {chunked:?}"
            );
            let mut longer = stream.to_vec();
            longer.push(b'<');
            let a = run(&longer, || usize::MAX);
            let b = run(&longer, chunking(sel));
            assert!(
                a.1.is_some() && a.1 == b.1,
                "outcome depends on chunking (max chunk {sel}), also with one more byte: \
                 {a:?} vs {b:?}"
            );
        }
    }
    for ev in &whole.0 {
        if let StreamEvent::Element(el) = ev {
            reparse(el);
        }
    }
}
