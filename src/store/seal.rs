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

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek as _, SeekFrom, Write as _};
use std::path::Path;

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
    /// No seal file: a new store, or one from before seals.
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
}
