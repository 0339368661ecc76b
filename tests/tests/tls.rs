//! phts: TLS with the self-made certificate (a CA and a leaf it signs), CA files, pins,
//! mutual TLS, HTTP/2 pooling.

use std::path::PathBuf;
use std::time::Duration;

use pht_core::NodeUrl;
use pht_e2e::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A throwaway PKI in a temp dir: a CA, a server certificate for 127.0.0.1/localhost, a
/// client certificate, and an unrelated CA.
struct Pki {
    dir: PathBuf,
    server_der: Vec<u8>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("pht-e2e-pki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = |cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            let cert = p.self_signed(&key).unwrap();
            (cert, Issuer::new(p, key))
        };
        let (ca_cert, issuer) = ca("pht test CA");
        let (other_cert, _) = ca("some other CA");
        let leaf = |names: Vec<String>, file: &str| {
            let key = KeyPair::generate().unwrap();
            let p = CertificateParams::new(names).unwrap();
            let cert = p.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{file}-key.pem")), key.serialize_pem()).unwrap();
            cert.der().to_vec()
        };
        let server_der = leaf(vec!["localhost".into(), "127.0.0.1".into()], "server");
        leaf(vec!["client.test".into()], "client");
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("other-ca.pem"), other_cert.pem()).unwrap();
        Pki { dir, server_der }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).to_string_lossy().into_owned()
    }

    fn server_args(&self) -> String {
        format!(
            "certFile={}&keyFile={}",
            self.path("server.pem"),
            self.path("server-key.pem")
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn try_tunnel(node: &str) -> Result<(), String> {
    let node = NodeUrl::parse(node).map_err(|e| e.to_string())?;
    let mut s = pht_client::connect(&node)
        .await
        .map_err(|e| e.to_string())?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"tls!").await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    assert_eq!(&b, b"tls!");
    Ok(())
}

/// A private `$HOME` for a server (the self-made CA goes to `$HOME/.gost`), removed when
/// dropped.
struct Home(PathBuf);

impl Home {
    fn new(name: &str) -> Home {
        let dir = std::env::temp_dir().join(format!("pht-e2e-home-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Home(dir)
    }

    fn env(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    /// The saved CA: what clients pass as `caFile=` / `--cacert`.
    fn ca(&self) -> String {
        self.0
            .join(".gost/auto-ca-cert.pem")
            .to_string_lossy()
            .into_owned()
    }

    async fn server(&self, args: &[&str], port: u16) -> Proc {
        Proc::start_env("pht-server", args, port, &[("HOME", &self.env())]).await
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `pin=` value a server logged.
fn logged_fingerprint(log: &str) -> String {
    let at = log.find("fingerprint=sha256:").expect("fingerprint logged") + "fingerprint=".len();
    log[at..at + 7 + 64].to_string()
}

/// `curl <args> <url>`: exit code, then the body followed by " <status>".
async fn curl_status(args: &[&str], url: &str) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-w", " %{http_code}", url]);
    curl(&all).await
}

/// Moves bytes through a `pht-client` forwarding to `node` (an echo target behind it), and
/// checks that the client did not warn about an unverified server.
async fn tunnel_with_pht_client(node: &str) {
    let (cli, local) = client(node).await;
    echo_roundtrip(local, &random_bytes(256 * 1024, 5)).await;
    let log = cli.log_text();
    assert!(!log.contains("secure=true and caFile"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phts_with_self_made_certificate_and_a_client_without_tls_settings() {
    let home = std::env::temp_dir().join(format!("pht-e2e-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let target = bulk_target().await;
    let sp = free_port();
    let h = home.to_string_lossy().into_owned();
    let srv = Proc::start_env(
        "pht-server",
        &["-L", &format!("forward+phts://127.0.0.1:{sp}/{target}?authorizePath=/authorize&pushPath=/push&pullPath=/pull")],
        sp,
        &[("HOME", &h)],
    )
    .await;
    assert!(
        home.join(".gost/auto-ca-cert.pem").is_file(),
        "certificate saved under $HOME/.gost"
    );
    let log = srv.log_text();
    assert!(
        log.contains("fingerprint=sha256:"),
        "fingerprint logged: {log}"
    );
    let (_cli, local) = client(&format!("forward+phts://127.0.0.1:{sp}")).await;
    let data = random_bytes(8 * 1024 * 1024, 11);
    let (digest, _) = upload(local, &data).await;
    assert_eq!(digest, sha256(&data));
    let (digest, _) = download(local, 8 * 1024 * 1024, 12).await;
    assert_eq!(digest, sha256(&random_bytes(8 * 1024 * 1024, 12)));
    drop(srv);
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_with_ca_files_and_pins() {
    let pki = Pki::new("verify");
    let target = echo_target().await;
    let sp = free_port();
    let _srv = server(
        &[
            "-L",
            &format!(
                "forward+phts://127.0.0.1:{sp}/{target}?{}",
                pki.server_args()
            ),
        ],
        sp,
    )
    .await;
    let base = format!("forward+phts://127.0.0.1:{sp}");

    try_tunnel(&format!("{base}?secure=true&caFile={}", pki.path("ca.pem")))
        .await
        .unwrap();
    try_tunnel(&format!(
        "{base}?secure=true&caFile={}&serverName=localhost",
        pki.path("ca.pem")
    ))
    .await
    .unwrap();

    let e = try_tunnel(&format!(
        "{base}?secure=true&caFile={}",
        pki.path("other-ca.pem")
    ))
    .await
    .unwrap_err();
    assert!(e.contains("invalid peer certificate: UnknownIssuer"), "{e}");
    let e = try_tunnel(&format!(
        "{base}?secure=true&caFile={}&serverName=wrong.example",
        pki.path("ca.pem")
    ))
    .await
    .unwrap_err();
    assert!(
        e.contains("invalid peer certificate: certificate not valid for name"),
        "{e}"
    );
    // caFile without secure checks the chain only (gost's rule).
    try_tunnel(&format!(
        "{base}?caFile={}&serverName=wrong.example",
        pki.path("ca.pem")
    ))
    .await
    .unwrap();

    let pin = pht_runtime::pem::fingerprint(&pki.server_der);
    try_tunnel(&format!("{base}?pin={pin}")).await.unwrap();
    let wrong = format!("sha256:{}", "00".repeat(32));
    let e = try_tunnel(&format!("{base}?pin={wrong}"))
        .await
        .unwrap_err();
    assert!(
        e.contains(&format!("certificate pin mismatch: server presented {pin}")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate() {
    let pki = Pki::new("mtls");
    let target = echo_target().await;
    let sp = free_port();
    let _srv = server(
        &[
            "-L",
            &format!(
                "forward+phts://127.0.0.1:{sp}/{target}?{}&caFile={}",
                pki.server_args(),
                pki.path("ca.pem")
            ),
        ],
        sp,
    )
    .await;
    let base = format!("forward+phts://127.0.0.1:{sp}");
    let e = try_tunnel(&base).await.unwrap_err();
    assert!(e.contains("authorize request failed"), "{e}");
    try_tunnel(&format!(
        "{base}?certFile={}&keyFile={}",
        pki.path("client.pem"),
        pki.path("client-key.pem")
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_a_tls_port_and_unreadable_certificate() {
    let pki = Pki::new("bad");
    let target = echo_target().await;
    let sp = free_port();
    let _srv = server(
        &[
            "-L",
            &format!(
                "forward+phts://127.0.0.1:{sp}/{target}?{}",
                pki.server_args()
            ),
        ],
        sp,
    )
    .await;
    // Plain HTTP and random bytes: those connections fail...
    let mut plain = pht_e2e::raw::RawConn::connect(sp).await;
    plain.go_get("/authorize").await;
    assert!(plain.head().await.is_none_or(|h| h.status == 400));
    let mut junk = pht_e2e::raw::RawConn::connect(sp).await;
    junk.write_raw(&random_bytes(4096, 1)).await;
    assert!(junk.closed().await);
    // ...and TLS clients go on.
    try_tunnel(&format!("forward+phts://127.0.0.1:{sp}"))
        .await
        .unwrap();

    let out = std::process::Command::new(bin("pht-server"))
        .args(["-L", "forward+phts://127.0.0.1:1/127.0.0.1:2?certFile=/nonexistent/c.pem&keyFile=/nonexistent/k.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("read /nonexistent/c.pem: No such file or directory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_tunnels_over_http2_share_few_connections() {
    let pki = Pki::new("h2");
    let target = echo_target().await;
    let sp = free_port();
    let srv = server(
        &[
            "-D",
            "-L",
            &format!(
                "forward+phts://127.0.0.1:{sp}/{target}?{}",
                pki.server_args()
            ),
        ],
        sp,
    )
    .await;
    let (_cli, local) = client(&format!("forward+phts://127.0.0.1:{sp}")).await;
    let mut tasks = Vec::new();
    for i in 0..1000u64 {
        tasks.push(tokio::spawn(async move {
            let data = random_bytes(16 * 1024, i);
            echo_roundtrip(local, &data).await;
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(180), t)
            .await
            .expect("a tunnel stalled")
            .unwrap();
    }
    let conns = srv.log_text().matches("pht connection accepted").count();
    assert!(
        (1..=4).contains(&conns),
        "{conns} TCP connections for 1000 tunnels"
    );
    println!("1000 tunnels over HTTP/2 used {conns} TCP connection(s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_phts_cli_and_yaml_with_a_gost_shaped_client() {
    let home = std::env::temp_dir().join(format!("pht-e2e-home-seed-{}", std::process::id()));
    let h = home.to_string_lossy().into_owned();
    let origin = http_target().await;
    let url = format!("http://{origin}/");

    // gost -L "http+phts://:8443?authorizePath=/authorize&pushPath=/push&pullPath=/pull"
    let sp = free_port();
    let _srv = Proc::start_env(
        "pht-server",
        &[
            "-L",
            &format!("http+phts://:{sp}?authorizePath=/authorize&pushPath=/push&pullPath=/pull"),
        ],
        sp,
        &[("HOME", &h)],
    )
    .await;
    // The client: a local http service whose chain node dials phts with no tls block.
    let cp = free_port();
    let yaml = format!(
        "services:\n- name: client\n  addr: 127.0.0.1:{cp}\n  handler: {{type: http, chain: chain-0}}\n  listener: {{type: tcp}}\n\
         chains:\n- name: chain-0\n  hops:\n  - name: hop-0\n    nodes:\n    - name: node-0\n      addr: 127.0.0.1:{sp}\n      connector: {{type: http}}\n      dialer: {{type: phts}}\n"
    );
    let _cli = server(&["-C", &temp_file("phts-client.yaml", &yaml)], cp).await;
    let (code, out, err) = curl(&["-x", &format!("http://127.0.0.1:{cp}"), &url]).await;
    assert_eq!((code, out.as_str()), (0, HELLO), "{err}");

    // The seed's YAML form, with the certificate saved by the first server.
    let sp = free_port();
    let yaml = format!(
        "services:\n- name: service-0\n  addr: \":{sp}\"\n  handler:\n    type: http\n  listener:\n    type: phts\n    metadata:\n      authorizePath: /authorize\n      pushPath: /push\n      pullPath: /pull\n"
    );
    let _srv2 = Proc::start_env(
        "pht-server",
        &["-C", &temp_file("phts-server.yaml", &yaml)],
        sp,
        &[("HOME", &h)],
    )
    .await;
    let cp = free_port();
    let _cli2 = server(
        &[
            "-L",
            &format!("http://127.0.0.1:{cp}"),
            "-F",
            &format!("http+phts://127.0.0.1:{sp}"),
        ],
        cp,
    )
    .await;
    let (code, out, err) = curl(&["-p", "-x", &format!("http://127.0.0.1:{cp}"), &url]).await;
    assert_eq!((code, out.as_str()), (0, HELLO), "{err}");
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_and_dialer() {
    let home = std::env::temp_dir().join(format!("pht-e2e-home-tls-{}", std::process::id()));
    let h = home.to_string_lossy().into_owned();
    let origin = http_target().await;
    let url = format!("http://{origin}/");
    // -L relay+tls://, reached by a chain node with the tls dialer (gost: -F relay+tls://).
    let sp = free_port();
    let _srv = Proc::start_env(
        "pht-server",
        &["-L", &format!("relay+tls://127.0.0.1:{sp}")],
        sp,
        &[("HOME", &h)],
    )
    .await;
    let cp = free_port();
    let _cli = server(
        &[
            "-L",
            &format!("http://127.0.0.1:{cp}"),
            "-F",
            &format!("relay+tls://127.0.0.1:{sp}"),
        ],
        cp,
    )
    .await;
    let (code, out, err) = curl(&["-x", &format!("http://127.0.0.1:{cp}"), &url]).await;
    assert_eq!((code, out.as_str()), (0, HELLO), "{err}");
    // The same through a dialer that verifies the server with the saved CA.
    let cp2 = free_port();
    let ca = home.join(".gost/auto-ca-cert.pem");
    let _cli2 = server(
        &[
            "-L",
            &format!("http://127.0.0.1:{cp2}"),
            "-F",
            &format!(
                "relay+tls://127.0.0.1:{sp}?secure=true&caFile={}",
                ca.display()
            ),
        ],
        cp2,
    )
    .await;
    let (code, out, err) = curl(&["-x", &format!("http://127.0.0.1:{cp2}"), &url]).await;
    assert_eq!((code, out.as_str()), (0, HELLO), "{err}");
    // -L https:// (= http+tls): an HTTPS proxy, as curl speaks to it (and verifies it).
    let hp = free_port();
    let _https = Proc::start_env(
        "pht-server",
        &["-L", &format!("https://127.0.0.1:{hp}")],
        hp,
        &[("HOME", &h)],
    )
    .await;
    let ca = home.join(".gost/auto-ca-cert.pem");
    let (code, out, err) = curl(&[
        "--proxy-cacert",
        &ca.to_string_lossy(),
        "-x",
        &format!("https://127.0.0.1:{hp}"),
        &url,
    ])
    .await;
    assert_eq!((code, out.as_str()), (0, HELLO), "{err}");
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_made_ca_verifies_with_ca_file_pins_and_curl() {
    let home = Home::new("ca");
    let target = echo_target().await;
    let sp = free_port();
    let srv = home
        .server(
            &["-L", &format!("forward+phts://127.0.0.1:{sp}/{target}")],
            sp,
        )
        .await;
    let ca = home.ca();
    let log = srv.log_text();
    assert!(
        log.contains(&format!("caFile={ca}")),
        "CA path logged: {log}"
    );
    let base = format!("forward+phts://127.0.0.1:{sp}");

    // pht-client with the saved CA, by address and by name.
    tunnel_with_pht_client(&format!("{base}?secure=true&caFile={ca}")).await;
    tunnel_with_pht_client(&format!(
        "{base}?secure=true&caFile={ca}&serverName=localhost"
    ))
    .await;
    try_tunnel(&format!("{base}?secure=true&caFile={ca}&serverName=::1"))
        .await
        .unwrap();
    let e = try_tunnel(&format!(
        "{base}?secure=true&caFile={ca}&serverName=wrong.example"
    ))
    .await
    .unwrap_err();
    assert!(
        e.contains("invalid peer certificate: certificate not valid for name"),
        "{e}"
    );
    // pin= the logged fingerprint (the served leaf's).
    let fp = logged_fingerprint(&log);
    try_tunnel(&format!("{base}?pin={fp}")).await.unwrap();

    // curl checks the chain and the IP address.
    let url = format!("https://127.0.0.1:{sp}/authorize");
    let (code, out, err) = curl_status(&["--cacert", &ca], &url).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("token=") && out.ends_with(" 200"), "{out}");
    let (code, _, err) = curl_status(&[], &url).await;
    assert_eq!(code, 60, "unknown CA without --cacert: {err}");

    // The next start keeps the CA and the leaf: caFile and pin still hold.
    let ca_pem = std::fs::read(&ca).unwrap();
    drop(srv);
    let sp2 = free_port();
    let srv2 = home
        .server(
            &["-L", &format!("forward+phts://127.0.0.1:{sp2}/{target}")],
            sp2,
        )
        .await;
    assert_eq!(logged_fingerprint(&srv2.log_text()), fp);
    assert_eq!(std::fs::read(&ca).unwrap(), ca_pem);
    let base2 = format!("forward+phts://127.0.0.1:{sp2}");
    try_tunnel(&format!("{base2}?secure=true&caFile={ca}"))
        .await
        .unwrap();
    try_tunnel(&format!("{base2}?pin={fp}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_made_certificate_names_from_the_tls_section() {
    let home = Home::new("names");
    let target = echo_target().await;
    let sp = free_port();
    let yaml = format!(
        "tls:\n  names: [pht.test, 192.0.2.10]\n  organization: PHT Test\n\
         services:\n- name: s\n  addr: 127.0.0.1:{sp}\n  handler: {{type: forward}}\n  listener: {{type: phts}}\n  forwarder:\n    nodes:\n    - {{name: t, addr: \"{target}\"}}\n"
    );
    let srv = home
        .server(&["-C", &temp_file("tls-names.yaml", &yaml)], sp)
        .await;
    let log = srv.log_text();
    assert!(log.contains(",pht.test,192.0.2.10"), "names logged: {log}");
    let ca = home.ca();
    tunnel_with_pht_client(&format!(
        "forward+phts://127.0.0.1:{sp}?secure=true&caFile={ca}&serverName=pht.test"
    ))
    .await;
    let (code, out, err) = curl_status(
        &[
            "--cacert",
            &ca,
            "--resolve",
            &format!("pht.test:{sp}:127.0.0.1"),
        ],
        &format!("https://pht.test:{sp}/authorize"),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with(" 200"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_self_made_certificate_is_replaced() {
    let home = Home::new("old");
    let dir = home.0.join(".gost");
    std::fs::create_dir_all(&dir).unwrap();
    // What earlier versions saved: one CA:TRUE certificate for gost.run, served as is.
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["gost.run".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "gost.run");
    p.distinguished_name.push(DnType::OrganizationName, "GOST");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let old = p.self_signed(&key).unwrap();
    std::fs::write(dir.join("auto-ca-cert.pem"), old.pem()).unwrap();
    std::fs::write(dir.join("auto-ca-key.pem"), key.serialize_pem()).unwrap();
    let ca = home.ca();

    // The old certificate cannot be verified (a CA used as the end entity).
    let target = echo_target().await;
    let sp = free_port();
    let srv = home
        .server(
            &["-L", &format!("forward+phts://127.0.0.1:{sp}/{target}")],
            sp,
        )
        .await;
    let log = srv.log_text();
    let notice = "replacing the self-made certificate of an older version";
    assert_eq!(log.matches(notice).count(), 1, "{log}");
    assert_ne!(std::fs::read_to_string(&ca).unwrap(), old.pem());
    assert_ne!(
        logged_fingerprint(&log),
        pht_runtime::pem::fingerprint(old.der())
    );
    tunnel_with_pht_client(&format!(
        "forward+phts://127.0.0.1:{sp}?secure=true&caFile={ca}"
    ))
    .await;
    let (code, out, err) = curl_status(
        &["--cacert", &ca],
        &format!("https://127.0.0.1:{sp}/authorize"),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with(" 200"), "{out}");

    // Replaced once: the next start keeps the new CA quietly.
    drop(srv);
    let sp2 = free_port();
    let srv2 = home
        .server(
            &["-L", &format!("forward+phts://127.0.0.1:{sp2}/{target}")],
            sp2,
        )
        .await;
    assert!(!srv2.log_text().contains(notice));
}
