//! Copying a sled store into another [`TokenStore`] (what `host migrate-store` runs when a
//! single host grows into a cluster on PostgreSQL).
//!
//! Revocation cutoffs are copied first, so a token revoked in the source is never trusted in
//! the target, even for a moment and even if the copy stops half-way. Records are written
//! with a compare-and-set on "no record yet", so the copy never overwrites what the target
//! already holds (a second run, or clients that already logged in against the target); such
//! records are counted, not changed. Everything is made durable before the report returns.
//! Tokens stay sealed: the target needs the same pepper file as the source.

use super::sled_store::SledStore;
use super::{CasOutcome, Durability, StoreError, TokenStore};

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyReport {
    /// Records written to the target.
    pub copied: u64,
    /// Records the target already had, identical to the source's.
    pub already_present: u64,
    /// Records the target already had with other contents (kept as they are there).
    pub differing: u64,
    /// Revocation cutoffs raised in the target (global and per account).
    pub cutoffs: u64,
}

/// Copies every record and revocation cutoff of `from` into `to`.
pub async fn copy_sled(from: &SledStore, to: &dyn TokenStore) -> Result<CopyReport, StoreError> {
    let mut report = CopyReport::default();
    for (scope, before) in from.cutoffs()? {
        to.raise_revocation_cutoff(scope, before).await?;
        report.cutoffs += 1;
    }
    for entry in from.records() {
        let (key, record) = entry?;
        match to
            .compare_and_swap(&key, None, Some(record.clone()), Durability::Lazy)
            .await?
        {
            CasOutcome::Written(_) => report.copied += 1,
            CasOutcome::Conflict => match to.get(&key).await? {
                Some(existing) if existing.value == record => report.already_present += 1,
                _ => report.differing += 1,
            },
        }
    }
    to.flush().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{ClientKey, ClientRecord, RevocationScope};

    #[tokio::test]
    async fn copies_records_and_cutoffs_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path().join("s")).unwrap();
        for i in 0..5 {
            let key = ClientKey::new("alice", &format!("ua-{i}")).unwrap();
            let record = ClientRecord {
                created_at: i,
                ..ClientRecord::default()
            };
            sled.compare_and_swap(&key, None, Some(record), Durability::Durable)
                .await
                .unwrap();
        }
        sled.raise_revocation_cutoff(RevocationScope::Account("alice".into()), 77)
            .await
            .unwrap();
        sled.raise_revocation_cutoff(RevocationScope::All, 5)
            .await
            .unwrap();
        let target = MemoryStore::new();
        // The target already has one of the clients, changed.
        let taken = ClientKey::new("alice", "ua-0").unwrap();
        let theirs = ClientRecord {
            created_at: 1000,
            ..ClientRecord::default()
        };
        target
            .compare_and_swap(&taken, None, Some(theirs.clone()), Durability::Durable)
            .await
            .unwrap();

        let r = copy_sled(&sled, &target).await.unwrap();
        assert_eq!((r.copied, r.differing, r.cutoffs), (4, 1, 2));
        assert_eq!(target.len().await.unwrap(), 5);
        assert_eq!(target.get(&taken).await.unwrap().unwrap().value, theirs);
        assert_eq!(target.revocation_cutoff("alice").await.unwrap(), 77);
        assert_eq!(target.revocation_cutoff("bob").await.unwrap(), 5);

        let again = copy_sled(&sled, &target).await.unwrap();
        assert_eq!(
            (again.copied, again.already_present, again.differing),
            (0, 4, 1)
        );
    }
}
