//! Client TLS with gost's semantics, plus fingerprint pinning.
//!
//! gost verifies nothing unless `secure=true`: that keeps working with the server's
//! self-made certificate, and this module warns about it. `caFile` alone checks the chain
//! but not the name; `secure=true` checks both; `pin=sha256:<hex>` accepts exactly one
//! certificate whatever its chain. The PEM files are read by `pht_runtime::pem`.

use std::sync::Arc;

use pht_runtime::pem::{TlsError, fingerprint, load_certs, load_key, load_roots, provider};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256};

/// Client TLS options that cannot be used: a file or the rustls set-up
/// ([`TlsError`]), or a malformed `pin` or `serverName`.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error(transparent)]
    Setup(#[from] TlsError),
    #[error("invalid pin {0:?}: expected sha256:<64 hex digits>")]
    BadPin(String),
    #[error("invalid serverName {0:?}")]
    BadServerName(String),
}

impl From<rustls::Error> for ClientTlsError {
    fn from(e: rustls::Error) -> Self {
        ClientTlsError::Setup(e.into())
    }
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
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<ClientConfig, ClientTlsError> {
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
            .map_err(|e| rustls::Error::General(e.to_string()))?;
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
                .map_err(|e| rustls::Error::General(e.to_string()))?
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
    pub fn sni(&self, host: &str) -> Result<ServerName<'static>, ClientTlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_string())
            .map_err(|_| ClientTlsError::BadServerName(name.to_string()))
    }
}

fn parse_pin(pin: &str) -> Result<[u8; 32], ClientTlsError> {
    let bad = || ClientTlsError::BadPin(pin.to_string());
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
