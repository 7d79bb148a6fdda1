//! The seal of an embedded store: a durable high-water mark of committed state, kept outside
//! the store's own files, so that lost or damaged writes are detected when the store opens.
//!
//! sled recovers its log up to the first damaged entry and silently drops everything after
//! it: a bit flip in the last record can resurrect a revoked token, one mid-file drops every
//! later record, and a deleted database opens empty. The store bumps a generation counter in
//! its own data before every durable flush, and after the flush records that generation here.
//! At open, a store whose own generation is below the seal's has lost committed writes.
//!
//! The file is 16 bytes: the generation (u64 BE) and a check word over it (u64 BE), written in
//! place with one `write` and `sync_data`. It never runs ahead of the store (it is written
//! after the store's flush), so a crash can only leave it behind, which weakens detection for
//! that moment but never raises a false alarm.
//!
//! Because lagging is safe, the seal is written off the durable write's path
//! ([`SealWriter::record`]): a caller waits for sled's flush, not for a second `fsync` of the
//! seal, which would double the latency of every token issuance. One blocking task writes the
//! newest generation recorded while it runs (concurrent flushes share a seal write, as they
//! share sled flushes), and dropping the store writes what is still pending.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

const MAGIC: u64 = 0x5341_534c_3246_4153; // "SASL2FAS"

fn check_word(generation: u64) -> u64 {
    // Not a MAC (the seal guards against damage, not against someone who can write files
    // here); it catches a torn or garbled seal so it is never mistaken for a generation.
    generation.rotate_left(17) ^ MAGIC
}

/// The seal file of one store.
#[derive(Debug)]
pub(crate) struct Seal {
    file: File,
}

/// What the seal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealState {
    /// No seal file: a new store, or one restored, copied or kept from before seals without
    /// it (refused when it holds records).
    Missing,
    /// The highest generation known committed.
    At(u64),
    /// The file exists but does not hold a valid seal.
    Garbled,
}

impl Seal {
    /// Reads the seal at `path` without opening it for writing.
    pub(crate) fn read(path: &Path) -> io::Result<SealState> {
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SealState::Missing),
            Err(e) => return Err(e),
        };
        let mut buf = Vec::with_capacity(17);
        Read::take(&mut f, 17).read_to_end(&mut buf)?;
        if buf.len() != 16 {
            return Ok(SealState::Garbled);
        }
        let generation = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
        let check = u64::from_be_bytes(buf[8..].try_into().expect("8 bytes"));
        Ok(if check == check_word(generation) {
            SealState::At(generation)
        } else {
            SealState::Garbled
        })
    }

    /// Opens (or creates, mode 0600) the seal for writing.
    pub(crate) fn open(path: &Path) -> io::Result<Seal> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        Ok(Seal {
            file: opts.open(path)?,
        })
    }

    /// Records `generation` as committed: one in-place write of 16 bytes, then `sync_data`.
    pub(crate) fn write(&mut self, generation: u64) -> io::Result<()> {
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(&generation.to_be_bytes());
        buf[8..].copy_from_slice(&check_word(generation).to_be_bytes());
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&buf)?;
        self.file.set_len(16)?;
        self.file.sync_data()
    }
}

/// Writes the seal in the background, newest generation first, never a lower one after a
/// higher one.
#[derive(Debug)]
pub(crate) struct SealWriter {
    /// The file and the generation it holds (so a late writer never moves it back).
    file: Mutex<(Seal, u64)>,
    /// The highest generation flushed by the store and not yet known to be in the file.
    pending: AtomicU64,
    /// Whether a background write task is running.
    busy: AtomicBool,
}

impl SealWriter {
    pub(crate) fn new(seal: Seal) -> Arc<Self> {
        Arc::new(SealWriter {
            file: Mutex::new((seal, 0)),
            pending: AtomicU64::new(0),
            busy: AtomicBool::new(false),
        })
    }

    /// Writes `generation` now, on the calling thread (at open, and from `Drop`).
    pub(crate) fn write_now(&self, generation: u64) -> io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if generation > file.1 {
            file.0.write(generation)?;
            file.1 = generation;
        }
        Ok(())
    }

    /// Writes what [`record`](Self::record) left pending, on the calling thread.
    pub(crate) fn write_pending(&self) -> io::Result<()> {
        self.write_now(self.pending.load(Ordering::SeqCst))
    }

    /// Notes that the store's data up to `generation` is flushed, and makes sure a background
    /// task writes it (or a newer one) to the seal. Must be called inside a tokio runtime.
    pub(crate) fn record(self: &Arc<Self>, generation: u64) {
        self.pending.fetch_max(generation, Ordering::SeqCst);
        if self.busy.swap(true, Ordering::SeqCst) {
            return; // the running task sees `pending` when it loops
        }
        let writer = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            loop {
                if let Err(e) = writer.write_pending() {
                    // Only detection of later damage is weakened; the data itself is flushed.
                    tracing::warn!(error = %e, "cannot write the token store seal");
                }
                writer.busy.store(false, Ordering::SeqCst);
                // A generation recorded after our last read whose `record` saw us busy: take
                // it, unless another task already did.
                let written = writer.file.lock().unwrap_or_else(PoisonError::into_inner).1;
                if writer.pending.load(Ordering::SeqCst) <= written
                    || writer.busy.swap(true, Ordering::SeqCst)
                {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_garbled() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.seal");
        assert_eq!(Seal::read(&p).unwrap(), SealState::Missing);
        let mut s = Seal::open(&p).unwrap();
        s.write(42).unwrap();
        assert_eq!(Seal::read(&p).unwrap(), SealState::At(42));
        s.write(7).unwrap();
        assert_eq!(Seal::read(&p).unwrap(), SealState::At(7));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(Seal::read(&p).unwrap(), SealState::Garbled);
        std::fs::write(&p, b"short").unwrap();
        assert_eq!(Seal::read(&p).unwrap(), SealState::Garbled);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_never_moves_the_seal_back_and_drop_path_writes_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.seal");
        let w = SealWriter::new(Seal::open(&p).unwrap());
        w.write_now(10).unwrap();
        w.write_now(3).unwrap();
        assert_eq!(Seal::read(&p).unwrap(), SealState::At(10));
        let tasks: Vec<_> = (11..=60)
            .map(|g| {
                let w = Arc::clone(&w);
                tokio::spawn(async move { w.record(g) })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // Whatever the background task got to, the pending write completes the picture.
        w.write_pending().unwrap();
        assert_eq!(Seal::read(&p).unwrap(), SealState::At(60));
        // And the background task alone gets there too.
        w.record(61);
        for _ in 0..500 {
            if Seal::read(&p).unwrap() == SealState::At(61) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        panic!("the background seal write did not happen");
    }
}
