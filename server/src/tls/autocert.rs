//! The self-made certificate: a small CA kept in the auto-cert dir, and a server
//! certificate (the leaf) that it signs, kept next to it.
//!
//! Files (in `autoCertDir`, default `$HOME/.gost`):
//! - `auto-ca-cert.pem` + `auto-ca-key.pem`: the CA (CA:TRUE, pathLen 0, keyCertSign).
//!   What clients trust: `caFile=` with `secure=true`, `curl --cacert`, a browser store.
//!   Made once and kept (ten years, renewed 30 days before it ends).
//! - `auto-cert.pem` (leaf, then the CA) + `auto-key.pem`: what listeners serve
//!   (CA:FALSE, serverAuth, digitalSignature). Kept, so the logged `pin=` fingerprint
//!   holds across restarts, and re-issued from the CA at start when it no longer fits:
//!   a wanted name is missing (the new one keeps the old names too, so two listeners with
//!   different hosts settle on one leaf), `commonName`/`organization` changed, it ends
//!   within min(30 days, validity/3) or outlives a shortened `validity`, or it is not
//!   signed by the CA.
//!
//! Keys are mode 0600; files are written to a temp name and renamed into place. Before
//! this layout, `auto-ca-cert.pem` held one CA:TRUE certificate served as the end entity,
//! which no client can verify (`CaUsedAsEndEntity`); such a pair is replaced.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use pht_runtime::pem::{TlsError, fingerprint, load_certs, provider};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use tracing::{info, warn};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::config::TlsConfig;

pub(super) const CA_CERT: &str = "auto-ca-cert.pem";
pub(super) const CA_KEY: &str = "auto-ca-key.pem";
pub(super) const LEAF_CERT: &str = "auto-cert.pem";
pub(super) const LEAF_KEY: &str = "auto-key.pem";

const DAY: Duration = Duration::from_secs(86_400);
/// The CA's lifetime (at least the leaf's validity plus a month).
const CA_LIFETIME: Duration = Duration::from_secs(3650 * 86_400);
/// A CA this close to its end is replaced.
const CA_RENEW: Duration = Duration::from_secs(30 * 86_400);
/// The leaf's lifetime when `validity` is unset (gost's default).
const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// The served chain (leaf, CA) and key, and where they are kept.
pub(super) struct AutoCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The leaf's file, or a note that it could not be saved.
    pub source: String,
    /// The CA's file, for `caFile=`; `None` when it could not be saved.
    pub ca_file: Option<String>,
    /// The leaf's names.
    pub names: Vec<String>,
}

/// What the leaf should be, from the configuration and the listener.
struct Wanted {
    dir: PathBuf,
    names: Vec<String>,
    common_name: String,
    organization: String,
    validity: Duration,
}

struct Ca {
    der: CertificateDer<'static>,
    /// Its subject, key identifier and key, to sign with.
    issuer: Issuer<'static, KeyPair>,
    /// Whether it has a subjectKeyIdentifier (then leaves get an authorityKeyIdentifier).
    ski: bool,
    not_after: OffsetDateTime,
    saved: bool,
}

#[derive(Clone)]
struct Leaf {
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
    names: Vec<String>,
    common_name: Option<String>,
    organization: Option<String>,
    not_after: OffsetDateTime,
    saved: bool,
}

/// The CA and leaf this process uses, per auto-cert dir: every listener shares them, and a
/// CA that could not be saved is still made only once.
static CACHE: LazyLock<Mutex<HashMap<PathBuf, Issued>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

type Issued = (Ca, Option<Leaf>);

fn err(msg: impl Into<String>) -> TlsError {
    TlsError::Rustls(rustls::Error::General(msg.into()))
}

fn gen_err(e: rcgen::Error) -> TlsError {
    err(format!("generate certificate: {e}"))
}

/// The self-made chain for a listener on `addr`: the CA (loaded, or made and saved) and a
/// leaf for the wanted names (loaded, or issued and saved).
pub(super) fn certificate(
    listener: Option<&TlsConfig>,
    global: Option<&TlsConfig>,
    addr: &str,
) -> Result<AutoCert, TlsError> {
    let w = wanted(listener, global, addr);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let now = OffsetDateTime::now_utc();
    let cached = cache
        .remove(&w.dir)
        .filter(|(ca, _)| ca.not_after > now + CA_RENEW);
    let (ca, current) = match cached {
        Some((ca, leaf)) => (ca, leaf),
        None => match load_ca(&w.dir)? {
            Some(ca) => {
                let leaf = load_leaf(&w.dir);
                (ca, leaf)
            }
            None => (make_ca(&w)?, None),
        },
    };
    let verifier = verifier_for(&ca)?;
    let leaf = match current.map(|l| (fit(&l, &ca, &verifier, &w), l)) {
        Some((Fit::Fits, l)) => l,
        Some((Fit::Missing, l)) => {
            let mut names = l.names.clone();
            names.extend(w.names.iter().filter(|n| !l.names.contains(n)).cloned());
            issue(&ca, &verifier, &w, names, "a name was missing")?
        }
        Some((Fit::Unfit(why), _)) => issue(&ca, &verifier, &w, w.names.clone(), &why)?,
        None => issue(&ca, &verifier, &w, w.names.clone(), "")?,
    };
    let ca_path = w.dir.join(CA_CERT);
    let out = AutoCert {
        chain: vec![leaf.der.clone(), ca.der.clone()],
        key: PrivateKeyDer::try_from(leaf.key_der.clone()).map_err(err)?,
        source: if leaf.saved {
            w.dir.join(LEAF_CERT).to_string_lossy().into_owned()
        } else {
            "generated (not saved)".into()
        },
        ca_file: ca.saved.then(|| ca_path.to_string_lossy().into_owned()),
        names: leaf.names.clone(),
    };
    cache.insert(w.dir, (ca, Some(leaf)));
    Ok(out)
}

#[cfg(test)]
pub(super) fn forget(dir: &Path) {
    CACHE.lock().unwrap_or_else(|p| p.into_inner()).remove(dir);
}

pub(super) fn auto_dir(global: Option<&TlsConfig>) -> PathBuf {
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

fn wanted(listener: Option<&TlsConfig>, global: Option<&TlsConfig>, addr: &str) -> Wanted {
    let host = host_name();
    let common_name = global
        .map(|t| t.common_name.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let mut names = Vec::new();
    let mut add = |n: &str| match canonical_name(n) {
        Some(n) if !names.contains(&n) => names.push(n),
        Some(_) => {}
        None => warn!("not a DNS name or IP address, left out of the certificate: {n:?}"),
    };
    for n in ["localhost", "127.0.0.1", "::1"] {
        add(n);
    }
    if let Some(h) = &host {
        add(h);
    }
    if let Some(cn) = &common_name {
        add(cn);
    }
    for t in [global, listener].into_iter().flatten() {
        for n in &t.names {
            add(n);
        }
    }
    if let Some(h) = listener_host(addr) {
        add(h);
    }
    Wanted {
        dir: auto_dir(global),
        names,
        common_name: common_name
            .or(host)
            .unwrap_or_else(|| "localhost".to_string()),
        organization: global
            .map(|t| t.organization.trim())
            .filter(|s| !s.is_empty())
            .unwrap_or("GOST")
            .to_string(),
        validity: global
            .and_then(|t| crate::config::parse_duration(&t.validity))
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_VALIDITY),
    }
}

/// The host of a listen address (`host:port`, `[v6]:port`, `:port`), unless it is empty
/// or unspecified (`0.0.0.0`, `::`).
fn listener_host(addr: &str) -> Option<&str> {
    let host = match addr.strip_prefix('[') {
        Some(rest) => rest.split(']').next()?,
        None => addr.rsplit_once(':').map_or(addr, |(h, _)| h),
    };
    match host.parse::<IpAddr>() {
        _ if host.is_empty() => None,
        Ok(ip) if ip.is_unspecified() => None,
        _ => Some(host),
    }
}

/// An IP address in its canonical form, or a lower-case DNS name (`*.` allowed).
fn canonical_name(name: &str) -> Option<String> {
    let n = name.trim();
    let bare = n
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(n);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    let n = n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase();
    let check = n.strip_prefix("*.").unwrap_or(&n);
    (check.contains(|c: char| c.is_ascii_alphabetic()) && DnsName::try_from(check).is_ok())
        .then_some(n)
}

/// The machine's host name, best effort (the kernel's, else `/etc/hostname`, else
/// `$HOSTNAME`).
fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && canonical_name(h).is_some())
}

/// The CA saved in `dir`: `None` when there is none or it must be replaced (logged);
/// an error when its files are there but unreadable, so that nothing is overwritten.
fn load_ca(dir: &Path) -> Result<Option<Ca>, TlsError> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    match (cert_path.is_file(), key_path.is_file()) {
        (true, true) => {}
        (false, false) => return Ok(None),
        _ => {
            warn!(dir = %dir.display(), "the self-made CA lacks its certificate or its key: making a new one");
            return Ok(None);
        }
    }
    let c = cert_path.to_string_lossy().into_owned();
    let der = load_certs(&c)?.swap_remove(0);
    let key_pem = std::fs::read_to_string(&key_path).map_err(|e| TlsError::File {
        path: key_path.to_string_lossy().into_owned(),
        reason: e.to_string(),
    })?;
    let (_, x509) = X509Certificate::from_der(&der).map_err(|e| err(format!("{c}: {e}")))?;
    let key_cert_sign = x509
        .key_usage()
        .map_err(|e| err(format!("{c}: {e}")))?
        .map(|k| k.value.key_cert_sign());
    let san = names_of(&x509).map_err(|e| err(format!("{c}: {e}")))?;
    if san.is_some() || !x509.is_ca() || key_cert_sign == Some(false) {
        warn!(
            path = %c,
            "replacing the self-made certificate of an older version (a CA certificate served \
             as the server's own, which clients cannot verify) with a self-made CA and a \
             server certificate it signs; clients that pinned the old fingerprint need the new one"
        );
        return Ok(None);
    }
    // A key in a form this cannot sign with is not ours: refuse rather than overwrite it.
    let key =
        KeyPair::from_pem(&key_pem).map_err(|e| err(format!("{}: {e}", key_path.display())))?;
    let fits = key_der(&key_pem)
        .and_then(|k| CertifiedKey::from_der(vec![der.clone()], k, &provider()).ok())
        .is_some();
    if !fits {
        warn!(path = %c, "the self-made CA's key does not fit it: making a new CA");
        return Ok(None);
    }
    let not_after = x509.validity().not_after.to_datetime();
    if not_after <= OffsetDateTime::now_utc() + CA_RENEW {
        warn!(path = %c, %not_after, "the self-made CA ends soon: making a new one (clients must trust the new one)");
        return Ok(None);
    }
    let ski = x509.iter_extensions().any(|e| {
        matches!(
            e.parsed_extension(),
            ParsedExtension::SubjectKeyIdentifier(_)
        )
    });
    let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| err(format!("{c}: {e}")))?;
    Ok(Some(Ca {
        der,
        issuer,
        ski,
        not_after,
        saved: true,
    }))
}

/// The subjectAltName's DNS names (lower case) and IP addresses; `None` without one.
fn names_of(x509: &X509Certificate<'_>) -> Result<Option<Vec<String>>, String> {
    let Some(san) = x509.subject_alternative_name().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let mut names = Vec::new();
    for n in &san.value.general_names {
        match n {
            GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
            GeneralName::IPAddress(ip) => {
                let ip = <[u8; 4]>::try_from(*ip)
                    .map(IpAddr::from)
                    .or_else(|_| <[u8; 16]>::try_from(*ip).map(IpAddr::from))
                    .map_err(|_| "bad IP address in subjectAltName")?;
                names.push(ip.to_string());
            }
            _ => {}
        }
    }
    Ok(Some(names))
}

fn key_der(pem: &str) -> Option<PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).ok()
}

fn make_ca(w: &Wanted) -> Result<Ca, TlsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let id = fingerprint(key.public_key_raw());
    let host = host_name().unwrap_or_else(|| "localhost".into());
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, w.organization.as_str());
    params.distinguished_name.push(
        DnType::CommonName,
        format!("pht-server self-made CA {} ({host})", &id[7..15]),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + CA_LIFETIME.max(w.validity + CA_RENEW + DAY);
    let cert = params.self_signed(&key).map_err(gen_err)?;
    let key_pem = key.serialize_pem();
    let (cert_path, key_path) = (w.dir.join(CA_CERT), w.dir.join(CA_KEY));
    let saved = match save(
        &w.dir,
        &[
            (&key_path, &key_pem, true),
            (&cert_path, &cert.pem(), false),
        ],
    ) {
        Ok(()) => {
            info!(path = %cert_path.display(), "generated a self-made CA and saved it (clients trust it with caFile=)");
            true
        }
        Err(e) => {
            warn!(dir = %w.dir.display(), "generated a self-made CA but could not save it: {e}");
            false
        }
    };
    Ok(Ca {
        der: cert.der().clone(),
        not_after: params.not_after,
        issuer: Issuer::new(params, key),
        ski: true,
        saved,
    })
}

/// The leaf saved in `dir`, if it reads and parses (whether it fits is checked later).
fn load_leaf(dir: &Path) -> Option<Leaf> {
    let (cert_path, key_path) = (dir.join(LEAF_CERT), dir.join(LEAF_KEY));
    if !cert_path.is_file() || !key_path.is_file() {
        return None;
    }
    let der = load_certs(&cert_path.to_string_lossy())
        .ok()?
        .swap_remove(0);
    let key = pht_runtime::pem::load_key(&key_path.to_string_lossy()).ok()?;
    let (common_name, organization, names, not_after) = {
        let (_, x509) = X509Certificate::from_der(&der).ok()?;
        let text = |a: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>| {
            a.and_then(|a| a.as_str().ok()).map(str::to_string)
        };
        (
            text(x509.subject().iter_common_name().next()),
            text(x509.subject().iter_organization().next()),
            names_of(&x509).ok()?.unwrap_or_default(),
            x509.validity().not_after.to_datetime(),
        )
    };
    Some(Leaf {
        common_name,
        organization,
        names,
        not_after,
        key_der: key.secret_der().to_vec(),
        der,
        saved: true,
    })
}

enum Fit {
    Fits,
    /// Fits but for names it lacks.
    Missing,
    Unfit(String),
}

fn fit(l: &Leaf, ca: &Ca, verifier: &WebPkiServerVerifier, w: &Wanted) -> Fit {
    let now = OffsetDateTime::now_utc();
    let margin = (w.validity / 3).min(CA_RENEW);
    if let Err(e) =
        verify(verifier, &l.der, now).and_then(|()| verify(verifier, &l.der, now + margin))
    {
        return Fit::Unfit(format!(
            "it does not verify with the CA until {}: {e}",
            now + margin
        ));
    }
    let key_fits = PrivateKeyDer::try_from(l.key_der.clone())
        .ok()
        .and_then(|k| CertifiedKey::from_der(vec![l.der.clone()], k, &provider()).ok())
        .is_some();
    if !key_fits {
        return Fit::Unfit("its key does not fit it".into());
    }
    if l.common_name.as_deref() != Some(w.common_name.as_str())
        || l.organization.as_deref() != Some(w.organization.as_str())
    {
        return Fit::Unfit("commonName or organization changed".into());
    }
    if l.not_after > now + w.validity + DAY || l.not_after > ca.not_after {
        return Fit::Unfit("validity was shortened".into());
    }
    if w.names.iter().any(|n| !l.names.contains(n)) {
        return Fit::Missing;
    }
    Fit::Fits
}

fn verifier_for(ca: &Ca) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone())?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| err(format!("self-made CA: {e}")))
}

/// Checks `leaf` as a client would, for `localhost` (always among its names) at `at`.
fn verify(
    v: &WebPkiServerVerifier,
    leaf: &CertificateDer<'_>,
    at: OffsetDateTime,
) -> Result<(), String> {
    let at = UnixTime::since_unix_epoch(Duration::from_secs(at.unix_timestamp().max(0) as u64));
    let name = ServerName::try_from("localhost").expect("a valid name");
    v.verify_server_cert(leaf, &[], &name, &[], at)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn issue(
    ca: &Ca,
    verifier: &WebPkiServerVerifier,
    w: &Wanted,
    names: Vec<String>,
    why: &str,
) -> Result<Leaf, TlsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = CertificateParams::new(names.clone()).map_err(gen_err)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, w.organization.as_str());
    params
        .distinguished_name
        .push(DnType::CommonName, w.common_name.as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = ca.ski;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = (now + w.validity).min(ca.not_after);
    let cert = params.signed_by(&key, &ca.issuer).map_err(gen_err)?;
    verify(verifier, cert.der(), now).map_err(|e| {
        err(format!(
            "the certificate issued by the self-made CA in {} does not verify with it: {e}",
            w.dir.display()
        ))
    })?;
    let (cert_path, key_path) = (w.dir.join(LEAF_CERT), w.dir.join(LEAF_KEY));
    let ca_pem = pem_of(&ca.der);
    let saved = ca.saved
        && match save(
            &w.dir,
            &[
                (&key_path, &key.serialize_pem(), true),
                (&cert_path, &(cert.pem() + &ca_pem), false),
            ],
        ) {
            Ok(()) => true,
            Err(e) => {
                warn!(dir = %w.dir.display(), "issued a server certificate but could not save it: {e}");
                false
            }
        };
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({why})")
    };
    info!(
        path = %if saved { cert_path.display().to_string() } else { "(not saved)".into() },
        names = %names.join(","),
        "issued a server certificate from the self-made CA{why}"
    );
    Ok(Leaf {
        der: cert.der().clone(),
        key_der: key.serialize_der(),
        names,
        common_name: Some(w.common_name.clone()),
        organization: Some(w.organization.clone()),
        not_after: params.not_after,
        saved,
    })
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        s.push('\n');
    }
    s + "-----END CERTIFICATE-----\n"
}

/// Writes each file to a temp name, then renames it into place; `true` marks a private
/// key (mode 0600).
fn save(dir: &Path, files: &[(&Path, &str, bool)]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    for (path, text, private) in files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if *private {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let write = |o: &std::fs::OpenOptions| -> std::io::Result<()> {
            let mut f = o.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        if let Err(e) = write(&o).and_then(|()| std::fs::rename(&tmp, path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_hosts() {
        assert_eq!(listener_host("pht.example:8443"), Some("pht.example"));
        assert_eq!(listener_host("10.1.2.3:8443"), Some("10.1.2.3"));
        assert_eq!(listener_host("[fe80::1]:8443"), Some("fe80::1"));
        assert_eq!(listener_host(":8443"), None);
        assert_eq!(listener_host("0.0.0.0:8443"), None);
        assert_eq!(listener_host("[::]:8443"), None);
        assert_eq!(listener_host(""), None);
    }

    #[test]
    fn names() {
        assert_eq!(canonical_name("Pht.Example."), Some("pht.example".into()));
        assert_eq!(
            canonical_name("*.example.com"),
            Some("*.example.com".into())
        );
        assert_eq!(canonical_name("[::1]"), Some("::1".into()));
        assert_eq!(canonical_name("0:0:0:0:0:0:0:1"), Some("::1".into()));
        assert_eq!(canonical_name("bad name"), None);
        assert_eq!(canonical_name(""), None);
        let global = TlsConfig {
            names: vec!["pht.example".into(), "LOCALHOST".into(), "192.0.2.7".into()],
            ..Default::default()
        };
        let w = wanted(None, Some(&global), "pht.other:8443");
        assert_eq!(&w.names[..3], ["localhost", "127.0.0.1", "::1"]);
        for n in ["pht.example", "192.0.2.7", "pht.other"] {
            assert!(w.names.iter().any(|x| x == n), "{n} in {:?}", w.names);
        }
        assert_eq!(w.names.iter().filter(|n| *n == "localhost").count(), 1);
    }
}
