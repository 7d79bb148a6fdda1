//! A throw-away host for tests and measurements: a fresh `data_dir` in a temporary directory,
//! loopback listeners on ports the OS picks (STARTTLS and direct TLS), typed configuration,
//! and clients that trust its generated certificate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use sasl2_fast_host::client::Tls;
//! use sasl2_fast_host::harness::TestHost;
//! let t = TestHost::start(TestHost::config()).await?;
//! let c = t.connect(Tls::StartTls, Some("alice@localhost")).await?;
//! assert!(!c.mechanisms().is_empty());
//! t.shutdown().await;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use crate::client::{Client, ClientError, ConnectOptions, Tls};
use crate::{Host, HostConfig, HostError, Listeners};

/// Errors of harness setup.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running host on loopback with its own temporary directory.
#[derive(Debug)]
pub struct TestHost {
    /// The host.
    pub host: Host,
    config: HostConfig,
    dir: tempfile::TempDir,
}

impl TestHost {
    /// The demo setup: domain `localhost`, accounts `alice`/`alicepass` and `bob`/`bobpass`,
    /// FAST with its defaults. `data_dir` is a placeholder that [`TestHost::start`] replaces
    /// with its temporary directory.
    pub fn config() -> HostConfig {
        HostConfig::new("localhost", "data")
            .with_account("alice", "alicepass")
            .with_account("bob", "bobpass")
    }

    /// Starts `config` with `data_dir` in a fresh temporary directory, on loopback STARTTLS
    /// and direct-TLS listeners.
    pub async fn start(config: HostConfig) -> Result<TestHost, BoxError> {
        let dir = tempfile::tempdir()?;
        Self::start_in(config, dir).await
    }

    async fn start_in(
        mut config: HostConfig,
        dir: tempfile::TempDir,
    ) -> Result<TestHost, BoxError> {
        config.server.data_dir = dir.path().join("data");
        let host = Self::launch(config.clone()).await?;
        Ok(TestHost { host, config, dir })
    }

    async fn launch(config: HostConfig) -> Result<Host, HostError> {
        let listeners = Listeners::loopback(true)
            .await
            .map_err(|e| HostError::Io(e.to_string()))?;
        Host::start(listeners, config).await
    }

    /// Shuts the host down and starts it again on the same `data_dir` (new ports).
    pub async fn restart(self) -> Result<TestHost, BoxError> {
        let TestHost { host, config, dir } = self;
        host.shutdown().await;
        let host = Self::launch(config.clone()).await?;
        Ok(TestHost { host, config, dir })
    }

    /// Like [`TestHost::restart`], with `change` applied to the configuration first.
    pub async fn restart_with(
        self,
        change: impl FnOnce(&mut HostConfig),
    ) -> Result<TestHost, BoxError> {
        let TestHost {
            host,
            mut config,
            dir,
        } = self;
        host.shutdown().await;
        change(&mut config);
        let host = Self::launch(config.clone()).await?;
        Ok(TestHost { host, config, dir })
    }

    /// Graceful shutdown; the temporary directory goes with `self`.
    pub async fn shutdown(self) {
        self.host.shutdown().await;
    }

    /// The configuration in use (with the real `data_dir`).
    pub fn host_config(&self) -> &HostConfig {
        &self.config
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.config.server.data_dir.clone()
    }

    /// The temporary directory holding `data_dir`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connection options for the listener of `tls`, trusting the host's certificate.
    pub fn opts(&self, tls: Tls, from: Option<&str>) -> Result<ConnectOptions, ClientError> {
        let addr = match tls {
            Tls::Direct => self
                .host
                .tls_local_addr()
                .ok_or_else(|| ClientError::Protocol("no direct TLS listener".into()))?,
            _ => self.host.local_addr(),
        };
        ConnectOptions::localhost(addr, tls, self.host.cert_pem_path(), from)
    }

    /// A connected client: secured as `tls` says, post-TLS stream open, features read.
    pub async fn connect(&self, tls: Tls, from: Option<&str>) -> Result<Client, ClientError> {
        Client::connect(self.opts(tls, from)?).await
    }
}

/// The `host` binary running as its own process (`host --config FILE`), for tests of the
/// command line, of kill -9, and of several hosts at once. Its stderr (the log) is collected;
/// dropping it kills the process.
#[derive(Debug)]
pub struct HostProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HostProcess {
    /// Starts `bin --config config` with `RUST_LOG=rust_log` (`None`: the host's default
    /// level) and waits for its first `listening on ADDR` line.
    pub fn start(bin: &Path, config: &Path, rust_log: Option<&str>) -> Result<Self, BoxError> {
        use std::io::{BufRead as _, Read as _};
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("--config")
            .arg(config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        match rust_log {
            Some(level) => cmd.env("RUST_LOG", level),
            None => cmd.env_remove("RUST_LOG"),
        };
        let mut child = cmd.spawn()?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        let sink = log.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(&buf[..n]);
            }
        });
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next();
        // Keep reading what follows (a second `listening on` line for direct TLS, anything
        // later): a closed pipe would make the host's next `println!` panic.
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
            }
        });
        let Some(Ok(first)) = first else {
            let _ = child.wait();
            // The child has exited, so its stderr is at end of file: wait for the reader to
            // have taken all of it (reading `log` straight after `wait` raced with it and
            // sometimes gave an empty reason).
            let _ = stderr_reader.join();
            let log = String::from_utf8_lossy(&log.lock().unwrap_or_else(|e| e.into_inner()))
                .into_owned();
            return Err(format!("host did not start: {}", log.trim()).into());
        };
        let addr = first
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line {first:?}"))?
            .parse()?;
        Ok(HostProcess {
            child,
            addr,
            log,
            stdout,
        })
    }

    /// The process id (for /proc figures such as RSS).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first listener (STARTTLS).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// What the host logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The stdout lines after the first (`listening on` of direct TLS, `metrics listening
    /// on`), as far as they were printed.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Bytes logged so far.
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// SIGKILL, and waits for the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (at most 5 s).
    pub fn stop(mut self) -> Result<std::process::ExitStatus, BoxError> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err("host did not stop within 5 s of SIGTERM".into())
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `bin SUBCOMMAND --config config ARGS...` with `stdin` written to its standard input (then
/// closed) and `RUST_LOG=warn`; its output once it exits.
pub fn host_command(
    bin: &Path,
    subcommand: &str,
    config: &Path,
    args: &[&str],
    stdin: &[u8],
) -> Result<std::process::Output, BoxError> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(bin)
        .arg(subcommand)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().ok_or("no stdin")?.write_all(stdin)?;
    Ok(child.wait_with_output()?)
}

/// `bin passwd --config config user` with `password` on stdin; its output.
pub fn host_passwd(
    bin: &Path,
    config: &Path,
    user: &str,
    password: &str,
) -> Result<std::process::Output, BoxError> {
    host_command(bin, "passwd", config, &[user], password.as_bytes())
}

/// Writes `dir/host.toml` for a `host` process: STARTTLS on a free loopback port, data in
/// `dir/data`, FAST on sled, alice's password `alicepass`, and `extra` appended to
/// `[plugins.fast]`; returns its path.
pub fn write_config(dir: &Path, extra: &str) -> std::io::Result<PathBuf> {
    let path = dir.join("host.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndomain = \"localhost\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [accounts]\nalice = \"alicepass\"\n[plugins.fast]\nenabled = true\n{extra}"
        ),
    )?;
    Ok(path)
}

/// Copies the directory `from` to `to`, recursively (a stopped host's store, for backups and
/// restores in tests).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}
