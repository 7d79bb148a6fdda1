//! The host's side of the admin socket: created 0600 with no window where another user could
//! reach it, a stale one (kill -9) replaced, a live one (another host) refused, removed on
//! shutdown; one bounded request per connection. At most [`CONCURRENT`] connections are
//! served at once; at the cap a new connection takes the slot of the oldest one that has not
//! sent its request ([`crate::request_slots`]), so idle connections cannot lock `host ctl`
//! out.

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::ops::AdminContext;
use super::{Request, Response, read_line, socket_path};
use crate::request_slots::{Admission, RequestSlots, RequestStarted};

/// Time a peer has to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time an operation may take (a password change derives SCRAM keys; a store may be slow).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Time to write the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections at once. At the cap a newcomer evicts the oldest connection still
/// waiting for its request; with every slot running an operation, newcomers wait in the
/// listen backlog.
const CONCURRENT: usize = 8;
/// Longest socket path (`sun_path` is 108 bytes with the terminating NUL on Linux).
const MAX_PATH_BYTES: usize = 107;

/// The admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminSocketError {
    /// Another process answers on the socket.
    #[error(
        "another host is running on this data_dir (it answers on {0}); stop it first, or give \
         this one another data_dir"
    )]
    InUse(PathBuf),
    /// The path exists and is not a socket: not ours to delete.
    #[error("{0} exists and is not a socket; move it away")]
    NotASocket(PathBuf),
    /// The path does not fit in a Unix socket address.
    #[error(
        "admin socket path {} is {len} bytes, longer than the {MAX_PATH_BYTES} a Unix socket \
         allows; use a shorter data_dir",
        .path.display()
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// A file system error.
    #[error("admin socket {}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The running admin socket; [`AdminServer::shutdown`] stops it and removes the file.
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    /// (device, inode) of the socket we created: shutdown removes the path only while it is
    /// still ours, never a newer host's.
    identity: (u64, u64),
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Creates `<data_dir>/admin.sock` and serves `context` on it.
    pub fn start(data_dir: &Path, context: AdminContext) -> Result<AdminServer, AdminSocketError> {
        let path = socket_path(data_dir);
        let len = path.as_os_str().len();
        if len > MAX_PATH_BYTES {
            return Err(AdminSocketError::PathTooLong { path, len });
        }
        let io = |source| AdminSocketError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(AdminSocketError::NotASocket(path));
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(&path) {
                Ok(_) => return Err(AdminSocketError::InUse(path)),
                // Nobody listens: left by a host that was killed.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    info!(path = %path.display(), "replacing a stale admin socket");
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                        _ => {}
                    }
                }
                Err(e) => return Err(io(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        // Bound inside a fresh 0700 directory, made 0600, then linked into place: at no
        // moment can another user reach it, whatever the umask and data_dir's mode. A link
        // (unlike a rename) never replaces: of two hosts starting at once on one data_dir,
        // the second gets `InUse` instead of silently taking the first one's socket.
        let private = tempfile::Builder::new()
            .prefix(".admin-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(data_dir)
            .map_err(io)?;
        let staged = private.path().join("s");
        let listener = UnixListener::bind(&staged).map_err(io)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        match std::fs::hard_link(&staged, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(AdminSocketError::InUse(path));
            }
            Err(e) => return Err(io(e)),
        }
        drop(private);
        let meta = std::fs::symlink_metadata(&path).map_err(io)?;
        let identity = (meta.dev(), meta.ino());
        let owner = meta.uid();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, Arc::new(context), owner, stopped));
        info!(path = %path.display(), "admin socket listening");
        Ok(AdminServer {
            path,
            identity,
            stop,
            task,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, lets requests in progress finish (at most [`OPERATION_TIMEOUT`]),
    /// drops the context (its handle on the token store) and removes the socket file.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            warn!(path = %self.path.display(), error = %e, "cannot remove the admin socket");
        }
    }
}

async fn serve(
    listener: UnixListener,
    context: Arc<AdminContext>,
    owner: u32,
    mut stopped: watch::Receiver<bool>,
) {
    let mut slots = RequestSlots::new(CONCURRENT);
    loop {
        tokio::select! {
            _ = slots.room() => {}
            _ = stopped.changed() => break,
        }
        let Some(stream) = crate::accept::next_connection(&listener, &mut stopped, "admin").await
        else {
            break;
        };
        let context = context.clone();
        let admission = slots.spawn(move |started| async move {
            serve_one(stream, &context, owner, started).await;
        });
        match admission {
            Admission::Free => {}
            Admission::Evicted => {
                debug!("admin connections at the limit: closed the oldest idle one");
            }
            // A waiting connection's request arrived since `room`: rare, and the client sees
            // the connection closed.
            Admission::Full => debug!("every admin connection is busy, closing"),
        }
    }
    drop(listener);
    if !slots.finish(OPERATION_TIMEOUT).await {
        warn!("admin requests still running at shutdown were abandoned");
    }
}

async fn serve_one(
    mut stream: UnixStream,
    context: &AdminContext,
    owner: u32,
    started: RequestStarted,
) {
    // The file mode already keeps others out; this catches a mode changed by hand.
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == owner || cred.uid() == 0 => {}
        Ok(cred) => {
            warn!(
                uid = cred.uid(),
                "admin socket: refused a peer of another user"
            );
            return;
        }
        Err(e) => {
            warn!(error = %e, "admin socket: cannot read the peer's credentials");
            return;
        }
    }
    let (read, mut write) = stream.split();
    let response = match tokio::time::timeout(READ_TIMEOUT, read_line(read)).await {
        Err(_) => Response::Error {
            message: "no request within 5 s".into(),
        },
        Ok(Err(e)) => Response::Error {
            message: format!("bad request: {e}"),
        },
        Ok(Ok(line)) => match serde_json::from_slice::<Request>(&line) {
            Err(e) => Response::Error {
                message: format!("bad request: {e}"),
            },
            Ok(request) => {
                // Read whole: from now on this connection keeps its slot.
                started.mark();
                debug!(?request, "admin request");
                match tokio::time::timeout(OPERATION_TIMEOUT, context.handle(request)).await {
                    Ok(r) => r,
                    Err(_) => Response::Error {
                        message: "the operation took too long".into(),
                    },
                }
            }
        },
    };
    let mut out = match serde_json::to_vec(&response) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "admin response not serializable");
            return;
        }
    };
    out.push(b'\n');
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        write.write_all(&out).await?;
        write.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(dir: &Path) -> AdminContext {
        AdminContext {
            accounts: Arc::new(
                crate::HostAccounts::load(&Default::default(), dir).expect("accounts"),
            ),
            fast: None,
            data_dir: dir.to_owned(),
            live: None,
        }
    }

    #[tokio::test]
    async fn refuses_what_it_must_not_replace_and_removes_only_its_own_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());

        // A regular file in the way is not deleted.
        std::fs::write(&path, "mine").unwrap();
        let e = AdminServer::start(dir.path(), context(dir.path())).unwrap_err();
        assert!(matches!(e, AdminSocketError::NotASocket(_)), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
        std::fs::remove_file(&path).unwrap();

        // A live socket means another host: refused, and left alone.
        let first = AdminServer::start(dir.path(), context(dir.path())).unwrap();
        let e = AdminServer::start(dir.path(), context(dir.path())).unwrap_err();
        assert!(matches!(e, AdminSocketError::InUse(_)), "{e}");
        assert!(path.exists());
        // No staging directory is left behind (the salt key is the accounts' own file).
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != crate::accounts::SALT_KEY_FILE)
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("admin.sock")]);

        // A socket that replaced ours is not removed by our shutdown.
        std::fs::remove_file(&path).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        first.shutdown().await;
        assert!(
            path.exists(),
            "shutdown removed a socket that is not its own"
        );
    }

    #[test]
    fn a_path_too_long_for_sun_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(120));
        let e = AdminServer::start(&deep, context(dir.path())).unwrap_err();
        assert!(matches!(e, AdminSocketError::PathTooLong { .. }), "{e}");
        assert!(e.to_string().contains("shorter data_dir"), "{e}");
    }
}
