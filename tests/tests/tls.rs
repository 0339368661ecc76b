//! phts: TLS with the self-made certificate, CA files, pins, mutual TLS, HTTP/2 pooling.

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

    let pin = pht_client::tls::fingerprint(&pki.server_der);
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
    // -L https:// (= http+tls): an HTTPS proxy, as curl speaks to it.
    let hp = free_port();
    let _https = Proc::start_env(
        "pht-server",
        &["-L", &format!("https://127.0.0.1:{hp}")],
        hp,
        &[("HOME", &h)],
    )
    .await;
    let (code, out, err) = curl(&[
        "--proxy-insecure",
        "-x",
        &format!("https://127.0.0.1:{hp}"),
        &url,
    ])
    .await;
    assert_eq!((code, out.as_str()), (0, HELLO), "{err}");
    let _ = std::fs::remove_dir_all(&home);
}
