//! A second example XMPP server: sasl2-fast's negotiator, FAST plugin and Bind 2 on tokio-xmpp
//! 6's responder-side XML streams (`tokio_xmpp::xmlstream`) over tokio-rustls, with nothing
//! from the example host (`host/`). It shows what a Rust server built on the xmpp-rs stack
//! writes to embed the crate: this file (set-up, listeners) and `stream.rs` (one connection)
//! are that glue; `config.rs` reads the example host's TOML format. `docs/embedding.md`
//! counts the lines.
//!
//! It serves SASL2 with FAST (every HT mechanism the connection can bind to), SCRAM-SHA-1 and
//! SCRAM-SHA-256 with and without `-PLUS`, PLAIN, Bind 2, STARTTLS and direct TLS; after login
//! a minimal session: pings and disco#info are answered, RFC 6120 resource binding works,
//! other requests get `service-unavailable`, messages and presence are dropped.

pub mod config;
mod stream;

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sasl2_fast::BoxError;
use sasl2_fast::fast::FastPlugin;
use sasl2_fast::fast::tokens::SweeperHandle;
use sasl2_fast::rustls::ChannelBindingSource;
use sasl2_fast::sasl2::accounts::MemoryAccounts;
use sasl2_fast::sasl2::bind2::Bind2;
use sasl2_fast::sasl2::plain::PlainProvider;
use sasl2_fast::sasl2::scram::{DEFAULT_FAKE_ITERATIONS, ScramProvider};
use sasl2_fast::sasl2::{BackoffThrottle, Sasl2Server, ScramHash};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

pub use config::{Config, ConfigError};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 10_000;

/// What every connection shares.
struct Shared {
    domain: String,
    require_tls: bool,
    sasl2: Arc<Sasl2Server>,
    acceptor: tokio_rustls::TlsAcceptor,
    bindings: ChannelBindingSource,
    shutdown: watch::Receiver<bool>,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<SocketAddr>,
    cert_pem: PathBuf,
    fast: Option<FastPlugin>,
    shutdown: watch::Sender<bool>,
    connections: Arc<Semaphore>,
    accept_tasks: Vec<JoinHandle<()>>,
    _sweeper: Option<SweeperHandle>,
}

impl Server {
    /// Opens the token store, derives the accounts' SCRAM keys, sets up TLS, binds the
    /// listeners and serves them.
    pub async fn start(config: Config) -> Result<Server, BoxError> {
        let s = &config.server;
        // Owner-only: the token store, the pepper and the key live here.
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true).mode(0o700).create(&s.data_dir)?;
        let accounts = Arc::new(MemoryAccounts::new());
        for (user, password) in &config.accounts {
            // The count unknown accounts announce too, so they look alike (S-29).
            accounts.set_password(user, password, DEFAULT_FAKE_ITERATIONS);
        }
        let fast = match config.fast() {
            Some(f) => Some(FastPlugin::open(f.clone(), &s.data_dir).await?),
            None => None,
        };
        let scram = |hash, plus| Arc::new(ScramProvider::new(hash, plus, accounts.clone()));
        let mut sasl2 = Sasl2Server::builder()
            .mechanism(scram(ScramHash::Sha256, true))
            .mechanism(scram(ScramHash::Sha256, false))
            .mechanism(scram(ScramHash::Sha1, true))
            .mechanism(scram(ScramHash::Sha1, false))
            .mechanism(Arc::new(PlainProvider::new(accounts.clone())))
            .inline_feature(Arc::new(Bind2::new()));
        // Password guessing is bounded by the library's default throttle; FAST's client
        // records make the owners' devices known, so strangers cannot lock them out.
        let mut throttle = BackoffThrottle::default();
        if let Some(f) = &fast {
            sasl2 = sasl2.inline_feature(Arc::new(f.clone()));
            throttle = throttle.with_known_devices(f.tokens().clone());
        }
        sasl2 = sasl2.login_throttle(Arc::new(throttle));

        let (cert_pem, key_pem) = certificate(s)?;
        let (mut tls, bindings) = sasl2_fast::rustls::load_pem_files(&cert_pem, &key_pem)?;
        tls.alpn_protocols = vec![b"xmpp-client".to_vec()];

        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            domain: s.domain.clone(),
            require_tls: s.require_tls,
            sasl2: Arc::new(sasl2.build()),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
            bindings,
            shutdown: shutdown_rx,
        });
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let (mut addrs, mut accept_tasks) = (Vec::new(), Vec::new());
        for (addr, direct) in [(Some(s.listen), false), (s.listen_tls, true)] {
            let Some(addr) = addr else { continue };
            let listener = TcpListener::bind(addr).await?;
            addrs.push(listener.local_addr()?);
            let task = accept(shared.clone(), listener, direct, connections.clone());
            accept_tasks.push(tokio::spawn(task));
        }
        let _sweeper = fast.as_ref().map(|f| f.tokens().spawn_sweeper());
        Ok(Server {
            addrs,
            cert_pem,
            fast,
            shutdown,
            connections,
            accept_tasks,
            _sweeper,
        })
    }

    /// Every listener's address: STARTTLS first, then direct TLS if configured.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The STARTTLS listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The direct-TLS listener's address, if configured.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.addrs.get(1).copied()
    }

    /// The certificate in use (PEM).
    pub fn cert_pem_path(&self) -> &Path {
        &self.cert_pem
    }

    /// The FAST plugin (revocation, client lists), if FAST is on.
    pub fn fast(&self) -> Option<&FastPlugin> {
        self.fast.as_ref()
    }

    /// Stops accepting, closes every stream (`</stream:stream>`) and waits for the
    /// connections to end, so the token store is released when this returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.accept_tasks {
            task.abort();
            let _ = task.await;
        }
        let _ = self.connections.acquire_many(MAX_CONNECTIONS as u32).await;
    }
}

/// Accepts connections until shutdown, each served by its own task.
async fn accept(
    shared: Arc<Shared>,
    listener: TcpListener,
    direct_tls: bool,
    limit: Arc<Semaphore>,
) {
    while let Ok(permit) = limit.clone().acquire_owned().await {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let span = tracing::info_span!("conn", %peer, direct_tls);
        let shared = shared.clone();
        tokio::spawn(
            async move {
                stream::serve(&shared, tcp, peer, direct_tls).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// The configured certificate and key, or a self-signed pair in `<data_dir>/tls/`, generated
/// on first start and reused after.
fn certificate(s: &config::Server) -> Result<(PathBuf, PathBuf), BoxError> {
    if let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key) {
        return Ok((cert.clone(), key.clone()));
    }
    let (cert, key) = (
        s.data_dir.join("tls/cert.pem"),
        s.data_dir.join("tls/key.pem"),
    );
    if !(cert.exists() && key.exists()) {
        std::fs::create_dir_all(s.data_dir.join("tls"))?;
        let mut names = vec![s.domain.clone(), "localhost".to_owned()];
        names.dedup();
        let generated = rcgen::generate_simple_self_signed(names)?;
        // The key is readable by its owner only.
        let mut file = std::fs::OpenOptions::new();
        let file = file
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)?;
        (&file).write_all(generated.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&cert, generated.cert.pem())?;
    }
    Ok((cert, key))
}
