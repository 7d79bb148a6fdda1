//! Concurrent logins with one token (F-17, F-18; F-19 and a late commit), and the sled store under
//! FAST (the sealed-at-rest claim).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_with_the_same_new_token_never_see_a_half_rotated_record() {
    let f = Arc::new(sled_fixture(FastConfig::default()));
    let s = tls13(1);
    let t = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let f = f.clone();
        let s = s.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            matches!(
                fast_login(&f, &s, "HT-SHA-256-NONE", &t, vec![]).await,
                NegotiatorEvent::Success { .. }
            )
        }));
    }
    for task in tasks {
        assert!(
            task.await.unwrap(),
            "every login with the valid token succeeds"
        );
    }
    let rec = f
        .plugin
        .tokens()
        .store()
        .get(&ClientKey::new("alice", UA).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        rec.value.current.is_some() && rec.value.new.is_none(),
        "promoted exactly once"
    );
    let promoted = f
        .events
        .take()
        .iter()
        .filter(|e| e.starts_with("promoted"))
        .count();
    assert_eq!(promoted, 1);
}

#[tokio::test]
async fn sled_store_keeps_tokens_across_reopen_and_never_holds_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let token;
    {
        let store = SledStore::open(&path).unwrap();
        let f = fixture_with(FastConfig::default(), Arc::new(store), None);
        token = get_token(&f, tls13(1), "HT-SHA-256-NONE").await;
    }
    // Sealed at rest: no byte string of the token in the database files.
    let mut found = false;
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        let needle = &token.as_bytes()["secret-token:fast-".len()..];
        if bytes.windows(needle.len()).any(|w| w == needle) {
            found = true;
        }
    }
    assert!(!found, "the store must not contain a usable token");
    let store = SledStore::open(&path).unwrap();
    let f = fixture_with(FastConfig::default(), Arc::new(store), None);
    success(fast_login(&f, &tls13(1), "HT-SHA-256-NONE", &token, vec![]).await);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// docs/model.md, "Findings", 2: a client gives up on a slow FAST login (verified, its commit
/// still to come) and logs in again on another host, which promotes its token and issues the
/// one it asked for; the first login, committing late in the same millisecond, leaves that
/// newer token in `new` (F-19 overwrites only an older one) and issues nothing, so the token
/// the client holds keeps working.
#[tokio::test]
async fn a_late_commit_leaves_a_token_from_a_later_login_alone() {
    use sasl2_fast::fast::clock::Clock;
    use sasl2_fast::fast::login::VerifyRequest;
    use sasl2_fast::fast::tokens::{IssueKind, TokenRequest};

    let f = fixture();
    let s = tls13(1);
    let t1 = get_token(&f, s.clone(), "HT-SHA-256-NONE").await;
    let tokens = f.plugin.tokens();
    let mech = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
    let mac = mech.initiator_mac(t1.as_bytes(), b"");
    let req = VerifyRequest::new("alice", UA, mech, &mac, b"");
    let request = TokenRequest::new(mech, IssueKind::Requested);
    let given_up = tokens.verify(&req).await.unwrap();
    let again = tokens.verify(&req).await.unwrap();
    let t2 = tokens
        .commit(again, Some(&request))
        .await
        .unwrap()
        .expect("the login the client waited for issues its token");
    assert!(
        tokens
            .commit(given_up, Some(&request))
            .await
            .unwrap()
            .is_none(),
        "the late login issues nothing"
    );
    success(fast_login(&f, &s, "HT-SHA-256-NONE", t2.token.expose(), vec![]).await);

    // A password login that starts before a login decided later writes its token leaves that
    // token alone too: its `issue` runs with the earlier time (the clock set back stands for
    // a slow host).
    f.clock.advance(Duration::from_secs(60));
    let late = f.clock.now_ms();
    f.clock.advance(Duration::from_secs(1));
    let t3 = token_of(&success(
        fast_login(
            &f,
            &s,
            "HT-SHA-256-NONE",
            t2.token.expose(),
            vec![request_token("HT-SHA-256-NONE")],
        )
        .await,
    ))
    .expect("requested")
    .0;
    f.clock.set(late);
    let key = ClientKey::new("alice", UA).unwrap();
    assert!(tokens.issue(&key, &request).await.unwrap().is_none());
    f.clock.advance(Duration::from_secs(2));
    success(fast_login(&f, &s, "HT-SHA-256-NONE", &t3, vec![]).await);
}
