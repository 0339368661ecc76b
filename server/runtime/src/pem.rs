//! PEM certificate and key files, certificate fingerprints, and the rustls crypto provider:
//! what the server's TLS listeners and the client's TLS options both read.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// A TLS file, or a TLS set-up, that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path}: no {what} found")]
    Empty { path: String, what: &'static str },
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
/// let fp = pht_runtime::pem::fingerprint(&[1, 2, 3]);
/// assert!(fp.starts_with("sha256:039058c6f2c0cb49"));
/// ```
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// The ring crypto provider, the one every TLS configuration of the project is built on
/// (no aws-lc, no process-wide default to race for).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_say_which_and_why() {
        let dir = std::env::temp_dir().join(format!("pht-runtime-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a PEM file\n").unwrap();
        let empty = empty.to_string_lossy();
        assert_eq!(
            load_certs(&empty).unwrap_err().to_string(),
            format!("{empty}: no certificate found")
        );
        assert_eq!(
            load_key(&empty).unwrap_err().to_string(),
            format!("{empty}: no private key found")
        );
        let missing = dir.join("missing.pem");
        let missing = missing.to_string_lossy();
        assert!(
            matches!(load_roots(&missing), Err(TlsError::File { path, .. }) if path == missing)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
