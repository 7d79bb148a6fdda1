//! SCRAM-SHA-256(-PLUS) and PLAIN mechanisms driven directly with attacker-chosen steps.
//!
//! Input: byte 0 holds flags (bit 0: begin with no initial response, bit 1: use the -PLUS
//! SCRAM provider), the rest is split at 0xFF (never in UTF-8, so never inside a valid SASL
//! message) into up to three client messages. Each is capped at `MAX_SASL_PAYLOAD`, as the
//! negotiator does before a mechanism sees it.
//!
//! The SCRAM providers use a fixed server nonce ("fuzz") so the fuzzer can reach the
//! client-final parser with a matching nonce. The account `user`/`pencil` has the salt
//! `fuzz-salt` (so seeds can carry valid proofs) and 1 PBKDF2 iteration, and unknown accounts
//! cost 1 iteration too, to keep PLAIN executions cheap.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sasl2_fast::sasl2::accounts::{MemoryAccounts, ScramHash};
use sasl2_fast::sasl2::plain::PlainProvider;
use sasl2_fast::sasl2::scram::{ScramProvider, derive_credentials_with_salt};
use sasl2_fast::sasl2::{
    AuthenticateRequest, ChannelBindings, MAX_SASL_PAYLOAD, MechanismProvider, Step, StreamInfo,
    TlsInfo, TlsVersion,
};

struct Fixture {
    rt: tokio::runtime::Runtime,
    stream: StreamInfo,
    scram: ScramProvider,
    scram_plus: ScramProvider,
    plain: PlainProvider,
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
            stream: StreamInfo {
                domain: "example.com".into(),
                from: None,
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
            scram: ScramProvider::new(ScramHash::Sha256, false, accounts.clone())
                .with_fake_iterations(1)
                .dangerous_fixed_nonce_for_tests("fuzz"),
            scram_plus: ScramProvider::new(ScramHash::Sha256, true, accounts.clone())
                .with_fake_iterations(1)
                .dangerous_fixed_nonce_for_tests("fuzz"),
            plain: PlainProvider::new(accounts).with_fake_iterations(1),
        }
    })
}

async fn drive(p: &dyn MechanismProvider, stream: &StreamInfo, no_ir: bool, msgs: &[&[u8]]) {
    let req = AuthenticateRequest {
        mechanism: p.name().to_owned(),
        initial_response: None,
        user_agent: None,
        inline: Vec::new(),
    };
    let mut m = p.start(stream, &req);
    if no_ir {
        match m.step(None).await {
            Step::Challenge(c) => assert!(c.is_empty(), "first challenge must be empty"),
            other => panic!("no initial response: {other:?}"),
        }
    }
    for msg in msgs {
        match m.step(Some(msg)).await {
            Step::Challenge(c) => assert!(c.len() <= 2 * MAX_SASL_PAYLOAD),
            Step::Success(_) | Step::Failure(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let msgs: Vec<&[u8]> = rest
        .splitn(3, |&b| b == 0xFF)
        .map(|m| &m[..m.len().min(MAX_SASL_PAYLOAD)])
        .collect();
    let f = fixture();
    let scram = if flags & 2 != 0 {
        &f.scram_plus
    } else {
        &f.scram
    };
    f.rt.block_on(async {
        drive(scram, &f.stream, flags & 1 != 0, &msgs).await;
        drive(&f.plain, &f.stream, flags & 1 != 0, &msgs).await;
    });
});
