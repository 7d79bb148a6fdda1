//! TLS: certificate loading or generation, the rustls server config, and per-connection
//! channel-binding data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sasl2_fast::sasl2::{ChannelBindings, TlsInfo, TlsVersion};
use sha2::Digest as _;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub mod early_data;
pub mod resumption;

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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // H-12 / RFC 9266: HT and tls-exporter on TLS 1.2 are only safe with extended master
    // secret, so a TLS 1.2 client that does not offer it gets a handshake_failure alert.
    config.require_ems = true;
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

/// Channel-binding data of an established server connection: `tls-server-end-point` (CB-1)
/// and `tls-exporter` (CB-2; RFC 9266's label and empty context, CB-3), never `tls-unique`
/// (CB-4: rustls does not expose the Finished message), so the types the host advertises are
/// exactly those this connection binds to (CB-6). Correct on resumed sessions too: the
/// exporter is derived from this connection's own key schedule (fresh per connection, RFC 8446
/// §7.5, so CB-3's `tls-exporter` is never shared between the original and the resumed
/// connection), and `tls-server-end-point` is always the hash of the server's own certificate
/// (CB-5), whichever handshake produced the session.
pub fn tls_info(conn: &rustls::ServerConnection, server_end_point: Option<&[u8]>) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
        _ => TlsVersion::Tls12,
    };
    // TLS 1.3 always has it; TLS 1.2 only with EMS, which `require_ems` guarantees (H-12).
    let tls_exporter = conn
        .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", Some(b""))
        .ok()
        .map(|b| b.to_vec());
    let mut cb = ChannelBindings::none();
    if let Some(e) = tls_exporter {
        cb = cb.with_tls_exporter(e);
    }
    if let Some(ep) = server_end_point {
        cb = cb.with_tls_server_end_point(ep);
    }
    TlsInfo::new(version, cb)
}

/// Which hash RFC 5929 §4.1 uses for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndPointHash {
    Sha256,
    Sha384,
    Sha512,
}

/// `tls-server-end-point` for a DER certificate: the hash of the whole certificate with the
/// hash of its signature algorithm (MD5 and SHA-1 are replaced by SHA-256). `None` when the
/// algorithm names no hash (Ed25519, RSASSA-PSS, unknown).
pub fn server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    let h = signature_hash(cert_der)?;
    Some(match h {
        EndPointHash::Sha256 => sha2::Sha256::digest(cert_der).to_vec(),
        EndPointHash::Sha384 => sha2::Sha384::digest(cert_der).to_vec(),
        EndPointHash::Sha512 => sha2::Sha512::digest(cert_der).to_vec(),
    })
}

/// Reads one DER TLV header at `pos`: (tag, content start, content length).
fn der_header(b: &[u8], pos: usize) -> Option<(u8, usize, usize)> {
    let tag = *b.get(pos)?;
    let first = *b.get(pos + 1)? as usize;
    if first < 0x80 {
        return Some((tag, pos + 2, first));
    }
    let n = first & 0x7f;
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | *b.get(pos + 2 + i)? as usize;
    }
    Some((tag, pos + 2 + n, len))
}

/// The OID of `Certificate.signatureAlgorithm`, mapped to the end-point hash.
fn signature_hash(cert: &[u8]) -> Option<EndPointHash> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE {OID ..}, .. }
    let (t, start, _) = der_header(cert, 0)?;
    if t != 0x30 {
        return None;
    }
    let (t, tbs_start, tbs_len) = der_header(cert, start)?;
    if t != 0x30 {
        return None;
    }
    let (t, alg_start, _) = der_header(cert, tbs_start.checked_add(tbs_len)?)?;
    if t != 0x30 {
        return None;
    }
    let (t, oid_start, oid_len) = der_header(cert, alg_start)?;
    if t != 0x06 {
        return None;
    }
    let oid = cert.get(oid_start..oid_start.checked_add(oid_len)?)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const DSA_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x02];
    if let Some(rest) = oid.strip_prefix(RSA) {
        return match rest {
            [0x04] | [0x05] | [0x0b] | [0x0e] => Some(EndPointHash::Sha256), // md5, sha1, sha256, sha224
            [0x0c] => Some(EndPointHash::Sha384),
            [0x0d] => Some(EndPointHash::Sha512),
            _ => None, // RSASSA-PSS (hash in parameters) and others
        };
    }
    if let Some(rest) = oid.strip_prefix(ECDSA_SHA2) {
        return match rest {
            [0x01] | [0x02] => Some(EndPointHash::Sha256),
            [0x03] => Some(EndPointHash::Sha384),
            [0x04] => Some(EndPointHash::Sha512),
            _ => None,
        };
    }
    if oid == ECDSA_SHA1 || oid == DSA_SHA256 {
        return Some(EndPointHash::Sha256);
    }
    None
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
