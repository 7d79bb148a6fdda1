//! The pre-authentication surface: the negotiator with real mechanisms and FAST, the SCRAM
//! and PLAIN mechanisms on raw messages, and the HT initiator parser.

use std::sync::{Arc, OnceLock};

use crate::fast::ht::{MAX_AUTHCID_BYTES, parse_initiator};
use crate::fast::{FastConfig, FastPlugin, FastTokens, HtMechanism, Pepper};
use crate::sasl2::UnknownAccounts;
use crate::sasl2::accounts::MemoryAccounts;
use crate::sasl2::credentials::derive_credentials_with_salt;
use crate::sasl2::plain::PlainProvider;
use crate::sasl2::scram::ScramProvider;
use crate::sasl2::{
    AuthenticateRequest, ChannelBindings, MAX_SASL_PAYLOAD, MechanismProvider, Negotiator,
    NegotiatorEvent, Sasl2Server, ScramHash, Step, StreamInfo, TlsInfo, TlsVersion,
};
use crate::store::memory::MemoryStore;
use crate::stream::{Limits, StreamEvent, StreamReader, to_xml};

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
                        xmlns:stream='http://etherx.jabber.org/streams' to='example.com'>";

struct Fixture {
    rt: tokio::runtime::Runtime,
    accounts: Arc<MemoryAccounts>,
    stream: StreamInfo,
}

/// Shared across executions: the account `user`/`pencil` with the salt `fuzz-salt` and one
/// PBKDF2 iteration (so seeds can carry valid proofs and executions stay cheap).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let accounts = Arc::new(MemoryAccounts::new());
        let creds = derive_credentials_with_salt(ScramHash::Sha256, "pencil", b"fuzz-salt", 1);
        accounts.set_credentials("user", ScramHash::Sha256, creds);
        Fixture {
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            accounts,
            stream: StreamInfo::new("example.com")
                .with_from(Some(jid::BareJid::new("user@example.com").expect("jid")))
                .with_tls(TlsInfo::new(
                    TlsVersion::Tls13,
                    ChannelBindings::none()
                        .with_tls_exporter([0x42; 32])
                        .with_tls_server_end_point([0xEE; 32]),
                )),
        }
    })
}

fn scram_provider(a: &Arc<MemoryAccounts>, plus: bool) -> ScramProvider {
    ScramProvider::new(ScramHash::Sha256, plus, a.clone())
        .with_unknown_accounts(UnknownAccounts::default().with_iterations(1))
        .dangerous_fixed_nonce_for_tests("fuzz")
}

/// A fresh server per execution (a fresh token store), so state never accumulates across
/// inputs. RFC 6120 SASL is on, so `<auth>` is reachable too.
fn server(f: &Fixture) -> Arc<Sasl2Server> {
    let tokens = FastTokens::new(
        Arc::new(MemoryStore::new()),
        Pepper::from_bytes([1; 32]),
        FastConfig::default(),
    );
    Arc::new(
        Sasl2Server::builder()
            .rfc6120_sasl(true)
            .mechanism(Arc::new(scram_provider(&f.accounts, true)))
            .mechanism(Arc::new(scram_provider(&f.accounts, false)))
            .mechanism(Arc::new(
                PlainProvider::new(f.accounts.clone())
                    .with_unknown_accounts(UnknownAccounts::default().with_iterations(1)),
            ))
            .inline_feature(Arc::new(crate::sasl2::bind2::Bind2::new()))
            .inline_feature(Arc::new(FastPlugin::new(Arc::new(tokens))))
            .build(),
    )
}

/// Input: the content of a client stream (a fixed header is prepended); every element the
/// reader yields goes to one negotiator on a TLS 1.3 stream, as a host would do, until a
/// stream error. Any event is fine; panics are not.
pub fn negotiator(data: &[u8]) {
    let f = fixture();
    let mut reader = StreamReader::new(Limits::default());
    reader.feed(HEADER).expect("header");
    if reader.feed(data).is_err() {
        return;
    }
    let mut neg = Negotiator::new(server(f), f.stream.clone());
    // What a host sends in <stream:features>; serializing it is part of every connection.
    for el in neg.features() {
        let _ = to_xml(&el);
    }
    f.rt.block_on(async {
        loop {
            let el = match reader.next_event() {
                Ok(Some(StreamEvent::Element(el))) => el,
                Ok(Some(StreamEvent::Header(_))) => continue,
                _ => return,
            };
            if !neg.handles(&el) {
                return;
            }
            match neg.handle(el).await {
                NegotiatorEvent::Challenge(e)
                | NegotiatorEvent::Continue(e)
                | NegotiatorEvent::TaskData(e)
                | NegotiatorEvent::Failure { element: e, .. } => {
                    let _ = to_xml(&e);
                }
                NegotiatorEvent::Success { element, .. } => {
                    let _ = to_xml(&element);
                    assert!(neg.is_authenticated());
                }
                NegotiatorEvent::StreamError { send, .. } => {
                    if let Some(e) = send {
                        let _ = to_xml(&e);
                    }
                    return;
                }
            }
        }
    });
}

async fn drive(p: &dyn MechanismProvider, stream: &StreamInfo, no_ir: bool, msgs: &[&[u8]]) {
    let req = AuthenticateRequest::new(p.name());
    let mut m = p.start(stream, &req);
    if no_ir {
        match crate::sasl2::step_unthrottled(&mut *m, None).await {
            Step::Challenge(c) => assert!(c.is_empty(), "first challenge must be empty"),
            other => panic!("no initial response: {other:?}"),
        }
    }
    for msg in msgs {
        match crate::sasl2::step_unthrottled(&mut *m, Some(msg)).await {
            Step::Challenge(c) => assert!(c.len() <= 2 * MAX_SASL_PAYLOAD),
            _ => return,
        }
    }
}

/// Input: a flags byte (bit 0: no initial response, bit 1: `-PLUS`), then up to three SASL
/// messages separated by 0xFF, to SCRAM-SHA-256(-PLUS) and PLAIN.
pub fn scram(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let msgs: Vec<&[u8]> = rest
        .splitn(3, |&b| b == 0xFF)
        .map(|m| &m[..m.len().min(MAX_SASL_PAYLOAD)])
        .collect();
    let f = fixture();
    let scram = scram_provider(&f.accounts, flags & 2 != 0);
    let plain = PlainProvider::new(f.accounts.clone())
        .with_unknown_accounts(UnknownAccounts::default().with_iterations(1));
    f.rt.block_on(async {
        drive(&scram, &f.stream, flags & 1 != 0, &msgs).await;
        drive(&plain, &f.stream, flags & 1 != 0, &msgs).await;
    });
}

const TOKEN: &[u8] = b"secret-token:fast-fuzz";
const CB: [u8; 32] = [0x42; 32];

/// The HT initiator parser and MAC check on raw bytes, for every hash.
pub fn ht_initiator(data: &[u8]) {
    for mech in HtMechanism::all() {
        match parse_initiator(mech.hash, data) {
            Ok(msg) => {
                assert!(!msg.authcid.is_empty() && msg.authcid.len() <= MAX_AUTHCID_BYTES);
                assert!(!msg.authcid.contains('\0'));
                assert_eq!(msg.mac.len(), mech.hash.output_len());
                assert_eq!(msg.authcid.len() + 1 + msg.mac.len(), data.len());
                let ok = bool::from(mech.verify_initiator(TOKEN, &CB, msg.mac));
                assert_eq!(ok, msg.mac == mech.initiator_mac(TOKEN, &CB).as_slice());
                // What a client builds must parse back to the same parts.
                let built = mech.initiator_message(msg.authcid, TOKEN, &CB);
                let again = parse_initiator(mech.hash, &built).expect("own message parses");
                assert_eq!(again.authcid, msg.authcid);
            }
            Err(_) => {
                // The MAC check on arbitrary bytes (any length) must not panic either.
                let _ = mech.verify_initiator(TOKEN, &CB, data);
                let _ = mech.verify_initiator(data, data, data);
            }
        }
    }
}
