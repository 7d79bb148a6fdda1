//! Concurrent logins with one token, and the sled store under FAST (F-17, F-18, the sealed-at-rest claim).

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
