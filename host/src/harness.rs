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
