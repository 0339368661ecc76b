//! Client TLS with gost's semantics, plus fingerprint pinning; PEM helpers for the server.
//!
//! gost verifies nothing unless `secure=true`: that keeps working with the server's
//! self-made certificate, and this module warns about it. `caFile` alone checks the chain
//! but not the name; `secure=true` checks both; `pin=sha256:<hex>` accepts exactly one
//! certificate whatever its chain.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256};

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path}: no {what} found")]
    Empty { path: String, what: &'static str },
    #[error("invalid pin {0:?}: expected sha256:<64 hex digits>")]
    BadPin(String),
    #[error("invalid serverName {0:?}")]
    BadServerName(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |reason: String| TlsError::File {
        path: path.to_string(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|_| TlsError::Empty {
        path: path.to_string(),
        what: "private key",
    })
}

/// A root store with every certificate of a PEM file.
pub fn load_roots(path: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// `sha256:<hex>` of a certificate's DER bytes: what `pin=` compares and the server logs.
///
/// ```
/// let fp = pht_client::tls::fingerprint(&[1, 2, 3]);
/// assert!(fp.starts_with("sha256:039058c6f2c0cb49"));
/// ```
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// The ring provider, installed once as the process default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a client asks of a TLS server (gost's `dialer.tls` keys, plus `pin`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsOptions {
    /// `secure`: verify chain and name (gost's default is false: verify nothing).
    pub secure: bool,
    /// `serverName`: SNI and the verified name (default: the node's host).
    pub server_name: Option<String>,
    /// `caFile`: roots to verify against (PEM).
    pub ca_file: Option<String>,
    /// `certFile` + `keyFile`: client certificate for mutual TLS.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// `pin`: `sha256:<hex>` of the one server certificate accepted.
    pub pin: Option<String>,
}

impl ClientTlsOptions {
    /// Whether the server's identity is checked at all.
    pub fn verifies(&self) -> bool {
        self.secure || self.ca_file.is_some() || self.pin.is_some()
    }

    /// Builds the rustls configuration; `alpn` is offered in order.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
        let provider = provider();
        let algs = provider.signature_verification_algorithms;
        let verifier: Arc<dyn ServerCertVerifier> = if let Some(pin) = &self.pin {
            Arc::new(Unchained {
                pin: Some(parse_pin(pin)?),
                algs,
            })
        } else if let Some(ca) = &self.ca_file {
            let inner = WebPkiServerVerifier::builder_with_provider(
                Arc::new(load_roots(ca)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            Arc::new(ChainOnly {
                inner,
                check_name: self.secure,
            })
        } else if self.secure {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?
        } else {
            Arc::new(Unchained { pin: None, algs })
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut cfg = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => builder.with_client_auth_cert(load_certs(c)?, load_key(k)?)?,
            _ => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }

    /// The name sent as SNI (and verified when `secure`): `serverName`, else `host`.
    pub fn sni(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_string())
            .map_err(|_| TlsError::BadServerName(name.to_string()))
    }
}

fn parse_pin(pin: &str) -> Result<[u8; 32], TlsError> {
    let bad = || TlsError::BadPin(pin.to_string());
    let digits = pin
        .strip_prefix("sha256:")
        .ok_or_else(bad)?
        .replace(':', "");
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits, &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// gost's default (`pin: None`): any certificate; with a pin, exactly the one whose DER
/// bytes hash to it. The handshake signature is checked either way.
#[derive(Debug)]
struct Unchained {
    pin: Option<[u8; 32]>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unchained {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            Some(want) if Sha256::digest(end_entity.as_ref()).as_slice() != want => {
                Err(rustls::Error::General(format!(
                    "certificate pin mismatch: server presented {}",
                    fingerprint(end_entity.as_ref())
                )))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// `caFile` verification; the name is checked only with `secure=true` (gost's rule).
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_strictly() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_pin(&format!("sha256:{hex}")).unwrap(), [0xab; 32]);
        assert!(parse_pin(&hex).is_err());
        assert!(parse_pin("sha256:abcd").is_err());
        // Upper case and colon-separated pairs (as openssl prints them) are accepted.
        let colons = ["AB"; 32].join(":");
        assert_eq!(parse_pin(&format!("sha256:{colons}")).unwrap(), [0xab; 32]);
        // Neither a sign nor a multi-byte character is a digit, and neither panics.
        assert!(parse_pin(&format!("sha256:+f{}", "ab".repeat(31))).is_err());
        assert!(parse_pin(&format!("sha256:a\u{e9}{}", "a".repeat(61))).is_err());
        assert_eq!(
            parse_pin("sha256:zz").unwrap_err().to_string(),
            "invalid pin \"sha256:zz\": expected sha256:<64 hex digits>"
        );
    }
}
