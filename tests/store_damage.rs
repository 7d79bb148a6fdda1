//! A damaged sled store fails closed (issue 11 item 4): after bit flips and truncations at
//! several offsets of its log and snapshot, and after the database is deleted, opening it
//! either finds every committed write intact or refuses with `StoreError::Damaged`. Never a
//! store that silently lost a revocation or half its tokens. With `DamagePolicy::Distrust` it
//! opens with every token revoked.

use std::path::{Path, PathBuf};

use sasl2_fast::store::sled_store::{DamagePolicy, SledOptions, SledStore, seal_path};
use sasl2_fast::store::test_kit::{key, record};
use sasl2_fast::store::{CasOutcome, Durability, RevocationScope, StoreError, TokenStore};
use sasl2_fast_host::harness::copy_dir;

const RECORDS: u64 = 200;
const CUTOFF: u64 = 5_000;

/// Builds the pristine store: 200 durable records, then a revocation of alice's tokens, the
/// last durable write (the case where a flipped bit once resurrected a revoked token).
async fn pristine(dir: &Path) -> PathBuf {
    let path = dir.join("fast-tokens");
    let store = SledStore::open(&path).unwrap();
    for i in 0..RECORDS {
        let out = store
            .compare_and_swap(
                &key("alice", &format!("ua-{i}")),
                None,
                Some(record(Some(10_000 + i))),
                Durability::Durable,
            )
            .await
            .unwrap();
        assert!(matches!(out, CasOutcome::Written(_)));
    }
    store
        .raise_revocation_cutoff(RevocationScope::Account("alice".into()), CUTOFF)
        .await
        .unwrap();
    drop(store);
    path
}

/// True when the reopened store holds every committed write.
async fn intact(store: &SledStore) -> bool {
    if store.revocation_cutoff("alice").await.unwrap() < CUTOFF {
        return false;
    }
    for i in 0..RECORDS {
        match store.get(&key("alice", &format!("ua-{i}"))).await {
            Ok(Some(v)) if v.value == record(Some(10_000 + i)) => {}
            _ => return false,
        }
    }
    true
}

/// A fresh copy of the pristine store (and its seal) in `work`.
fn fresh_copy(pristine: &Path, work: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).unwrap();
    let path = work.join("fast-tokens");
    copy_dir(pristine, &path).unwrap();
    std::fs::copy(seal_path(pristine), seal_path(&path)).unwrap();
    path
}

/// Opening after the damage: intact, or refused as damaged. Returns which.
async fn open_fails_closed(path: &Path, what: &str) -> &'static str {
    match SledStore::open(path) {
        Ok(store) => {
            assert!(
                intact(&store).await,
                "{what}: the store opened but lost committed writes"
            );
            "intact"
        }
        Err(StoreError::Damaged(msg)) => {
            assert!(
                msg.contains("Recovery") || msg.contains("restore"),
                "{what}: {msg}"
            );
            "refused"
        }
        Err(e) => panic!("{what}: unexpected error {e}"),
    }
}

fn files_of(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn bit_flips_and_truncations_fail_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = pristine(tmp.path()).await;
    let log = pristine.join("db");
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(len > 4096, "log of {len} bytes");
    let work = tmp.path().join("work");
    let mut refused = 0;

    // Bit flips in the log: the tail (the revocation was the last write), the middle, early.
    let mut offsets: Vec<u64> = (1..=64).step_by(7).map(|d| len - d).collect();
    offsets.extend([len / 2, len / 3, len / 4, 4096 + 17]);
    for off in offsets {
        let path = fresh_copy(&pristine, &work);
        let mut bytes = std::fs::read(path.join("db")).unwrap();
        bytes[off as usize] ^= 0x10;
        std::fs::write(path.join("db"), &bytes).unwrap();
        if open_fails_closed(&path, &format!("flip at {off}/{len}")).await == "refused" {
            refused += 1;
        }
    }
    // Truncations of the log.
    for cut in [len - 1, len - 100, len / 2, 4096] {
        let path = fresh_copy(&pristine, &work);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path.join("db"))
            .unwrap();
        f.set_len(cut).unwrap();
        if open_fails_closed(&path, &format!("truncated to {cut}/{len}")).await == "refused" {
            refused += 1;
        }
    }
    // The other files sled keeps (config, snapshot): flipped and truncated.
    for file in files_of(&pristine) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name == "db" {
            continue;
        }
        let size = std::fs::metadata(&file).unwrap().len();
        for off in [0, size / 2, size.saturating_sub(1)] {
            let path = fresh_copy(&pristine, &work);
            let target = path.join(&name);
            let mut bytes = std::fs::read(&target).unwrap();
            if bytes.is_empty() {
                continue;
            }
            bytes[off as usize] ^= 0x01;
            std::fs::write(&target, &bytes).unwrap();
            open_fails_closed(&path, &format!("{name} flip at {off}")).await;
        }
        let path = fresh_copy(&pristine, &work);
        std::fs::OpenOptions::new()
            .write(true)
            .open(path.join(&name))
            .unwrap()
            .set_len(size / 2)
            .unwrap();
        open_fails_closed(&path, &format!("{name} truncated")).await;
    }
    // The damage must actually have been noticed somewhere (a test that never saw a refusal
    // would prove nothing about detection).
    assert!(refused > 0, "no damage was ever detected");
    eprintln!("refused {refused} damaged stores");
}

#[tokio::test]
async fn a_deleted_database_is_noticed() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = pristine(tmp.path()).await;
    std::fs::remove_dir_all(&pristine).unwrap();
    match SledStore::open(&pristine) {
        Err(StoreError::Damaged(msg)) => assert!(msg.contains("deleted"), "{msg}"),
        Ok(_) => panic!("a deleted store opened empty without a word"),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn a_damaged_seal_is_noticed() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = pristine(tmp.path()).await;
    let seal = seal_path(&pristine);
    let mut bytes = std::fs::read(&seal).unwrap();
    bytes[2] ^= 4;
    std::fs::write(&seal, &bytes).unwrap();
    assert!(matches!(
        SledStore::open(&pristine),
        Err(StoreError::Damaged(_))
    ));
}

/// `store_recovery = "distrust"` opens the store at `path` with a global cutoff after now
/// (every token revoked) and seals it anew, so the next plain open succeeds.
async fn opens_distrusted_with_every_token_revoked(path: &Path) {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let options = {
        let mut o = SledOptions::default();
        o.on_damage = DamagePolicy::Distrust;
        o
    };
    let store = SledStore::open_with(path, options).unwrap();
    assert!(store.revocation_cutoff("anyone").await.unwrap() > before);
    drop(store);
    SledStore::open(path).unwrap();
}

#[tokio::test]
async fn distrust_opens_a_damaged_store_with_every_token_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = pristine(tmp.path()).await;
    std::fs::remove_dir_all(&pristine).unwrap();
    opens_distrusted_with_every_token_revoked(&pristine).await;
}

#[tokio::test]
async fn a_clean_reopen_is_not_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = pristine(tmp.path()).await;
    for _ in 0..3 {
        let store = SledStore::open(&pristine).unwrap();
        assert!(intact(&store).await);
    }
    // A new store has no seal yet: it opens and gets one.
    let new = tmp.path().join("new");
    drop(SledStore::open(&new).unwrap());
    assert!(seal_path(&new).exists());
    // So does one whose records are all gone (nothing left that a lost write could revive).
    std::fs::remove_file(seal_path(&new)).unwrap();
    drop(SledStore::open(&new).unwrap());
    assert!(seal_path(&new).exists());
}

/// Issue 23 item 6: a store that holds records but has no seal file (restored from a backup
/// without it, copied, or kept from before seals) cannot be told from one that lost writes: it
/// is refused, like a missing pepper, without writing a seal that would vouch for it at the
/// next start; `store_recovery = "distrust"` opens it with every token revoked.
#[tokio::test]
async fn records_without_a_seal_are_refused_unless_distrusted() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = pristine(tmp.path()).await;
    std::fs::remove_file(seal_path(&pristine)).unwrap();
    for _ in 0..2 {
        match SledStore::open(&pristine) {
            Err(StoreError::Damaged(msg)) => {
                for needed in [
                    "fast-tokens.seal is missing",
                    &format!("holds {RECORDS} FAST clients"),
                    "Restore the seal file",
                    "store_recovery = \"distrust\"",
                ] {
                    assert!(msg.contains(needed), "{needed:?} not in {msg}");
                }
            }
            Ok(_) => panic!("a store with records and no seal opened"),
            Err(e) => panic!("{e}"),
        }
        assert!(!seal_path(&pristine).exists(), "the refusal wrote a seal");
    }
    opens_distrusted_with_every_token_revoked(&pristine).await;
}

// ---------------------------------------------------------------------------------------------
// The pepper (issue 11 item 5): tokens are derived from it, so losing it while the store holds
// records must not pass silently, and a file others can read must not be accepted.

mod pepper {
    use sasl2_fast::fast::HtMechanism;
    use sasl2_fast::fast::config::PepperRecovery;
    use sasl2_fast::fast::open::OpenError;
    use sasl2_fast::fast::tokens::{IssueKind, TokenRequest};
    use sasl2_fast::fast::{FastConfig, FastPlugin};
    use sasl2_fast::secret_file::SecretFileError;
    use sasl2_fast::store::test_kit::key;

    async fn with_one_client(dir: &std::path::Path) {
        let plugin = FastPlugin::open(FastConfig::default(), dir).await.unwrap();
        let m = HtMechanism::from_name("HT-SHA-256-NONE").unwrap();
        plugin
            .tokens()
            .issue(
                &key("alice", "ua"),
                &TokenRequest::new(m, IssueKind::Requested),
            )
            .await
            .unwrap()
            .unwrap();
        plugin.tokens().store().flush().await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_pepper_with_records_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        with_one_client(dir.path()).await;
        std::fs::remove_file(dir.path().join("fast-pepper")).unwrap();
        match FastPlugin::open(FastConfig::default(), dir.path()).await {
            Err(OpenError::PepperMissing { records: 1, .. }) => {}
            other => panic!("expected PepperMissing, got {:?}", other.map(|_| ())),
        }
        assert!(
            !dir.path().join("fast-pepper").exists(),
            "no pepper created silently"
        );
    }

    /// The host sees the seal's refusal the way it sees a missing pepper's: the file, the
    /// count of clients, and the config key that decides.
    #[tokio::test]
    async fn a_missing_seal_with_records_refuses_to_start_like_a_missing_pepper() {
        use sasl2_fast::fast::config::StoreRecovery;
        let dir = tempfile::tempdir().unwrap();
        with_one_client(dir.path()).await;
        let seal = dir.path().join("fast-tokens.seal");
        std::fs::remove_file(&seal).unwrap();
        let msg = match FastPlugin::open(FastConfig::default(), dir.path()).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a store with a client and no seal opened"),
        };
        for needed in [
            "fast-tokens.seal is missing but the token store",
            "holds 1 FAST clients",
            "store_recovery = \"distrust\" in [plugins.fast]",
        ] {
            assert!(msg.contains(needed), "{needed:?} not in {msg}");
        }
        assert!(!seal.exists(), "no seal created silently");
        let mut config = FastConfig::default();
        config.store_recovery = StoreRecovery::Distrust;
        let plugin = FastPlugin::open(config, dir.path()).await.unwrap();
        assert!(seal.exists());
        let clients = plugin.tokens().clients("alice").await.unwrap();
        assert_eq!(clients.len(), 1);
        assert!(clients[0].revoked, "the client's tokens are revoked");
    }

    #[tokio::test]
    async fn pepper_recovery_new_creates_one_and_revokes_every_token() {
        let dir = tempfile::tempdir().unwrap();
        with_one_client(dir.path()).await;
        std::fs::remove_file(dir.path().join("fast-pepper")).unwrap();
        let mut config = FastConfig::default();
        config.pepper_recovery = PepperRecovery::New;
        let plugin = FastPlugin::open(config, dir.path()).await.unwrap();
        assert!(dir.path().join("fast-pepper").exists());
        let clients = plugin.tokens().clients("alice").await.unwrap();
        assert_eq!(clients.len(), 1);
        assert!(clients[0].revoked, "the old client's tokens are revoked");
    }

    #[tokio::test]
    async fn a_new_store_gets_a_new_pepper_quietly() {
        let dir = tempfile::tempdir().unwrap();
        FastPlugin::open(FastConfig::default(), dir.path())
            .await
            .unwrap();
        assert!(dir.path().join("fast-pepper").exists());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_pepper_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        with_one_client(dir.path()).await;
        let p = dir.path().join("fast-pepper");
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            match FastPlugin::open(FastConfig::default(), dir.path()).await {
                Err(OpenError::Pepper(SecretFileError::TooOpen { .. })) => {}
                other => panic!("mode {mode:o}: {:?}", other.map(|_| ())),
            }
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        FastPlugin::open(FastConfig::default(), dir.path())
            .await
            .unwrap();
    }

    // Opening sled reads the whole log and may wait for its file lock (up to 2 s when another
    // handle holds it): that must happen off the runtime's threads, or every stream the
    // worker serves stalls meanwhile. On a current-thread runtime a ticker can only advance
    // while `open` is waiting if `open` does not block the one thread.
    #[tokio::test(flavor = "current_thread")]
    async fn opening_a_contended_store_does_not_block_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let _held = FastPlugin::open(FastConfig::default(), dir.path())
            .await
            .unwrap();
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        let second = FastPlugin::open(FastConfig::default(), dir.path()).await;
        ticker.abort();
        let msg = match second {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a store another handle holds was opened twice"),
        };
        assert!(msg.contains("in use"), "{msg}");
        let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            ticks >= 10,
            "the runtime ran {ticks} ticks of 50 ms during a 2 s lock wait"
        );
    }
}
