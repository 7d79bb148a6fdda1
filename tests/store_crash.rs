//! kill -9 crash tests for [`SledStore`]: what a durable write acknowledged, a crash keeps.
//!
//! Each test re-executes this test binary as a child (`SASL2_FAST_CRASH_CHILD=<dir>`, running
//! only the same test). The child writes with [`Durability::Durable`] and prints one line per
//! acknowledged write; the parent SIGKILLs it mid-stream, reopens the database and checks that
//! every acknowledged write is there and that everything stored decodes, with the expiry index
//! agreeing with the records.
//!
//! A SIGKILL loses what sled holds in its own memory (its IO buffers are flushed every 500 ms
//! in the background), but not what already reached the kernel, so this shows that durable
//! writes are flushed out of the process before they are acknowledged and that sled recovers
//! a log cut at an arbitrary point. It does not simulate power loss.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sasl2_fast::store::sled_store::SledStore;
use sasl2_fast::store::{
    CasOutcome, ClientKey, ClientRecord, Durability, RevocationScope, TokenSlot, TokenStore,
};

const CHILD_ENV: &str = "SASL2_FAST_CRASH_CHILD";
const ROUND_ENV: &str = "SASL2_FAST_CRASH_ROUND";
/// Acknowledged record writes to wait for before killing the child.
const KILL_AFTER: usize = 200;
const ROUNDS: u64 = 3;
/// Writer tasks in the child, so durable writes overlap and share flushes.
const WRITERS: u64 = 4;
/// The child gives up on its own after this long (if the parent died).
const CHILD_DEADLINE: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn account(round: u64, i: u64) -> String {
    format!("r{round}-acct{}", i % 7)
}

fn client_key(round: u64, i: u64) -> ClientKey {
    ClientKey::new(&account(round, i), &format!("ua-{i}")).unwrap()
}

fn cutoff_account(round: u64) -> String {
    format!("r{round}-cut")
}

/// The `generation`-th record written for client `i` (1: the insert, 2: the rotation): every
/// field is derived from (round, i, generation), so the parent can tell exactly what it must
/// find. The store version of generation `g` is the insert's (random) version plus `g - 1`.
fn expected_record(round: u64, i: u64, generation: u64) -> ClientRecord {
    let mut nonce = [0u8; 32];
    nonce[..8].copy_from_slice(&round.to_be_bytes());
    nonce[8..16].copy_from_slice(&i.to_be_bytes());
    nonce[16..24].copy_from_slice(&generation.to_be_bytes());
    let slot = TokenSlot {
        nonce,
        mechanism: "HT-SHA-256-NONE".into(),
        issued_at: 1_000 + generation,
        expires_at: 2_000_000 + i * 10 + generation,
        chain_started_at: 1_000,
        max_count: None,
    };
    ClientRecord {
        current: Some(slot.clone()),
        new: (generation == 2).then(|| {
            let mut s = slot;
            s.nonce[31] = 0xff;
            s
        }),
        created_at: 1_000,
        last_used_at: generation,
        revoked_before: 0,
        software: Some(format!("crash-test {round}")),
        device: Some(format!("client {i}")),
    }
}

/// Spawns this binary as the child of `test_name`.
fn spawn_child(test_name: &str, dir: &Path, round: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Finds `@tag n1 n2 ... nN@` (exactly `N` numbers) anywhere in a line (libtest may print on
/// the same line).
fn parse_marker<const N: usize>(line: &str, tag: &str) -> Option<[u64; N]> {
    let start = line.find(&format!("@{tag} "))? + tag.len() + 2;
    let rest = &line[start..];
    let end = rest.find('@')?;
    let mut parts = rest[..end].split(' ');
    let mut out = [0; N];
    for n in &mut out {
        *n = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn child_round() -> u64 {
    std::env::var(ROUND_ENV).unwrap().parse().unwrap()
}

/// Child of [`durable_writes_survive_kill_9`]: durable inserts (and a rotation to generation 2
/// for even clients) from several tasks, plus a task raising a revocation cutoff, until killed.
/// Acknowledges each write as `@ack client generation version@`.
fn child_write_records(dir: &str) {
    let round = child_round();
    runtime().block_on(async {
        let store = Arc::new(SledStore::open(dir).unwrap());
        let deadline = Instant::now() + CHILD_DEADLINE;
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let store = store.clone();
            tasks.spawn(async move {
                let mut i = w;
                while Instant::now() < deadline {
                    let key = client_key(round, i);
                    let out = store
                        .compare_and_swap(
                            &key,
                            None,
                            Some(expected_record(round, i, 1)),
                            Durability::Durable,
                        )
                        .await
                        .unwrap();
                    let CasOutcome::Written(v) = out else {
                        panic!("insert of client {i} conflicted");
                    };
                    assert_ne!(v, 0);
                    println!("@ack {i} 1 {v}@");
                    if i % 2 == 0 {
                        let out = store
                            .compare_and_swap(
                                &key,
                                Some(v),
                                Some(expected_record(round, i, 2)),
                                Durability::Durable,
                            )
                            .await
                            .unwrap();
                        assert_eq!(out, CasOutcome::Written(v + 1));
                        println!("@ack {i} 2 {}@", v + 1);
                    }
                    i += WRITERS;
                }
            });
        }
        let cutoffs = store.clone();
        tasks.spawn(async move {
            let mut j = 1;
            while Instant::now() < deadline {
                cutoffs
                    .raise_revocation_cutoff(RevocationScope::Account(cutoff_account(round)), j)
                    .await
                    .unwrap();
                println!("@cutoff {round} {j}@");
                j += 1;
            }
        });
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
}

/// Reads the child's stdout, calling `on_line` for each line until it returns true, then
/// SIGKILLs the child and reads what it had already printed (acknowledged too) to the end.
fn run_and_kill(mut child: Child, mut on_line: impl FnMut(&str) -> bool) {
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut killed = false;
    for line in stdout.lines() {
        let line = line.unwrap();
        if on_line(&line) && !killed {
            child.kill().unwrap(); // SIGKILL on Unix
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    let stderr = stderr.join().unwrap();
    assert!(
        killed,
        "child ended before it was killed ({status}):\n{stderr}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{stderr}");
    }
}

/// Everything in the store decodes, and the expiry index lists exactly the records, each at
/// its own expiry.
async fn check_consistent(store: &SledStore, accounts: &[String]) {
    let mut records = BTreeMap::new();
    for account in accounts {
        for (key, v) in store.clients_of(account, usize::MAX).await.unwrap() {
            records.insert(key, v.value.expires_at().unwrap());
        }
    }
    assert_eq!(store.len().await.unwrap(), records.len() as u64);
    let indexed = store.expired(u64::MAX, usize::MAX).await.unwrap();
    assert_eq!(indexed.len(), records.len(), "index and records disagree");
    // Each entry sits at its record's expiry: listed by `expired(at)`, not by `expired(at - 1)`.
    for (key, &at) in &records {
        assert!(store.expired(at, usize::MAX).await.unwrap().contains(key));
        assert!(
            !store
                .expired(at - 1, usize::MAX)
                .await
                .unwrap()
                .contains(key)
        );
    }
}

#[test]
fn durable_writes_survive_kill_9() {
    const NAME: &str = "durable_writes_survive_kill_9";
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_write_records(&dir);
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    // acked[round]: client -> (version of its insert, highest acknowledged generation);
    // cutoffs[round]: highest acked.
    let mut acked: Vec<BTreeMap<u64, (u64, u64)>> = Vec::new();
    let mut cutoffs: Vec<u64> = Vec::new();
    for round in 0..ROUNDS {
        let mut versions = BTreeMap::new();
        let mut cutoff = 0;
        let mut count = 0;
        run_and_kill(spawn_child(NAME, &dir, round), |line| {
            if let Some([i, generation, v]) = parse_marker(line, "ack") {
                // Generation g is acknowledged with version base + g - 1, and generation 1
                // always before generation 2.
                let base = v - (generation - 1);
                let e = versions.entry(i).or_insert((base, 0));
                assert_eq!(e.0, base, "client {i}: versions of one record disagree");
                e.1 = generation.max(e.1);
                count += 1;
            } else if let Some([r, j]) = parse_marker(line, "cutoff") {
                assert_eq!(r, round);
                cutoff = cutoff.max(j);
            }
            count >= KILL_AFTER
        });
        assert!(count >= KILL_AFTER);
        acked.push(versions);
        cutoffs.push(cutoff);

        // Reopen after the crash: every acknowledged write of every round so far is there.
        runtime().block_on(async {
            let store = SledStore::open(&dir).unwrap();
            let mut accounts = Vec::new();
            for (r, versions) in acked.iter().enumerate() {
                let r = r as u64;
                for (&i, &(base, generation)) in versions {
                    let got = store
                        .get(&client_key(r, i))
                        .await
                        .unwrap_or_else(|e| panic!("round {r} client {i}: {e}"))
                        .unwrap_or_else(|| panic!("round {r} client {i}: acknowledged, lost"));
                    // At least the acknowledged generation; at most the last one the child
                    // writes for this client (2 for even clients, 1 for odd ones).
                    let last = if i % 2 == 0 { 2 } else { 1 };
                    let found = got.version.wrapping_sub(base).wrapping_add(1);
                    assert!(
                        (generation..=last).contains(&found),
                        "round {r} client {i}: acked v{} (generation {generation}), found v{}",
                        base + generation - 1,
                        got.version
                    );
                    assert_eq!(got.value, expected_record(r, i, found));
                }
                assert!(
                    store.revocation_cutoff(&cutoff_account(r)).await.unwrap()
                        >= cutoffs[r as usize],
                    "round {r}: acknowledged revocation cutoff lost"
                );
                accounts.extend((0..7).map(|a| account(r, a)));
            }
            check_consistent(&store, &accounts).await;
        });
        eprintln!(
            "round {round}: {} acknowledged writes over {} clients, cutoff {}, all present",
            count,
            acked[round as usize].len(),
            cutoffs[round as usize]
        );
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Child of [`revocation_cutoff_survives_kill_9`]: raises the global cutoff durably,
/// acknowledges, and waits to be killed well inside sled's 500 ms background flush interval.
fn child_raise_cutoff(dir: &str) {
    let round = child_round();
    runtime().block_on(async {
        let store = SledStore::open(dir).unwrap();
        let value = 1_000 + round;
        store
            .raise_revocation_cutoff(RevocationScope::All, value)
            .await
            .unwrap();
        println!("@cutoff {round} {value}@");
        tokio::time::sleep(CHILD_DEADLINE).await;
    });
}

#[test]
fn revocation_cutoff_survives_kill_9() {
    const NAME: &str = "revocation_cutoff_survives_kill_9";
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_raise_cutoff(&dir);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        // A fresh database each time, so the cutoff cannot be left over from a clean shutdown.
        let dir = tmp.path().join(format!("db{round}"));
        let mut acked = None;
        run_and_kill(spawn_child(NAME, &dir, round), |line| {
            if let Some([r, v]) = parse_marker(line, "cutoff") {
                assert_eq!(r, round);
                acked = Some(v);
            }
            acked.is_some()
        });
        let acked = acked.expect("cutoff acknowledged");
        runtime().block_on(async {
            let store = SledStore::open(&dir).unwrap();
            assert_eq!(store.revocation_cutoff("anyone").await.unwrap(), acked);
        });
    }
}

/// Child of [`accepted_count_survives_kill_9`]: issues a token, then FAST-verifies and commits
/// with `count` 1, 2, 3, ... and acknowledges each count right after the commit returns (where
/// the plugin would write `<success>`). It then waits to be killed inside sled's 500 ms
/// background flush interval, so only a flush made by the commit itself saves the count.
fn child_fast_counts(dir: &str) {
    use sasl2_fast::fast::login::VerifyRequest;
    use sasl2_fast::fast::tokens::{IssueKind, TokenRequest};
    use sasl2_fast::fast::{FastConfig, FastTokens, HtMechanism, Pepper};
    runtime().block_on(async {
        let store = Arc::new(SledStore::open(dir).unwrap());
        let tokens = FastTokens::new(store, Pepper::from_bytes([8; 32]), FastConfig::default());
        let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
        let key = ClientKey::new("alice", "ua-count").unwrap();
        let t = tokens
            .issue(&key, &TokenRequest::new(m, IssueKind::Requested))
            .await
            .unwrap()
            .unwrap();
        println!("@token {}@", t.token.expose());
        let mac = m.initiator_mac(t.token.expose().as_bytes(), &[]);
        for count in 1..=5u64 {
            let req = VerifyRequest::new("alice", "ua-count", m, &mac, &[])
                .with_count(Some(count as u32));
            let v = tokens.verify(&req).await.unwrap();
            tokens.commit(v, None).await.unwrap();
            println!("@count {count} 0@");
        }
        tokio::time::sleep(CHILD_DEADLINE).await;
    });
}

/// Issue 11 item 6: a `count` accepted before `<success>` is on disk before `<success>`: after
/// a kill -9 right after the login, the same count is a replay (F-14; Z-4: check and raise are
/// durable before `<success>`).
#[test]
fn accepted_count_survives_kill_9() {
    use sasl2_fast::fast::hooks::RejectReason;
    use sasl2_fast::fast::login::VerifyRequest;
    use sasl2_fast::fast::{FastConfig, FastTokens, HtMechanism, Pepper};
    const NAME: &str = "accepted_count_survives_kill_9";
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_fast_counts(&dir);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let dir = tmp.path().join(format!("db{round}"));
        let mut token = None;
        let mut acked = 0;
        run_and_kill(spawn_child(NAME, &dir, round), |line| {
            // libtest may print its own words before ours on the same line.
            if let Some(t) = line
                .split_once("@token ")
                .and_then(|(_, l)| l.strip_suffix('@'))
            {
                token = Some(t.to_owned());
            } else if let Some([c, _]) = parse_marker(line, "count") {
                acked = c;
            }
            acked == 5
        });
        let token = token.expect("token printed");
        runtime().block_on(async {
            let store = Arc::new(SledStore::open(&dir).unwrap());
            let tokens = FastTokens::new(store, Pepper::from_bytes([8; 32]), FastConfig::default());
            let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
            let mac = m.initiator_mac(token.as_bytes(), &[]);
            for replay in 1..=acked {
                let req = VerifyRequest::new("alice", "ua-count", m, &mac, &[])
                    .with_count(Some(replay as u32));
                match tokens.verify(&req).await {
                    Err(RejectReason::Replay) => {}
                    other => panic!("round {round}: count {replay} accepted again: {other:?}"),
                }
            }
            // The token itself survived, and a higher count still works.
            let req = VerifyRequest::new("alice", "ua-count", m, &mac, &[])
                .with_count(Some(acked as u32 + 1));
            tokens
                .verify(&req)
                .await
                .expect("the next count is accepted");
        });
    }
}
