//! Salts that tell nothing (issue 23 item 5, S-29): the SCRAM salt and iteration count a name
//! gets in the server-first message are the same before and after a restart of the host (same
//! `data_dir`), for an account of the config file, for one whose password `passwd` changed,
//! and for a name that is no account; and all have one form (16 bytes, 4096 iterations). A
//! salt that changed at every restart for real accounts only (as config accounts' random salts
//! did) would let anyone comparing salts across a restart enumerate the accounts.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sasl2_fast_host::client::{Client, LoginOptions, Tls};
use sasl2_fast_host::harness::TestHost;

/// The `s=` (decoded) and `i=` of the server-first message `mechanism` answers to a
/// client-first message for `user`. The exchange is left unfinished: no password is checked.
async fn salt_and_iterations(t: &TestHost, mechanism: &str, user: &str) -> (Vec<u8>, u32) {
    let mut c: Client = t.connect(Tls::StartTls, None).await.unwrap();
    let first = format!("n,,n={user},r=fyko+d2lbbFgONRv9qkxdawL");
    let auth = Client::authenticate_element(
        mechanism,
        Some(first.as_bytes()),
        &LoginOptions::default(),
        false,
    );
    c.send(&auth).await.unwrap();
    let challenge = match c.read_auth_step().await.unwrap() {
        Err(challenge) => String::from_utf8(challenge).unwrap(),
        Ok(outcome) => panic!("{mechanism} for {user}: expected a challenge, got {outcome:?}"),
    };
    let field = |name: &str| {
        challenge
            .split(',')
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {challenge:?}"))
            .to_owned()
    };
    (
        B64.decode(field("s=")).unwrap(),
        field("i=").parse().unwrap(),
    )
}

/// What each (mechanism, name) pair answers now.
async fn salts(t: &TestHost, names: &[&str]) -> Vec<(String, (Vec<u8>, u32))> {
    let mut out = Vec::new();
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-1"] {
        for name in names {
            let answer = salt_and_iterations(t, mechanism, name).await;
            out.push((format!("{mechanism} {name}"), answer));
        }
    }
    out
}

/// S-29: salts do not reveal which names are accounts, at one time or across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salts_of_accounts_and_of_unknown_names_survive_a_restart_alike() {
    // alice and bob are in the config file; bob's password is changed with `passwd` (kept
    // in accounts.toml); nobody is no account.
    let t = TestHost::start(TestHost::config()).await.unwrap();
    t.host.change_password("bob", "n3w-b0b-pass").await.unwrap();
    let names = ["alice", "bob", "nobody"];
    let before = salts(&t, &names).await;

    // One form for every name: 16 bytes of salt, the same iteration count.
    for (what, (salt, iterations)) in &before {
        assert_eq!(salt.len(), 16, "{what}: {before:?}");
        assert_eq!(*iterations, 4096, "{what}: {before:?}");
    }
    // Stable while the host runs, and different per name and per hash.
    assert_eq!(salts(&t, &names).await, before);
    let mut distinct = before
        .iter()
        .map(|(_, (s, _))| s.clone())
        .collect::<Vec<_>>();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), before.len(), "{before:?}");

    // The same answers after a restart on the same data_dir.
    let t = t.restart().await.unwrap();
    let after = salts(&t, &names).await;
    for ((what, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{what}: the salt changed across a restart");
    }
    // And the passwords still work with them.
    let mut c = t.connect(Tls::StartTls, None).await.unwrap();
    c.login_scram(
        "alice",
        "alicepass",
        "SCRAM-SHA-1",
        &LoginOptions::default(),
    )
    .await
    .unwrap()
    .into_success()
    .unwrap();
    t.shutdown().await;
}
