//! The default embedded [`TokenStore`], on sled 0.34.
//!
//! # Layout
//! Three trees in one sled database:
//! - `clients`: key [`ClientKey::encode`], value `u64 BE version || codec bytes` (the record
//!   encoding of the private `codec` module, format byte first);
//! - `expiry`: key `u64 BE expires_at || encoded client key`, empty value, one entry per
//!   non-empty record, so an expiry sweep is a range scan from the start;
//! - `cutoffs`: revocation cutoffs, `u64 BE`; the global one under the one-byte key `*`, an
//!   account's under [`ClientKey::account_prefix`] (at least 3 bytes, so the two never collide).
//!
//! Every record change is one sled transaction over `clients` and `expiry`, so a record and its
//! index entry never disagree, not even after a crash (sled recovers a transaction's writes
//! atomically).
//!
//! # Durability and group commit
//! sled acknowledges a write once it is in its in-memory log; it reaches the disk at the next
//! flush (a background one runs every 500 ms). A [`Durability::Durable`] write therefore
//! flushes before it returns, and concurrent durable writes share flushes (group commit: N
//! durable writes in flight cost a few flushes, not N; the reasoning is on the private
//! `GroupCommit` type). `remove_account` and `raise_revocation_cutoff` are always durable.
//!
//! # Damage detection
//! Before every durable flush the store bumps a generation counter in its `meta` tree, and
//! after the flush it records that generation in a seal file beside the database
//! (`<path>.seal`, see the private `seal` module). sled silently drops what follows a damaged
//! log entry; a store that opens with a generation below its seal has lost committed writes
//! (a revocation, a token a client holds) and, by default, refuses to open
//! ([`StoreError::Damaged`], with the recovery in the message). So does a store that holds
//! records but has no seal file (restored or copied without it): it cannot be told from one
//! that lost writes, and a new seal would vouch for whatever it holds. [`DamagePolicy::Distrust`]
//! opens it anyway with every token revoked instead (clients fall back to their passwords,
//! `credentials-expired`), so a damaged store never lets a revoked token in nor logs half the
//! clients out silently.
//!
//! sled calls other than flushing are short in-memory operations and run directly on the
//! calling task (a `spawn_blocking` per read would cost more than the read); flushing, the one
//! call that waits for the disk, goes through `flush_async`. Note that sled 0.34 runs every
//! transaction under one process-wide lock, so compare-and-swaps are serialized (they are
//! short: a read, a decode and two to three writes in memory).

use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use zeroize::Zeroizing;

use super::seal::{Seal, SealState, SealWriter};
use super::{
    CasOutcome, ClientKey, ClientRecord, Durability, RevocationScope, StoreError, TokenStore,
    Versioned, check_account, codec, fresh_version,
};

/// Name of the tree holding client records.
const CLIENTS_TREE: &str = "clients";
/// Name of the tree indexing records by expiry.
const EXPIRY_TREE: &str = "expiry";
/// Name of the tree holding revocation cutoffs.
const CUTOFFS_TREE: &str = "cutoffs";
/// Key of the global cutoff in the `cutoffs` tree. Account keys are at least 3 bytes long.
const GLOBAL_CUTOFF_KEY: &[u8] = b"*";
/// Name of the tree holding the store's own bookkeeping.
const META_TREE: &str = "meta";
/// Key of the generation counter in `meta` (u64 BE), bumped before every durable flush.
const GENERATION_KEY: &[u8] = b"generation";

/// sled's page cache if not configured: sled's own default is 1 GiB, which a token store of a
/// million records fills (1.5 GB RSS measured); 64 MiB keeps the hot records cached.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// What to do when the store opens with fewer committed writes than its seal recorded, with a
/// damaged seal, or with records but no seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DamagePolicy {
    /// Refuse to open, with an error that names the recovery (the default).
    #[default]
    Refuse,
    /// Open, revoke every token issued so far (they answer `credentials-expired` and clients
    /// log in with their passwords again), and seal the store anew.
    Distrust,
}

/// How to open a [`SledStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SledOptions {
    /// sled's page cache in bytes.
    pub cache_bytes: u64,
    /// What to do when lost writes are detected.
    pub on_damage: DamagePolicy,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
            on_damage: DamagePolicy::Refuse,
        }
    }
}

/// The seal file of the store at `path`: beside it, not inside, so deleting the database
/// directory leaves the seal to tell.
pub fn seal_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".seal");
    path.with_file_name(name)
}

/// A problem found at open, with the message of the refusal: lost or damaged writes.
fn damaged(problem: String) -> (String, String) {
    let refusal = format!(
        "{problem}. Revoked tokens could be accepted again and issued ones are missing. \
         Recovery: restore the store and its seal from a backup, or set store_recovery = \
         \"distrust\" in [plugins.fast] to start with every FAST token revoked (clients log \
         in with their passwords again)"
    );
    (problem, refusal)
}

/// A [`TokenStore`] in a sled database.
pub struct SledStore {
    db: sled::Db,
    clients: sled::Tree,
    expiry: sled::Tree,
    cutoffs: sled::Tree,
    meta: sled::Tree,
    commit: GroupCommit,
    seal: Option<Arc<SealWriter>>,
}

/// Lets concurrent durable writes share one flush.
///
/// - `written` counts completed writes that must become durable: a writer bumps it *after* its
///   sled write returned, and takes the new value as its ticket.
/// - `flushed` (behind an async mutex, held across the flush) is the highest ticket known to
///   be on disk.
///
/// A writer takes the lock. If `flushed >= ticket`, a flush that covers its write has already
/// completed and it returns without flushing. Otherwise it reads `written` (some `upto >=
/// ticket`), flushes, and stores `upto` in `flushed`.
///
/// Why this is correct: every ticket `t <= upto` was taken after its write completed, and
/// `upto` was read after ticket `t` was issued (the load observes the increment, so the write
/// happens-before the load), which is before the flush started. sled's flush makes stable
/// everything in its log at the time it is called, so all writes with tickets `<= upto` are on
/// disk when it returns. `flushed` only grows (each `upto` is read later than the previous one,
/// under the lock) and is only set after a successful flush; a failed or cancelled flush leaves
/// it alone, so no writer is ever told its write is durable when it is not.
///
/// Why it batches: while one writer flushes (a disk round trip), the others finish their
/// writes and queue on the (FIFO) mutex. The next one to get the lock reads a `written` that
/// covers the whole queue, flushes once, and the rest find their ticket covered and return.
/// N concurrent durable writes thus cost about two flushes instead of N.
struct GroupCommit {
    written: AtomicU64,
    flushed: tokio::sync::Mutex<u64>,
    flushes: AtomicU64,
}

impl GroupCommit {
    fn new() -> Self {
        GroupCommit {
            written: AtomicU64::new(0),
            flushed: tokio::sync::Mutex::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    /// Returns once every write completed before this call is on disk. Each flush carries a
    /// new generation in `meta` and is recorded in the seal afterwards.
    async fn make_durable(
        &self,
        db: &sled::Db,
        meta: &sled::Tree,
        seal: Option<&Arc<SealWriter>>,
    ) -> Result<(), StoreError> {
        let ticket = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = self.flushed.lock().await;
        if *flushed >= ticket {
            return Ok(());
        }
        let upto = self.written.load(Ordering::SeqCst);
        // The bump comes after every write it covers in sled's log, so a recovered log that
        // still has this generation has those writes too.
        let generation = bump_generation(meta)?;
        db.flush_async().await.map_err(backend)?;
        if let Some(seal) = seal {
            // Off the caller's path: the data is durable now; the seal may lag (see `seal`).
            seal.record(generation);
        }
        self.flushes.fetch_add(1, Ordering::Relaxed);
        *flushed = upto;
        Ok(())
    }
}

/// How long [`open_sled`] waits for sled's lock on the database.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the sled database at `path`, waiting up to [`LOCK_WAIT`] for its file lock.
///
/// sled releases the lock only when the last of its background jobs (a flush it ran for
/// `flush_async`, a segment write) drops its handle, which can be a moment after the `Db` is
/// dropped; a host that closes and reopens the store in one process (a reload, a test) would
/// otherwise fail at random. A lock still held after the wait is a real second user: another
/// server process on the same data directory.
fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
        {
            Err(sled::Error::Io(e)) if is_lock_held(&e) => {
                if std::time::Instant::now() >= deadline {
                    return Err(sled::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!(
                            "the token store {} is in use: another server process holds it \
                             ({e})",
                            path.display()
                        ),
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Whether sled refused to open because its lock file is held (sled 0.34 reports this as an
/// `Other` I/O error with this text, not as an error variant).
fn is_lock_held(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Other && e.to_string().starts_with("could not acquire lock")
}

fn generation(meta: &sled::Tree) -> Result<u64, StoreError> {
    match meta.get(GENERATION_KEY).map_err(backend)? {
        None => Ok(0),
        Some(v) => read_u64(&v, "generation"),
    }
}

fn bump_generation(meta: &sled::Tree) -> Result<u64, StoreError> {
    let next = meta
        .update_and_fetch(GENERATION_KEY, |old| {
            let n = old
                .and_then(|o| <[u8; 8]>::try_from(o).ok())
                .map_or(0, u64::from_be_bytes);
            Some(n.saturating_add(1).to_be_bytes().to_vec())
        })
        .map_err(backend)?;
    next.map_or(Ok(0), |v| read_u64(&v, "generation"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}

/// Why a CAS transaction stopped without writing.
enum Abort {
    Conflict,
    Corrupt(String),
}

fn backend(e: sled::Error) -> StoreError {
    // sled errors carry paths, page ids and backtraces, never stored values.
    StoreError::backend(e)
}

fn read_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} length")))?;
    Ok(u64::from_be_bytes(arr))
}

/// The version at the front of a `clients` value.
fn value_version(value: &[u8]) -> Result<u64, StoreError> {
    let head = value
        .get(..8)
        .ok_or_else(|| StoreError::Corrupt("short value".into()))?;
    read_u64(head, "version")
}

/// Parses a `clients` value.
fn decode_value(value: &[u8]) -> Result<Versioned<ClientRecord>, StoreError> {
    let version = value_version(value)?;
    let value = codec::decode(&value[8..])?;
    Ok(Versioned { version, value })
}

/// The `expiry` key of a record expiring at `at`.
fn index_key(at: u64, encoded_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + encoded_key.len());
    out.extend_from_slice(&at.to_be_bytes());
    out.extend_from_slice(encoded_key);
    out
}

impl SledStore {
    /// Opens (or creates) the database at `path` with [`SledOptions::default`]: a 64 MiB
    /// cache, and refusal to open a damaged store.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SledOptions::default())
    }

    /// Opens (or creates) the database at `path`, checking it against its seal.
    pub fn open_with(path: impl AsRef<Path>, options: SledOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let seal_file = seal_path(path);
        let sealed = Seal::read(&seal_file).map_err(StoreError::backend)?;
        let db = open_sled(path, options.cache_bytes).map_err(|e| match e {
            sled::Error::Corruption { .. } => StoreError::Damaged(format!(
                "sled reports corruption in {} ({e}); restore the token store from a \
                 backup, or move it away to start with an empty one (every FAST client \
                 then logs in with its password again)",
                path.display()
            )),
            other => backend(other),
        })?;
        let mut store = Self::from_db(db)?;
        let generation = generation(&store.meta)?;
        // What is wrong, and the refusal's whole message.
        let problem = match sealed {
            SealState::Missing => match store.clients.len() {
                0 => None,
                records => Some((
                    format!(
                        "the seal {} of token store {} is missing",
                        seal_file.display(),
                        path.display()
                    ),
                    format!(
                        "the seal {} is missing but the token store {} holds {records} FAST \
                         clients: without its seal a store restored from an older backup, or one \
                         that lost writes, cannot be told from an intact one, and could accept \
                         revoked tokens. Restore the seal file from the backup the store \
                         came from, or set store_recovery = \"distrust\" in [plugins.fast] to \
                         start with every FAST token revoked (every FAST client then logs in \
                         with its password again)",
                        seal_file.display(),
                        path.display()
                    ),
                )),
            },
            SealState::At(sealed) if sealed > generation => Some(format!(
                "token store {} has lost committed writes (at generation {generation}, its seal \
                 {} says {sealed}{})",
                path.display(),
                seal_file.display(),
                if generation == 0 {
                    ": was it deleted?"
                } else {
                    ""
                }
            ))
            .map(damaged),
            SealState::At(_) => None,
            SealState::Garbled => Some(format!(
                "the seal {} of token store {} is damaged",
                seal_file.display(),
                path.display()
            ))
            .map(damaged),
        };
        if let Some((problem, refusal)) = problem {
            match options.on_damage {
                // Refused before the seal file is opened: opening creates it, and the next
                // start would then find a sealed store and accept it.
                DamagePolicy::Refuse => return Err(StoreError::Damaged(refusal)),
                DamagePolicy::Distrust => {
                    tracing::warn!(
                        "{problem}; every FAST token issued so far is now revoked \
                         (store_recovery = \"distrust\"): clients log in with their passwords"
                    );
                    store.raise_cutoff_at(GLOBAL_CUTOFF_KEY, now_ms().saturating_add(1))?;
                }
            }
        }
        store.seal = Some(SealWriter::new(
            Seal::open(&seal_file).map_err(StoreError::backend)?,
        ));
        // Seal the state found (or just repaired) now, so later damage is measured from here.
        let seal = store.seal.clone();
        let g = bump_generation(&store.meta)?;
        store.db.flush().map_err(backend)?;
        if let Some(seal) = seal {
            seal.write_now(g).map_err(StoreError::backend)?;
        }
        Ok(store)
    }

    /// Uses an already opened database (e.g. one configured with `sled::Config`, or shared with
    /// other data of the host: only the `clients`, `expiry`, `cutoffs` and `meta` trees are
    /// touched). Such a store has no seal: lost writes are not detected.
    pub fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        Ok(SledStore {
            clients: db.open_tree(CLIENTS_TREE).map_err(backend)?,
            expiry: db.open_tree(EXPIRY_TREE).map_err(backend)?,
            cutoffs: db.open_tree(CUTOFFS_TREE).map_err(backend)?,
            meta: db.open_tree(META_TREE).map_err(backend)?,
            db,
            commit: GroupCommit::new(),
            seal: None,
        })
    }

    /// Every record, in key order (for `host migrate-store`: copying a store elsewhere). A
    /// record that cannot be decoded is an error, not skipped: a copy must not silently lose
    /// clients.
    pub fn records(
        &self,
    ) -> impl Iterator<Item = Result<(ClientKey, ClientRecord), StoreError>> + '_ {
        self.clients.iter().map(|entry| {
            let (k, v) = entry.map_err(backend)?;
            Ok((ClientKey::decode(&k)?, decode_value(&v)?.value))
        })
    }

    /// Every revocation cutoff: the global one and those of accounts.
    pub fn cutoffs(&self) -> Result<Vec<(RevocationScope, u64)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.cutoffs.iter() {
            let (k, v) = entry.map_err(backend)?;
            let before = read_u64(&v, "cutoff")?;
            let scope = if &k[..] == GLOBAL_CUTOFF_KEY {
                RevocationScope::All
            } else {
                let len = k
                    .get(..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                    .ok_or_else(|| StoreError::Corrupt("cutoff key".into()))?;
                let account = k
                    .get(2..)
                    .filter(|a| a.len() == len)
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .ok_or_else(|| StoreError::Corrupt("cutoff key".into()))?;
                RevocationScope::Account(account.to_owned())
            };
            out.push((scope, before));
        }
        Ok(out)
    }

    /// How many sled flushes this store has run (for tests and metrics: with group commit it
    /// grows much more slowly than the number of durable writes).
    #[doc(hidden)]
    pub fn flush_count(&self) -> u64 {
        self.commit.flushes.load(Ordering::Relaxed)
    }

    async fn settle(&self, durability: Durability) -> Result<(), StoreError> {
        match durability {
            Durability::Durable => self.make_durable().await,
            Durability::Lazy => Ok(()),
        }
    }

    async fn make_durable(&self) -> Result<(), StoreError> {
        self.commit
            .make_durable(&self.db, &self.meta, self.seal.as_ref())
            .await
    }

    fn cutoff_at(&self, key: &[u8]) -> Result<u64, StoreError> {
        match self.cutoffs.get(key).map_err(backend)? {
            None => Ok(0),
            Some(v) => read_u64(&v, "cutoff"),
        }
    }

    /// Raises the cutoff under `key` to at least `before` (a CAS loop on one key: no
    /// transaction needed, and a cutoff never moves back).
    fn raise_cutoff_at(&self, key: &[u8], before: u64) -> Result<(), StoreError> {
        loop {
            let old = self.cutoffs.get(key).map_err(backend)?;
            let current = match &old {
                None => 0,
                Some(v) => read_u64(v, "cutoff")?,
            };
            if current >= before {
                return Ok(());
            }
            let swapped = self
                .cutoffs
                .compare_and_swap(key, old, Some(&before.to_be_bytes()[..]))
                .map_err(backend)?;
            if swapped.is_ok() {
                return Ok(());
            }
        }
    }

    /// Expiry index keys that end with `encoded_key` (a full scan of the index). Only used to
    /// clean up after a record that cannot be decoded, whose expiry is unknown.
    fn index_entries_of(&self, encoded_key: &[u8]) -> Result<Vec<sled::IVec>, StoreError> {
        let mut out = Vec::new();
        for entry in self.expiry.iter().keys() {
            let k = entry.map_err(backend)?;
            if k.len() == 8 + encoded_key.len() && &k[8..] == encoded_key {
                out.push(k);
            }
        }
        Ok(out)
    }
}

impl Drop for SledStore {
    /// Writes the seal a background task may not have reached yet, so a store closed cleanly
    /// is sealed at its last flush.
    fn drop(&mut self) {
        if let Some(seal) = &self.seal
            && let Err(e) = seal.write_pending()
        {
            tracing::warn!(error = %e, "cannot write the token store seal");
        }
    }
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field(
                "durable_writes",
                &self.commit.written.load(Ordering::Relaxed),
            )
            .field("flushes", &self.flush_count())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenStore for SledStore {
    async fn get(&self, key: &ClientKey) -> Result<Option<Versioned<ClientRecord>>, StoreError> {
        match self.clients.get(key.encode()).map_err(backend)? {
            None => Ok(None),
            Some(v) => decode_value(&v).map(Some),
        }
    }

    async fn compare_and_swap(
        &self,
        key: &ClientKey,
        expected: Option<u64>,
        new: Option<ClientRecord>,
        durability: Durability,
    ) -> Result<CasOutcome, StoreError> {
        let encoded_key = key.encode();
        let version = match new {
            Some(_) => expected.map_or_else(fresh_version, |v| v + 1),
            None => 0,
        };
        // The new value and index key, built before the transaction (which may run its closure
        // more than once). The value holds nonces: wiped on drop.
        let new_value = match &new {
            None => None,
            Some(record) => {
                let body = codec::encode(record)?;
                let mut value = Zeroizing::new(Vec::with_capacity(8 + body.len()));
                value.extend_from_slice(&version.to_be_bytes());
                value.extend_from_slice(&body);
                Some((
                    value,
                    record.expires_at().map(|at| index_key(at, &encoded_key)),
                ))
            }
        };

        let result = (&self.clients, &self.expiry).transaction(|(clients, expiry)| {
            let abort = |e: StoreError| {
                ConflictableTransactionError::Abort(match e {
                    StoreError::Corrupt(m) => Abort::Corrupt(m),
                    other => Abort::Corrupt(other.to_string()),
                })
            };
            let current = clients.get(&encoded_key)?;
            let current_version = match &current {
                None => None,
                Some(v) => Some(value_version(v).map_err(abort)?),
            };
            if current_version != expected {
                return Err(ConflictableTransactionError::Abort(Abort::Conflict));
            }
            if let Some(old) = &current {
                let old = decode_value(old).map_err(abort)?;
                if let Some(at) = old.value.expires_at() {
                    expiry.remove(index_key(at, &encoded_key))?;
                }
            }
            match &new_value {
                None => {
                    clients.remove(&encoded_key[..])?;
                }
                Some((value, index)) => {
                    clients.insert(&encoded_key[..], &value[..])?;
                    if let Some(index) = index {
                        expiry.insert(&index[..], &[][..])?;
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(Abort::Conflict)) => return Ok(CasOutcome::Conflict),
            Err(TransactionError::Abort(Abort::Corrupt(m))) => return Err(StoreError::Corrupt(m)),
            Err(TransactionError::Storage(e)) => return Err(backend(e)),
        }
        self.settle(durability).await?;
        Ok(CasOutcome::Written(version))
    }

    async fn clients_of(
        &self,
        account: &str,
        limit: usize,
    ) -> Result<Vec<(ClientKey, Versioned<ClientRecord>)>, StoreError> {
        check_account(account)?;
        // The length prefix makes this exact: "a"'s prefix is 00 01 'a', "ab"'s is 00 02 'a' 'b'.
        let mut out = Vec::new();
        for entry in self
            .clients
            .scan_prefix(ClientKey::account_prefix(account))
            .take(limit)
        {
            let (k, v) = entry.map_err(backend)?;
            out.push((ClientKey::decode(&k)?, decode_value(&v)?));
        }
        Ok(out)
    }

    async fn expired(&self, before: u64, limit: usize) -> Result<Vec<ClientKey>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for entry in self.expiry.iter().keys() {
            let k = entry.map_err(backend)?;
            let at = read_u64(k.get(..8).unwrap_or(&[]), "index key")?;
            if at > before {
                break;
            }
            out.push(ClientKey::decode(&k[8..])?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn remove_account(&self, account: &str) -> Result<usize, StoreError> {
        check_account(account)?;
        let prefix = ClientKey::account_prefix(account);
        let mut removed = 0;
        // Repeat until the scan comes back empty, so a client inserted while a batch was being
        // removed goes too. Batches bound the size of one transaction.
        loop {
            let mut batch = Vec::new();
            let mut stray_index = Vec::new();
            for entry in self.clients.scan_prefix(&prefix).take(1024) {
                let (k, v) = entry.map_err(backend)?;
                if decode_value(&v).is_err() {
                    // A record that cannot be decoded has an unknown expiry: find its index
                    // entries by scanning, so they do not outlive it. No CAS can change a
                    // corrupt record (or its index entries), so the list stays right.
                    tracing::warn!(
                        client = %ClientKey::decode(&k).map(|k| k.client_label()).unwrap_or_default(),
                        "removing a corrupt FAST client record"
                    );
                    stray_index.extend(self.index_entries_of(&k)?);
                }
                batch.push(k);
            }
            if batch.is_empty() {
                break;
            }
            let result = (&self.clients, &self.expiry).transaction(|(clients, expiry)| {
                let mut n = 0usize;
                for k in &batch {
                    let Some(old) = clients.remove(k)? else {
                        continue;
                    };
                    n += 1;
                    if let Ok(old) = decode_value(&old) {
                        if let Some(at) = old.value.expires_at() {
                            expiry.remove(index_key(at, k))?;
                        }
                    } else {
                        for stray in stray_index.iter().filter(|s| s[8..] == k[..]) {
                            expiry.remove(stray)?;
                        }
                    }
                }
                Ok::<_, ConflictableTransactionError<Infallible>>(n)
            });
            removed += match result {
                Ok(n) => n,
                Err(TransactionError::Storage(e)) => return Err(backend(e)),
            };
        }
        self.make_durable().await?;
        Ok(removed)
    }

    async fn raise_revocation_cutoff(
        &self,
        scope: RevocationScope,
        before: u64,
    ) -> Result<(), StoreError> {
        match scope {
            RevocationScope::All => self.raise_cutoff_at(GLOBAL_CUTOFF_KEY, before)?,
            RevocationScope::Account(account) => {
                check_account(&account)?;
                self.raise_cutoff_at(&ClientKey::account_prefix(&account), before)?;
            }
        }
        // Also when the cutoff was already this high: a concurrent raise may not be flushed yet.
        self.make_durable().await
    }

    async fn revocation_cutoff(&self, account: &str) -> Result<u64, StoreError> {
        check_account(account)?;
        let own = self.cutoff_at(&ClientKey::account_prefix(account))?;
        Ok(own.max(self.cutoff_at(GLOBAL_CUTOFF_KEY)?))
    }

    async fn len(&self) -> Result<u64, StoreError> {
        Ok(self.clients.len() as u64)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.make_durable().await
    }
}

#[cfg(test)]
mod tests;
