//! The two example servers behind one face, so the same scenarios run against both: the
//! example host (`host/`, its own stream reader and writer) and `tokio_xmpp_host`
//! (`tokio-xmpp-host/`, tokio-xmpp's XML streams, nothing from `host/`). Each is started
//! in-process on loopback ports the system picks, in a fresh temporary `data_dir`, with the
//! accounts alice/alicepass and bob/bobpass and FAST on with the given token lifetimes.

#![allow(dead_code)] // each test binary uses part of it

use std::path::Path;
use std::time::Duration;

use sasl2_fast::fast::FastPlugin;
use sasl2_fast_host::client::{Client, ClientError, ConnectOptions, Tls};
use sasl2_fast_host::harness::TestHost;
use sasl2_fast_tokio_xmpp_host::{Config, Server};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The example host.
    Example,
    /// The second example server, on tokio-xmpp.
    TokioXmpp,
}

/// Both, for tests that loop over them.
pub const BOTH: [Kind; 2] = [Kind::Example, Kind::TokioXmpp];

/// A running server of either kind.
pub enum Running {
    Example(Box<TestHost>),
    TokioXmpp(Server, tempfile::TempDir),
}

impl Running {
    /// Starts `kind` with FAST tokens living `ttl` and rotated after `min_ttl`.
    pub async fn start(kind: Kind, ttl: Duration, min_ttl: Duration) -> Result<Running, BoxError> {
        match kind {
            Kind::Example => {
                let mut config = TestHost::config();
                let fast = config.plugins.fast.as_mut().ok_or("FAST off")?;
                fast.token_ttl = ttl;
                fast.token_min_ttl = min_ttl;
                Ok(Running::Example(Box::new(TestHost::start(config).await?)))
            }
            Kind::TokioXmpp => {
                let dir = tempfile::tempdir()?;
                let mut config = Config::loopback("localhost", &dir.path().join("data"))
                    .with_account("alice", "alicepass")
                    .with_account("bob", "bobpass");
                let fast = config.plugins.fast.as_mut().ok_or("FAST off")?;
                fast.token_ttl = ttl;
                fast.token_min_ttl = min_ttl;
                Ok(Running::TokioXmpp(Server::start(config).await?, dir))
            }
        }
    }

    /// With the default lifetimes (21 days, rotation after 1 day).
    pub async fn start_default(kind: Kind) -> Result<Running, BoxError> {
        let d = sasl2_fast::fast::FastConfig::default();
        Self::start(kind, d.token_ttl, d.token_min_ttl).await
    }

    pub fn kind(&self) -> Kind {
        match self {
            Running::Example(_) => Kind::Example,
            Running::TokioXmpp(..) => Kind::TokioXmpp,
        }
    }

    /// The STARTTLS listener.
    pub fn addr(&self) -> std::net::SocketAddr {
        match self {
            Running::Example(t) => t.host.local_addr(),
            Running::TokioXmpp(s, _) => s.local_addr(),
        }
    }

    /// The direct-TLS listener.
    pub fn tls_addr(&self) -> std::net::SocketAddr {
        let addr = match self {
            Running::Example(t) => t.host.tls_local_addr(),
            Running::TokioXmpp(s, _) => s.tls_local_addr(),
        };
        addr.expect("both servers are started with a direct-TLS listener")
    }

    /// The server's generated certificate (PEM).
    pub fn cert_pem_path(&self) -> &Path {
        match self {
            Running::Example(t) => t.host.cert_pem_path(),
            Running::TokioXmpp(s, _) => s.cert_pem_path(),
        }
    }

    /// A directory that lives as long as the server (for a client's files).
    pub fn dir(&self) -> &Path {
        match self {
            Running::Example(t) => t.dir(),
            Running::TokioXmpp(_, d) => d.path(),
        }
    }

    /// The FAST plugin (revocation).
    pub fn fast(&self) -> &FastPlugin {
        match self {
            Running::Example(t) => t.host.fast(),
            Running::TokioXmpp(s, _) => s.fast(),
        }
        .expect("FAST is on")
    }

    /// Options for the listener of `tls` with stream `from` = `from`.
    pub fn opts(&self, tls: Tls, from: Option<&str>) -> Result<ConnectOptions, ClientError> {
        let addr = match tls {
            Tls::Direct => self.tls_addr(),
            _ => self.addr(),
        };
        ConnectOptions::localhost(addr, tls, self.cert_pem_path(), from)
    }

    /// A client of alice (`from` = alice@localhost) on the listener of `tls`, stream open.
    pub async fn alice(&self, tls: Tls) -> Result<Client, ClientError> {
        Client::connect(self.opts(tls, Some("alice@localhost"))?).await
    }

    pub async fn shutdown(self) {
        match self {
            Running::Example(t) => t.shutdown().await,
            Running::TokioXmpp(s, _dir) => s.shutdown().await,
        }
    }
}
