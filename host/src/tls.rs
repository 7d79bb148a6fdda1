//! TLS: certificate loading or generation, the rustls server config, and per-connection
//! channel-binding data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sasl2_fast::sasl2::TlsInfo;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub mod early_data;
pub mod resumption;

/// Channel bindings from rustls live in the library (`sasl2_fast::rustls`), for every host.
pub use sasl2_fast::rustls::{server_end_point, tls_info};

/// The server's TLS identity and config.
pub struct TlsSetup {
    /// For `tokio_rustls::TlsAcceptor::from`.
    pub config: Arc<rustls::ServerConfig>,
    /// PEM file of the certificate in use.
    pub cert_pem_path: PathBuf,
    /// `tls-server-end-point` of the leaf certificate (RFC 5929 §4.1), `None` if undefined.
    pub server_end_point: Option<Vec<u8>>,
    /// Completed handshakes by kind (full or resumed), for tests and measurements.
    pub handshakes: Arc<HandshakeCounts>,
}

/// Completed server handshakes, counted by [`TlsSetup::connection_info`].
#[derive(Debug, Default)]
pub struct HandshakeCounts {
    full: AtomicU64,
    resumed: AtomicU64,
}

impl HandshakeCounts {
    /// Full handshakes (certificate sent and signed).
    pub fn full(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }

    /// Resumed handshakes (a session ticket or cached session accepted).
    pub fn resumed(&self) -> u64 {
        self.resumed.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("cert_pem_path", &self.cert_pem_path)
            .field("server_end_point", &self.server_end_point.is_some())
            .finish()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// File problem.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What happened.
        message: String,
    },
    /// Certificate generation failed.
    #[error("generating a certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate or key.
    #[error("TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes a file readable by the owner only.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Returns the certificate and key paths: the configured ones, or a self-signed pair under
/// `<data_dir>/tls/` (generated on first start, reused afterwards).
pub fn ensure_cert(
    domain: &str,
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<(PathBuf, PathBuf), TlsError> {
    if let (Some(c), Some(k)) = (cert, key) {
        return Ok((c.to_path_buf(), k.to_path_buf()));
    }
    let dir = data_dir.join("tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
    let mut names = vec![domain.to_owned()];
    if domain != "localhost" {
        names.push("localhost".to_owned());
    }
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    write_private(&key_path, ck.signing_key.serialize_pem().as_bytes())
        .map_err(|e| file_err(&key_path, e))?;
    std::fs::write(&cert_path, ck.cert.pem()).map_err(|e| file_err(&cert_path, e))?;
    tracing::info!(path = %cert_path.display(), "generated a self-signed certificate");
    Ok((cert_path, key_path))
}

/// Loads the certificate and builds the rustls config (ring provider, TLS 1.2 + 1.3, EMS
/// required so `tls-exporter` is defined on TLS 1.2 too). `session_tickets` is
/// `[server] tls_session_tickets`: stateless tickets (see [`resumption`]) or rustls' default
/// 256-entry server-side session cache.
pub fn setup(
    domain: &str,
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
    session_tickets: bool,
) -> Result<TlsSetup, TlsError> {
    let (cert_path, key_path) = ensure_cert(domain, data_dir, cert, key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| file_err(&cert_path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&cert_path, e))?;
    if chain.is_empty() {
        return Err(file_err(&cert_path, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| file_err(&key_path, e))?;
    let server_end_point = server_end_point(&chain[0]);
    // H-12 / RFC 9266: the library's config requires extended master secret, so a TLS 1.2
    // client that does not offer it gets a handshake_failure alert.
    let mut config = sasl2_fast::rustls::server_config(chain, key)?;
    // XMPP has no ALPN requirement on the STARTTLS port; XEP-0368 clients may send "xmpp-client".
    config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    if session_tickets {
        resumption::enable_stateless_tickets(&mut config)?;
    }
    Ok(TlsSetup {
        config: Arc::new(config),
        cert_pem_path: cert_path,
        server_end_point,
        handshakes: Arc::default(),
    })
}

impl TlsSetup {
    /// Channel-binding data of a connection whose handshake just completed, counting the
    /// handshake as full or resumed. On a resumed session the bindings are still this
    /// connection's own (see [`tls_info`]).
    pub fn connection_info(&self, conn: &rustls::ServerConnection) -> TlsInfo {
        let counter = match conn.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => &self.handshakes.resumed,
            _ => &self.handshakes.full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tls_info(conn, self.server_end_point.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest as _;

    /// CB-5: `tls-server-end-point` is the hash of the whole DER certificate, with the hash of
    /// its signature algorithm: SHA-256 for the certificate the host generates (rcgen's ECDSA
    /// P-256 with SHA-256), SHA-384 for ECDSA P-384 with SHA-384, and undefined for Ed25519,
    /// whose signature names no hash.
    #[test]
    fn rcgen_cert_uses_sha256() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der = ck.cert.der().to_vec();
        let ep = super::server_end_point(&der).unwrap();
        assert_eq!(ep, sha2::Sha256::digest(&der).to_vec());

        let cert_with = |alg| {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let p384 = cert_with(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            super::server_end_point(&p384),
            Some(sha2::Sha384::digest(&p384).to_vec())
        );
        assert_eq!(
            super::server_end_point(&cert_with(&rcgen::PKCS_ED25519)),
            None
        );
    }
}
