//! Server certificates: given files, the global `tls` section, or gost's fallbacks down to
//! a self-signed certificate made on first start and kept for the next.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pht_client::tls::{TlsError, fingerprint, load_certs, load_key, load_roots, provider};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tracing::{info, warn};

use crate::config::TlsConfig;

/// Files of the persisted self-made certificate (gost's names).
const AUTO_CERT: &str = "auto-ca-cert.pem";
const AUTO_KEY: &str = "auto-ca-key.pem";

/// A server TLS setup and where its certificate came from.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// `sha256:<hex>` of the certificate, for clients to `pin=`.
    pub fingerprint: String,
    pub source: String,
}

/// Builds the server TLS configuration for a listener.
///
/// Order (gost's): the listener's `certFile`/`keyFile`; the global `tls` section's; then
/// `cert.pem` + `key.pem` in the working directory; then the persisted self-made
/// certificate in `autoCertDir` (default `$HOME/.gost`); else a new ECDSA P-256 one,
/// saved there for the next start. `caFile` (listener's, else global) requires and
/// verifies client certificates.
pub fn server_config(
    listener: Option<&TlsConfig>,
    global: Option<&TlsConfig>,
    alpn: &[&[u8]],
) -> Result<ServerTls, TlsError> {
    let with_files = |t: &&TlsConfig| !t.cert_file.is_empty() && !t.key_file.is_empty();
    let (certs, key, source) =
        if let Some(t) = listener.filter(with_files).or(global.filter(with_files)) {
            (
                load_certs(&t.cert_file)?,
                load_key(&t.key_file)?,
                t.cert_file.clone(),
            )
        } else if Path::new("cert.pem").is_file() && Path::new("key.pem").is_file() {
            (
                load_certs("cert.pem")?,
                load_key("key.pem")?,
                "./cert.pem".into(),
            )
        } else {
            auto_certificate(global)?
        };
    let ca = listener
        .map(|t| t.ca_file.as_str())
        .filter(|c| !c.is_empty())
        .or(global.map(|t| t.ca_file.as_str()).filter(|c| !c.is_empty()));
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider())
                    .build()
                    .map_err(|e| {
                        TlsError::Rustls(rustls::Error::General(format!("caFile {ca}: {e}")))
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let fingerprint = fingerprint(certs[0].as_ref());
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(ServerTls {
        config: Arc::new(config),
        fingerprint,
        source,
    })
}

fn auto_dir(global: Option<&TlsConfig>) -> PathBuf {
    match global
        .map(|t| t.auto_cert_dir.as_str())
        .filter(|d| !d.is_empty())
    {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".gost"),
    }
}

type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String);

fn auto_certificate(global: Option<&TlsConfig>) -> Result<Pair, TlsError> {
    let dir = auto_dir(global);
    let (cert_path, key_path) = (dir.join(AUTO_CERT), dir.join(AUTO_KEY));
    if cert_path.is_file() && key_path.is_file() {
        let c = cert_path.to_string_lossy().into_owned();
        return Ok((load_certs(&c)?, load_key(&key_path.to_string_lossy())?, c));
    }
    let gen_err = |e: rcgen::Error| {
        TlsError::Rustls(rustls::Error::General(format!("generate certificate: {e}")))
    };
    let cn = global
        .map(|t| t.common_name.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("gost.run");
    let org = global
        .map(|t| t.organization.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("GOST");
    let days = global
        .and_then(|t| crate::config::parse_duration(&t.validity))
        .map(|d| d.as_secs() / 86_400)
        .filter(|d| *d > 0)
        .unwrap_or(365);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = rcgen::CertificateParams::new(vec![cn.to_string()]).map_err(gen_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days as i64);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).map_err(gen_err)?;
    let pem_cert = cert.pem();
    let pem_key = key.serialize_pem();
    let source = match persist(&dir, &cert_path, &key_path, &pem_cert, &pem_key) {
        Ok(()) => {
            info!(path = %cert_path.display(), "generated a self-signed certificate and saved it");
            cert_path.to_string_lossy().into_owned()
        }
        Err(e) => {
            warn!(dir = %dir.display(), "generated a self-signed certificate but could not save it: {e}");
            "generated (not saved)".into()
        }
    };
    let der = cert.der().clone();
    let key = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    Ok((vec![der], key, source))
}

fn persist(
    dir: &Path,
    cert: &Path,
    key: &Path,
    pem_cert: &str,
    pem_key: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(cert, pem_cert)?;
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(key)?;
        f.write_all(pem_key.as_bytes())?;
    }
    #[cfg(not(unix))]
    std::fs::write(key, pem_key)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_certificate_is_made_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("pht-auto-cert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let global = TlsConfig {
            auto_cert_dir: dir.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let a = server_config(None, Some(&global), &[b"h2"]).unwrap();
        let b = server_config(None, Some(&global), &[b"h2"]).unwrap();
        assert_eq!(
            a.fingerprint, b.fingerprint,
            "second start reuses the saved certificate"
        );
        assert!(dir.join(AUTO_KEY).is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(AUTO_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreadable_cert_file_is_named() {
        let t = TlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            ..Default::default()
        };
        let e = server_config(Some(&t), None, &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("read /nonexistent/cert.pem: "), "{e}");
    }
}
