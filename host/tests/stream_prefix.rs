//! `<stream:features>` and `<stream:error>` on the wire, read as raw bytes: on the STARTTLS and
//! the direct-TLS listener, before and after TLS, after a SASL2 success and after an RFC 6120
//! SASL restart, and for stream errors.
//!
//! The stream header declares `xmlns:stream='http://etherx.jabber.org/streams'`, and RFC
//! 6120's examples, RFC 3920 §11.2.1 ("SHOULD generate only the 'stream:' prefix") and every
//! peer server then write `<stream:features>` and `<stream:error>`. `<features
//! xmlns='http://etherx.jabber.org/streams'>` is well-formed XML with the same meaning, but
//! clients exist that match the literal prefix. These tests read what the host wrote, not what
//! a parser made of it.

use std::future::Future;
use std::time::Duration;

use sasl2_fast::stream::stream_header_xml;
use sasl2_fast::xmpp::ns;
use sasl2_fast_host::client::{Client, ClientError, LoginOptions, Tls};
use sasl2_fast_host::harness::TestHost;

type TResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const ALICE: &str = "alice@localhost";
const UA: &str = "2f0e4c7a-5d1b-4e8f-9a3c-6b7d8e9f0a1b";
/// How the stream header declares the prefix; the only place the streams namespace may appear.
const DECLARATION: &str = "xmlns:stream='http://etherx.jabber.org/streams'";

async fn bounded(secs: u64, f: impl Future<Output = TResult>) -> TResult {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| format!("test did not finish within {secs} s"))?
}

/// What the host wrote after its stream header, when `bytes` begins with one.
fn after_header(bytes: &[u8]) -> Result<String, String> {
    let text = String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?;
    let start = text
        .find("<stream:stream")
        .ok_or_else(|| format!("no stream header in {text}"))?;
    let end = text[start..].find('>').ok_or("unfinished stream header")? + start + 1;
    Ok(text[end..].to_owned())
}

/// The streams namespace is named only where a stream header declares the `stream:` prefix:
/// no element re-declares it as its default namespace.
fn assert_declared_only_by_headers(bytes: &[u8], what: &str) {
    let text = String::from_utf8_lossy(bytes);
    assert_eq!(
        text.matches(ns::STREAM).count(),
        text.matches(DECLARATION).count(),
        "{what}: the streams namespace outside a stream header:\n{text}"
    );
}

/// `xml` is one `<stream:features>` element, empty or not.
fn assert_stream_features(xml: &str, what: &str) {
    assert!(
        xml == "<stream:features/>"
            || (xml.starts_with("<stream:features>") && xml.ends_with("</stream:features>")),
        "{what}: not <stream:features>: {xml}"
    );
}

/// Reads the stream header and features the host answers to a header (the client's own, or
/// `header`), and returns the bytes of both.
async fn features_bytes(c: &mut Client, header: Option<&str>) -> Result<Vec<u8>, ClientError> {
    c.capture_received();
    match header {
        Some(h) => c.send_raw(h.as_bytes()).await?,
        None => c.open_stream().await?,
    }
    let read = c.read_stream_start().await.map(|_| ());
    let bytes = c.take_received();
    read.map(|()| bytes)
}

#[tokio::test]
async fn features_are_stream_features_before_and_after_tls_and_after_success() -> TResult {
    bounded(60, async {
        let t = TestHost::start(TestHost::config()).await?;

        // The STARTTLS listener's first features, on the plaintext stream.
        let mut c = Client::establish(t.opts(Tls::None, Some(ALICE))?).await?;
        let bytes = features_bytes(&mut c, None).await?;
        let pre_tls = after_header(&bytes)?;
        assert_stream_features(&pre_tls, "before TLS");
        assert!(pre_tls.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"));
        assert_declared_only_by_headers(&bytes, "before TLS");

        for tls in [Tls::StartTls, Tls::Direct] {
            // After TLS: the first features of the direct-TLS listener, the second of the
            // STARTTLS one.
            let mut c = Client::establish(t.opts(tls, Some(ALICE))?).await?;
            let bytes = features_bytes(&mut c, None).await?;
            let features = after_header(&bytes)?;
            assert_stream_features(&features, &format!("{tls:?} after TLS"));
            assert!(features.contains("<authentication xmlns='urn:xmpp:sasl:2'>"));
            assert_declared_only_by_headers(&bytes, &format!("{tls:?} after TLS"));

            // After a SASL2 success, on the same stream: with Bind 2 (no features to offer)
            // and without (RFC 6120 binding offered).
            for bind in [true, false] {
                let mut options = LoginOptions::agent(UA);
                if bind {
                    options = options.bind("prefix");
                }
                let mut c = t.connect(tls, Some(ALICE)).await?;
                c.capture_received();
                c.login_scram("alice", "alicepass", "SCRAM-SHA-256", &options)
                    .await?
                    .into_success()?;
                let bytes = c.take_received();
                let text = String::from_utf8(bytes.clone())?;
                let after = text
                    .split_once("</success>")
                    .ok_or("no </success>")?
                    .1
                    .to_owned();
                let what = format!("{tls:?} after SASL2 success, bind {bind}");
                assert_stream_features(&after, &what);
                assert_eq!(
                    after.contains("urn:ietf:params:xml:ns:xmpp-bind"),
                    !bind,
                    "{what}"
                );
                assert_declared_only_by_headers(&bytes, &what);
            }

            // After RFC 6120 SASL, on the restarted stream (§6.4.6).
            let mut c = t.connect(tls, Some(ALICE)).await?;
            c.capture_received();
            c.login_scram_rfc6120("alice", "alicepass", "SCRAM-SHA-256")
                .await?
                .into_success()?;
            let bytes = c.take_received();
            let text = String::from_utf8(bytes.clone())?;
            let restarted = text.split_once("<stream:stream").ok_or("no restart")?.1;
            let features = restarted
                .split_once('>')
                .ok_or("unfinished stream header")?
                .1;
            let features = &features[..features.find("<iq").ok_or("no bind result")?];
            let what = format!("{tls:?} after RFC 6120 SASL");
            assert_stream_features(features, &what);
            assert_declared_only_by_headers(&bytes, &what);
        }
        t.shutdown().await;
        Ok(())
    })
    .await
}

/// The stream error the host wrote, from the bytes after its stream header.
fn assert_stream_error(xml: &str, condition: &str, what: &str) {
    let expected =
        format!("<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
    assert!(xml.starts_with(&expected), "{what}: not {expected}…: {xml}");
    assert!(xml.contains("</stream:error>"), "{what}: {xml}");
}

#[tokio::test]
async fn stream_errors_are_stream_error_before_and_after_tls_and_after_success() -> TResult {
    bounded(60, async {
        let t = TestHost::start(TestHost::config()).await?;
        let foreign = "alice@example.org";
        let refused = |r: Result<Vec<u8>, ClientError>, what: &str| match r {
            Err(ClientError::StreamError { condition, .. }) => {
                assert_eq!(condition, "invalid-from", "{what}");
            }
            other => panic!("{what}: expected invalid-from, got {:?}", other.map(|_| ())),
        };

        // STARTTLS listener, plaintext stream: a `from` of another domain.
        let mut c = Client::establish(t.opts(Tls::None, Some(foreign))?).await?;
        c.capture_received();
        c.open_stream().await?;
        refused(
            c.read_stream_start().await.map(|_| Vec::new()),
            "before TLS",
        );
        let bytes = c.take_received();
        assert_stream_error(&after_header(&bytes)?, "invalid-from", "before TLS");
        assert_declared_only_by_headers(&bytes, "before TLS");

        // After TLS on both listeners: the same `from` in the first header sent over TLS.
        let header = stream_header_xml(
            ns::JABBER_CLIENT,
            Some(foreign),
            Some("localhost"),
            None,
            Some("1.0"),
            None,
        );
        for tls in [Tls::StartTls, Tls::Direct] {
            let what = format!("{tls:?} after TLS");
            let mut c = Client::establish(t.opts(tls, None)?).await?;
            c.capture_received();
            c.send_raw(header.as_bytes()).await?;
            refused(c.read_stream_start().await.map(|_| Vec::new()), &what);
            let bytes = c.take_received();
            assert_stream_error(&after_header(&bytes)?, "invalid-from", &what);
            assert_declared_only_by_headers(&bytes, &what);
        }

        // After a SASL2 success: a second <authenticate> on the authenticated stream.
        for tls in [Tls::StartTls, Tls::Direct] {
            let what = format!("{tls:?} after SASL2 success");
            let mut c = t.connect(tls, Some(ALICE)).await?;
            c.login_scram(
                "alice",
                "alicepass",
                "SCRAM-SHA-256",
                &LoginOptions::agent(UA).bind("prefix"),
            )
            .await?
            .into_success()?;
            c.capture_received();
            c.send_raw(
                b"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'>\
                  <initial-response>AGFsaWNlAGFsaWNlcGFzcw==</initial-response></authenticate>",
            )
            .await?;
            match c.recv().await {
                Err(ClientError::StreamError { .. }) => {}
                other => panic!(
                    "{what}: expected a stream error, got {:?}",
                    other.map(|_| ())
                ),
            }
            let bytes = c.take_received();
            let text = String::from_utf8(bytes.clone())?;
            assert!(
                text.starts_with("<stream:error><") && text.contains("</stream:error>"),
                "{what}: {text}"
            );
            assert_declared_only_by_headers(&bytes, &what);
        }
        t.shutdown().await;
        Ok(())
    })
    .await
}
