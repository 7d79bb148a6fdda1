//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, a free
//! loopback port, stopped (and removed) on drop, also when a test panics. It uses the
//! binaries of Debian's `postgresql` package (`/usr/lib/postgresql/*/bin`) or those on `PATH`.
//!
//! PostgreSQL refuses to run as root; when the tests do (CI), the server runs as the
//! `postgres` user (which Debian's package creates) or `nobody`, via `setpriv`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the server could not be started. The message says how to fix the machine.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TestPostgresError(String);

fn err(m: impl Into<String>) -> TestPostgresError {
    TestPostgresError(m.into())
}

/// Runs `cmd` (`what` names it in errors) to its end; its stderr is the error of a failure.
fn run(cmd: &mut Command, what: &str) -> Result<(), TestPostgresError> {
    let out = cmd.output().map_err(|e| err(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// A running throwaway server.
#[derive(Debug)]
pub struct TestPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    child: Option<Child>,
    run_as: Option<(u32, u32)>,
    _dir: tempfile::TempDir,
}

/// Where `initdb` and `postgres` are.
fn find_bin() -> Result<PathBuf, TestPostgresError> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    candidates.sort();
    if let Some(p) = candidates.pop() {
        return Ok(p);
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("postgres").exists() {
                return Ok(dir);
            }
        }
    }
    Err(err(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); \
         install them with `apt-get install -y postgresql` (Debian) — the PostgreSQL tests \
         need a real server",
    ))
}

/// `(uid, gid)` to run the server as when we are root.
fn unprivileged() -> Result<Option<(u32, u32)>, TestPostgresError> {
    let uid = String::from_utf8(
        Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| err(format!("id -u: {e}")))?
            .stdout,
    )
    .unwrap_or_default();
    if uid.trim() != "0" {
        return Ok(None);
    }
    for user in ["postgres", "nobody"] {
        let out = |flag: &str| {
            Command::new("id")
                .args([flag, user])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.trim().parse::<u32>().ok())
        };
        if let (Some(u), Some(g)) = (out("-u"), out("-g")) {
            return Ok(Some((u, g)));
        }
    }
    Err(err(
        "running as root and there is no `postgres` or `nobody` user to run PostgreSQL as",
    ))
}

fn free_port() -> Result<u16, TestPostgresError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| err(e.to_string()))?.port())
}

fn command(bin: &Path, program: &str, run_as: Option<(u32, u32)>) -> Command {
    match run_as {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                "--".into(),
            ]);
            c.arg(bin.join(program));
            c
        }
        None => Command::new(bin.join(program)),
    }
}

impl TestPostgres {
    /// initdb and start a server on a free loopback port, trusting local connections of the
    /// user `fast` (database `fast`).
    pub fn start() -> Result<TestPostgres, TestPostgresError> {
        Self::start_with(None)
    }

    /// Like [`TestPostgres::start`], but TCP connections must authenticate with `password`
    /// (SCRAM-SHA-256); the tools this harness runs itself use the Unix socket.
    pub fn start_with_password(password: &str) -> Result<TestPostgres, TestPostgresError> {
        Self::start_with(Some(password))
    }

    fn start_with(password: Option<&str>) -> Result<TestPostgres, TestPostgresError> {
        let bin = find_bin()?;
        let run_as = unprivileged()?;
        let dir = tempfile::Builder::new()
            .prefix("sasl2-fast-pg")
            .tempdir()
            .map_err(|e| err(format!("temp dir: {e}")))?;
        let data = dir.path().join("data");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| err(format!("chown {}: {e}", dir.path().display())))?;
        }
        let mut initdb = command(&bin, "initdb", run_as);
        initdb.args(["-D"]).arg(&data).args([
            "-U",
            "fast",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]);
        match password {
            None => {
                initdb.args(["-A", "trust"]);
            }
            Some(pw) => {
                let file = dir.path().join("pwfile");
                std::fs::write(&file, pw).map_err(|e| err(format!("pwfile: {e}")))?;
                if let Some((uid, gid)) = run_as {
                    std::os::unix::fs::chown(&file, Some(uid), Some(gid))
                        .map_err(|e| err(format!("chown pwfile: {e}")))?;
                }
                initdb
                    .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                    .arg(format!("--pwfile={}", file.display()));
            }
        }
        run(initdb.stdin(Stdio::null()), "initdb")?;
        let mut pg = TestPostgres {
            bin,
            data,
            port: free_port()?,
            child: None,
            run_as,
            _dir: dir,
        };
        pg.launch()?;
        pg.createdb("fast")?;
        Ok(pg)
    }

    fn launch(&mut self) -> Result<(), TestPostgresError> {
        let child = command(&self.bin, "postgres", self.run_as)
            .arg("-D")
            .arg(&self.data)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-k")
            .arg(&self.data)
            // Durability as in production: the crash tests rely on it.
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("postgres: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(&self.data)
                .args(["-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(err(format!("postgres exited at start: {status}")));
            }
            if Instant::now() > deadline {
                return Err(err("postgres did not accept connections within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for database `db` (which must exist; `fast` does).
    pub fn url_for(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=fast dbname={db} sslmode=disable",
            self.port
        )
    }

    /// A connection string for the database `fast`.
    pub fn url(&self) -> String {
        self.url_for("fast")
    }

    /// Creates a fresh, empty database and returns its connection string.
    pub fn fresh_database(&self) -> Result<String, TestPostgresError> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.createdb(&name)?;
        Ok(self.url_for(&name))
    }

    /// `createdb NAME` on this server.
    fn createdb(&self, name: &str) -> Result<(), TestPostgresError> {
        run(
            Command::new(self.bin.join("createdb"))
                .arg("-h")
                .arg(&self.data)
                .args(["-p", &self.port.to_string(), "-U", "fast", name]),
            "createdb",
        )
    }

    /// Stops the server: `immediate` is a crash (no checkpoint, what `kill -9` of the
    /// postmaster would leave), otherwise a fast shutdown.
    pub fn stop(&mut self, immediate: bool) {
        let mode = if immediate { "immediate" } else { "fast" };
        let _ = command(&self.bin, "pg_ctl", self.run_as)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) -> Result<(), TestPostgresError> {
        self.stop(false);
        self.launch()
    }

    /// Starts it again after [`TestPostgres::stop`].
    pub fn start_again(&mut self) -> Result<(), TestPostgresError> {
        self.launch()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop(true);
    }
}
