//! The SASL2 negotiator with real mechanisms (PLAIN, SCRAM-SHA-256, SCRAM-SHA-256-PLUS) and
//! the FAST plugin, fed the elements a client sends before authentication.
//!
//! Input: the content of a client stream (a fixed stream header is prepended); every element
//! the stream reader yields goes to one `Negotiator` on a TLS 1.3 stream, as a host would do,
//! until the negotiator asks for a stream error. Any event is fine; panics are not.
//!
//! The token store is created per execution so state never accumulates across inputs. SCRAM
//! uses a fixed server nonce ("fuzz") so the client-final parser is reachable. The account
//! `user`/`pencil` has the salt `fuzz-salt` (so seeds can carry valid proofs) and 1 PBKDF2
//! iteration, to keep executions cheap.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sasl2_fast::fast::{FastConfig, FastPlugin, FastTokens, Pepper};
use sasl2_fast::sasl2::accounts::{MemoryAccounts, ScramHash};
use sasl2_fast::sasl2::plain::PlainProvider;
use sasl2_fast::sasl2::scram::{ScramProvider, derive_credentials_with_salt};
use sasl2_fast::sasl2::{
    ChannelBindings, Negotiator, NegotiatorEvent, Sasl2Server, StreamInfo, TlsInfo, TlsVersion,
};
use sasl2_fast::store::memory::MemoryStore;
use sasl2_fast::xml::reader::{Limits, StreamEvent, StreamReader};

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
                        xmlns:stream='http://etherx.jabber.org/streams' to='example.com'>";

struct Fixture {
    rt: tokio::runtime::Runtime,
    accounts: Arc<MemoryAccounts>,
    stream: StreamInfo,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let accounts = Arc::new(MemoryAccounts::new());
        // A fixed salt (and 1 iteration), so seed inputs can carry valid SCRAM proofs.
        let creds = derive_credentials_with_salt(ScramHash::Sha256, "pencil", b"fuzz-salt", 1);
        accounts.set_credentials("user", ScramHash::Sha256, creds);
        Fixture {
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
            accounts,
            stream: StreamInfo {
                domain: "example.com".into(),
                from: Some("user@example.com".into()),
                tls: Some(TlsInfo {
                    version: TlsVersion::Tls13,
                    channel_bindings: ChannelBindings {
                        tls_exporter: Some(vec![0x42; 32]),
                        tls_server_end_point: Some(vec![0xEE; 32]),
                        tls_unique: None,
                    },
                }),
                allow_plaintext: false,
                peer: None,
            },
        }
    })
}

fn server(f: &Fixture) -> Arc<Sasl2Server> {
    let a = &f.accounts;
    let tokens = FastTokens::new(
        Arc::new(MemoryStore::new()),
        Pepper::from_bytes([1; 32]),
        FastConfig::default(),
    );
    Arc::new(
        Sasl2Server::builder()
            .mechanism(Arc::new(
                ScramProvider::new(ScramHash::Sha256, true, a.clone())
                    .with_fake_iterations(1)
                    .dangerous_fixed_nonce_for_tests("fuzz"),
            ))
            .mechanism(Arc::new(
                ScramProvider::new(ScramHash::Sha256, false, a.clone())
                    .with_fake_iterations(1)
                    .dangerous_fixed_nonce_for_tests("fuzz"),
            ))
            .mechanism(Arc::new(
                PlainProvider::new(a.clone()).with_fake_iterations(1),
            ))
            .inline_feature(Arc::new(FastPlugin::new(Arc::new(tokens))))
            .build(),
    )
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut reader = StreamReader::new(Limits::default());
    reader.feed(HEADER).unwrap();
    if reader.feed(data).is_err() {
        return;
    }
    let mut neg = Negotiator::new(server(f), f.stream.clone());
    // What a host sends in <stream:features>; serializing it is part of every connection.
    for el in neg.features() {
        let _ = el.to_xml();
    }
    f.rt.block_on(async {
        loop {
            let el = match reader.next_event() {
                Ok(Some(StreamEvent::Element(el))) => el,
                Ok(Some(StreamEvent::Header(_))) => continue,
                Ok(Some(StreamEvent::End)) | Ok(None) | Err(_) => return,
            };
            match neg.handle(el).await {
                NegotiatorEvent::Challenge(e) | NegotiatorEvent::Failure { element: e, .. } => {
                    let _ = e.to_xml();
                }
                NegotiatorEvent::Success { element, .. } => {
                    let _ = element.to_xml();
                    assert!(neg.is_authenticated());
                }
                NegotiatorEvent::StreamError { send, .. } => {
                    if let Some(e) = send {
                        let _ = e.to_xml();
                    }
                    return;
                }
            }
        }
    });
});
