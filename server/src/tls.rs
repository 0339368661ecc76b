//! Server certificates: given files, the global `tls` section, or gost's fallbacks down to
//! a self-made one: a small CA made on first start and kept for the next, and a server
//! certificate it signs (see [`autocert`]).

mod autocert;

use std::path::Path;
use std::sync::Arc;

use pht_runtime::pem::{TlsError, fingerprint, load_certs, load_key, load_roots, provider};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tracing::{info, warn};

use crate::config::TlsConfig;

/// A server TLS setup and where its certificate came from.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// `sha256:<hex>` of the certificate, for clients to `pin=`.
    pub fingerprint: String,
    pub source: String,
}

/// Builds the server TLS configuration for a listener whose address is unknown; see
/// [`server_config_for`].
pub fn server_config(
    listener: Option<&TlsConfig>,
    global: Option<&TlsConfig>,
    alpn: &[&[u8]],
) -> Result<ServerTls, TlsError> {
    server_config_for(listener, global, "", alpn)
}

/// Builds the server TLS configuration for a listener on `addr`.
///
/// Order (gost's): the listener's `certFile`/`keyFile`; the global `tls` section's; then
/// `cert.pem` + `key.pem` in the working directory; then the self-made certificate in
/// `autoCertDir` (default `$HOME/.gost`): a CA kept there (made on first start) and a
/// server certificate it signs for `localhost`, `127.0.0.1`, `::1`, the host name, the
/// `tls` section's `commonName` and `names`, and `addr`'s host. `caFile` (listener's,
/// else global) requires and verifies client certificates.
pub fn server_config_for(
    listener: Option<&TlsConfig>,
    global: Option<&TlsConfig>,
    addr: &str,
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
            let auto = autocert::certificate(listener, global, addr)?;
            match &auto.ca_file {
                Some(ca) => info!(
                    names = %auto.names.join(","),
                    "self-made certificate: clients verify it with secure=true&caFile={ca} \
                     (curl --cacert {ca})"
                ),
                None => warn!(
                    "self-made certificate: its CA could not be saved, so clients can only \
                     pin it"
                ),
            }
            (auto.chain, auto.key, auto.source)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pht-auto-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn global_in(dir: &Path) -> TlsConfig {
        TlsConfig {
            auto_cert_dir: dir.to_string_lossy().into_owned(),
            ..Default::default()
        }
    }

    /// What a client with `caFile=<the saved CA>` and `secure=true` does.
    fn verify_as_client(dir: &Path, tls: &ServerTls, name: &str) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let roots = load_roots(&dir.join(autocert::CA_CERT).to_string_lossy()).unwrap();
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let chain = tls.chain();
        v.verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
    }

    impl ServerTls {
        fn chain(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
            let leaf = load_certs(&self.source).unwrap();
            assert_eq!(fingerprint(&leaf[0]), self.fingerprint, "served = saved");
            leaf
        }
    }

    #[test]
    fn auto_certificate_is_a_ca_and_a_leaf_made_once_and_reused() {
        let dir = temp_dir("reuse");
        let global = global_in(&dir);
        let a = server_config(None, Some(&global), &[b"h2"]).unwrap();
        autocert::forget(&dir);
        let b = server_config(None, Some(&global), &[b"h2"]).unwrap();
        assert_eq!(
            a.fingerprint, b.fingerprint,
            "second start reuses the saved certificate"
        );
        for key in [autocert::CA_KEY, autocert::LEAF_KEY] {
            assert!(dir.join(key).is_file());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(dir.join(key))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{key}");
            }
        }
        use x509_parser::prelude::{FromDer, X509Certificate};
        let ca = load_certs(&dir.join(autocert::CA_CERT).to_string_lossy()).unwrap();
        let (_, ca) = X509Certificate::from_der(&ca[0]).unwrap();
        assert!(ca.is_ca());
        assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());
        assert!(ca.subject_alternative_name().unwrap().is_none());
        let chain = b.chain();
        assert_eq!(chain.len(), 2, "leaf, then the CA");
        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
        assert!(!leaf.is_ca());
        assert!(!leaf.key_usage().unwrap().unwrap().value.key_cert_sign());
        for name in ["localhost", "127.0.0.1", "::1"] {
            verify_as_client(&dir, &b, name).unwrap();
        }
        let e = verify_as_client(&dir, &b, "other.example").unwrap_err();
        assert!(e.to_string().contains("not valid for name"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn new_names_reissue_the_leaf_under_the_same_ca() {
        let dir = temp_dir("names");
        let mut global = global_in(&dir);
        let a = server_config_for(None, Some(&global), "pht.example:8443", &[]).unwrap();
        verify_as_client(&dir, &a, "pht.example").unwrap();
        let ca = std::fs::read(dir.join(autocert::CA_CERT)).unwrap();
        // A second listener in the same process with another host: one leaf for both.
        let b = server_config_for(None, Some(&global), "10.9.8.7:8443", &[]).unwrap();
        verify_as_client(&dir, &b, "pht.example").unwrap();
        verify_as_client(&dir, &b, "10.9.8.7").unwrap();
        // Next start: both listeners keep that leaf.
        autocert::forget(&dir);
        let a2 = server_config_for(None, Some(&global), "pht.example:8443", &[]).unwrap();
        let b2 = server_config_for(None, Some(&global), "10.9.8.7:8443", &[]).unwrap();
        assert_eq!(
            (&a2.fingerprint, &b2.fingerprint),
            (&b.fingerprint, &b.fingerprint)
        );
        // A name added to the tls section.
        autocert::forget(&dir);
        global.names = vec!["added.example".into()];
        let c = server_config(None, Some(&global), &[]).unwrap();
        assert_ne!(c.fingerprint, b.fingerprint);
        verify_as_client(&dir, &c, "added.example").unwrap();
        // commonName changes re-issue it too.
        autocert::forget(&dir);
        global.common_name = "pht.cn.example".into();
        let d = server_config(None, Some(&global), &[]).unwrap();
        assert_ne!(d.fingerprint, c.fingerprint);
        verify_as_client(&dir, &d, "pht.cn.example").unwrap();
        assert_eq!(
            std::fs::read(dir.join(autocert::CA_CERT)).unwrap(),
            ca,
            "same CA"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_old_single_certificate_is_replaced() {
        let dir = temp_dir("old");
        std::fs::create_dir_all(&dir).unwrap();
        // The previous format: one CA:TRUE certificate for gost.run, served as is.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["gost.run".to_string()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let old = p.self_signed(&key).unwrap();
        std::fs::write(dir.join(autocert::CA_CERT), old.pem()).unwrap();
        std::fs::write(dir.join(autocert::CA_KEY), key.serialize_pem()).unwrap();
        let t = server_config(None, Some(&global_in(&dir)), &[]).unwrap();
        assert_ne!(t.fingerprint, fingerprint(old.der()));
        let ca = std::fs::read_to_string(dir.join(autocert::CA_CERT)).unwrap();
        assert_ne!(ca, old.pem(), "replaced");
        verify_as_client(&dir, &t, "localhost").unwrap();
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
