//! Server secrets kept in files (the FAST pepper, the key of fake SCRAM credentials): created
//! once with mode 0600 and fsynced, loaded with their permissions checked.

use std::io::{self, Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// Reading or creating failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file does not hold exactly the expected number of bytes.
    #[error("{path}: must hold exactly {expected} bytes")]
    WrongSize {
        /// The file.
        path: String,
        /// The size it must have.
        expected: usize,
    },
    /// Group or others may read the file: the secret may have leaked.
    #[error(
        "{path} is readable by group or others (mode {mode:o}); the secret may have leaked. \
         Restrict it with `chmod 600` (and consider replacing the secret) before starting"
    )]
    TooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

fn io_err(path: &Path, source: io::Error) -> SecretFileError {
    SecretFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Loads a secret of `N` bytes. Refuses a file that group or others can read.
pub(crate) fn load<const N: usize>(path: &Path) -> Result<Zeroizing<[u8; N]>, SecretFileError> {
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = f
            .metadata()
            .map_err(|e| io_err(path, e))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretFileError::TooOpen {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(N + 1));
    Read::take(&mut f, N as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_err(path, e))?;
    if buf.len() != N {
        return Err(SecretFileError::WrongSize {
            path: path.display().to_string(),
            expected: N,
        });
    }
    let mut out = Zeroizing::new([0u8; N]);
    out.copy_from_slice(&buf);
    Ok(out)
}

/// Creates the file with `secret` (mode 0600, `create_new`, fsynced with its directory). If
/// another process created it first, loads that one instead: two processes racing on first
/// start never end up with different secrets.
pub(crate) fn create<const N: usize>(
    path: &Path,
    secret: &[u8; N],
) -> Result<Zeroizing<[u8; N]>, SecretFileError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| io_err(path, e))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(secret).map_err(|e| io_err(path, e))?;
            f.sync_all().map_err(|e| io_err(path, e))?;
            // Make the new directory entry durable too: a token derived from a secret that
            // vanished in a crash would be lost.
            if let Ok(d) = std::fs::File::open(dir.unwrap_or(Path::new("."))) {
                let _ = d.sync_all();
            }
            Ok(Zeroizing::new(*secret))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load(path),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Loads the secret, or creates it with `fresh()` if the file does not exist.
pub(crate) fn load_or_create<const N: usize>(
    path: &Path,
    fresh: impl FnOnce() -> Zeroizing<[u8; N]>,
) -> Result<Zeroizing<[u8; N]>, SecretFileError> {
    match load(path) {
        Err(SecretFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            create(path, &fresh())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private_loaded_back_and_open_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/secret");
        let a = load_or_create::<4>(&p, || Zeroizing::new([1, 2, 3, 4])).unwrap();
        let b = load_or_create::<4>(&p, || Zeroizing::new([9; 4])).unwrap();
        assert_eq!(*a, *b, "the existing file wins");
        assert!(matches!(
            load::<5>(&p),
            Err(SecretFileError::WrongSize { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = load::<4>(&p).unwrap_err();
            assert!(
                matches!(e, SecretFileError::TooOpen { mode: 0o644, .. }),
                "{e}"
            );
            assert!(e.to_string().contains("chmod 600"));
        }
    }
}
