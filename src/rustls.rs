//! Channel bindings from a rustls server connection (feature `rustls`): what every host on
//! rustls (tokio-rustls, tokio-xmpp's transports) hands the negotiator as [`TlsInfo`].
//!
//! ```no_run
//! # fn demo(chain: Vec<rustls::pki_types::CertificateDer<'static>>,
//! #         key: rustls::pki_types::PrivateKeyDer<'static>,
//! #         conn: &rustls::ServerConnection) -> Result<(), rustls::Error> {
//! use sasl2_fast::rustls::{ChannelBindingSource, server_config};
//! use sasl2_fast::sasl2::StreamInfo;
//! // Once per server: the config (EMS required, H-12) and the certificate's end-point hash.
//! let source = ChannelBindingSource::new(&chain[0]);
//! let config = server_config(chain, key)?;
//! // Once per connection, after the handshake (`tls.get_ref().1` with tokio-rustls).
//! let stream = StreamInfo::new("example.com").with_tls(source.tls_info(conn));
//! # Ok(()) }
//! ```
//!
//! The rules (docs/protocol.md §5.6, §6.3): `tls-exporter` is RFC 9266's exporter (label
//! `EXPORTER-Channel-Binding`, empty context, 32 bytes; CB-2, CB-3), defined on TLS 1.2 only
//! with extended master secret, which [`server_config`] requires (H-12); `tls-server-end-point`
//! is the hash of the server's own certificate (CB-1, CB-5); `tls-unique` is never reported,
//! because rustls does not expose the Finished message (CB-4). So the types a stream
//! advertises are exactly those it binds to (CB-6).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::rustls::pki_types::pem::PemObject as _;
use ::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest as _;

use crate::sasl2::{ChannelBindings, TlsInfo, TlsVersion};

/// A rustls server config fit for SASL channel binding and FAST: the ring provider, TLS 1.3 and
/// 1.2, one certificate chain, no client certificates, and extended master secret required, so
/// `tls-exporter` (and HT `-EXPR`) is safe on TLS 1.2 too (H-12: a TLS 1.2 client without EMS
/// gets a `handshake_failure` alert). The host adds what is its own (ALPN, session tickets).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<::rustls::ServerConfig, ::rustls::Error> {
    let provider = Arc::new(::rustls::crypto::ring::default_provider());
    let mut config = ::rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&::rustls::version::TLS13, &::rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.require_ems = true;
    Ok(config)
}

/// A TLS identity that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFilesError {
    /// A PEM file could not be read or parsed.
    #[error("{}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ::rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{}: no certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the certificate or key.
    #[error("TLS config: {0}")]
    Rustls(#[from] ::rustls::Error),
}

/// Loads a PEM certificate chain and private key into [`server_config`], with the
/// [`ChannelBindingSource`] of the chain's end-entity certificate: a host's whole TLS set-up
/// before it adds its own settings (ALPN, session tickets).
pub fn load_pem_files(
    cert: &Path,
    key: &Path,
) -> Result<(::rustls::ServerConfig, ChannelBindingSource), TlsFilesError> {
    let pem = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsFilesError::Pem { path, source }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert))?;
    let leaf = chain.first().ok_or_else(|| TlsFilesError::NoCertificate {
        path: cert.to_owned(),
    })?;
    let source = ChannelBindingSource::new(leaf);
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    Ok((server_config(chain, key)?, source))
}

/// What a server needs to compute every connection's channel bindings: the
/// `tls-server-end-point` of its certificate, computed once (rustls cannot tell which
/// certificate a connection used; a host serving several certificates keeps one source per
/// certificate).
#[derive(Clone, Default)]
pub struct ChannelBindingSource {
    server_end_point: Option<Vec<u8>>,
}

impl std::fmt::Debug for ChannelBindingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelBindingSource")
            .field("server_end_point", &self.server_end_point.is_some())
            .finish()
    }
}

impl ChannelBindingSource {
    /// For a server whose end-entity certificate is `leaf`.
    pub fn new(leaf: &CertificateDer<'_>) -> Self {
        ChannelBindingSource {
            server_end_point: server_end_point(leaf),
        }
    }

    /// The certificate's `tls-server-end-point`, if defined (CB-5).
    pub fn server_end_point(&self) -> Option<&[u8]> {
        self.server_end_point.as_deref()
    }

    /// The TLS facts of a connection whose handshake has completed.
    pub fn tls_info(&self, conn: &::rustls::ServerConnection) -> TlsInfo {
        tls_info(conn, self.server_end_point())
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
///
/// The connection's config must require extended master secret (as [`server_config`] does)
/// when it allows TLS 1.2: without EMS the TLS 1.2 exporter is not safe to bind to (H-12).
pub fn tls_info(conn: &::rustls::ServerConnection, server_end_point: Option<&[u8]>) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(::rustls::ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
        _ => TlsVersion::Tls12,
    };
    // TLS 1.3 always has it; TLS 1.2 only with EMS (H-12), which the config guarantees.
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

/// `tls-server-end-point` for a DER certificate (CB-5): the hash of the whole certificate with
/// the hash of its signature algorithm (MD5 and SHA-1 are replaced by SHA-256). `None` when the
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
    /// Hostile or truncated DER never panics and names no hash.
    #[test]
    fn truncated_certificates_have_no_end_point() {
        assert_eq!(super::server_end_point(&[]), None);
        assert_eq!(super::server_end_point(&[0x30]), None);
        assert_eq!(
            super::server_end_point(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(
            super::server_end_point(&[0x30, 0x03, 0x30, 0x01, 0x00]),
            None
        );
    }
}
