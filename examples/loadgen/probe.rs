//! `--insecure`: one probe connection that accepts any certificate and records the chain; the
//! load then runs with normal verification against the recorded top certificate (trust on
//! first use).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use sasl2_fast::minidom::Element;
use sasl2_fast::stream::{Limits, StreamEvent, StreamReader, stream_header_xml};
use sasl2_fast::xmpp::ns;
use sasl2_fast_host::client::Tls;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug)]
struct Recorder {
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        if let Ok(mut c) = self.chain.lock() {
            *c = chain;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Reads stream events until an element satisfying `done` arrives.
async fn read_until(
    tcp: &mut TcpStream,
    reader: &mut StreamReader,
    done: impl Fn(&Element) -> bool,
) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    loop {
        while let Some(ev) = reader.next_event().map_err(|e| e.to_string())? {
            match ev {
                StreamEvent::Element(e) if done(&e) => return Ok(()),
                StreamEvent::End => return Err("server closed the stream".into()),
                _ => {}
            }
        }
        let n = tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("server closed the connection".into());
        }
        reader.feed(&buf[..n]).map_err(|e| e.to_string())?;
    }
}

async fn probe(
    addr: SocketAddr,
    tls: Tls,
    domain: &str,
    recorder: Arc<Recorder>,
) -> Result<(), String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    if tls == Tls::StartTls {
        let header = stream_header_xml(
            ns::JABBER_CLIENT,
            None,
            Some(domain),
            None,
            Some("1.0"),
            None,
        );
        tcp.write_all(header.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut reader = StreamReader::new(Limits::default());
        read_until(&mut tcp, &mut reader, |e| e.name() == "features").await?;
        tcp.write_all(format!("<starttls xmlns='{}'/>", ns::TLS).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        read_until(&mut tcp, &mut reader, |e| e.is("proceed", ns::TLS)).await?;
    }
    let config = rustls::ClientConfig::builder_with_provider(recorder.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(domain.to_owned()).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut s = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let _ = s.shutdown().await;
    Ok(())
}

/// PEM of the last certificate of the chain the server at `addr` presents.
pub async fn probe_chain_pem(
    addr: SocketAddr,
    tls: Tls,
    domain: &str,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let recorder = Arc::new(Recorder {
        provider: Arc::new(rustls::crypto::ring::default_provider()),
        chain: Mutex::new(Vec::new()),
    });
    tokio::time::timeout(timeout, probe(addr, tls, domain, recorder.clone()))
        .await
        .map_err(|_| "--insecure probe timed out".to_owned())??;
    let chain = recorder.chain.lock().map_err(|e| e.to_string())?.clone();
    let top = chain
        .last()
        .ok_or_else(|| "the server presented no certificate".to_owned())?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(top.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    Ok(pem.into_bytes())
}
