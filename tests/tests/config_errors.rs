//! A configuration that cannot run is refused when it is loaded, before any service binds:
//! the real binary exits non-zero and names the key path of each problem.

use std::process::{Command, Output};

use pht_e2e::*;

/// Runs `pht-server args` (bounded: a refused configuration exits at once).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(bin("pht-server"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("pht-server {args:?} kept running: the configuration was accepted");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Loads `yaml` with `-C`, expects a refusal whose message holds exactly `expected` (every
/// line of it), and that nothing was bound.
fn refused_yaml(name: &str, yaml: &str, expected: &str) {
    let path = temp_file(&format!("config-error-{name}.yaml"), yaml);
    refused(&["-C", &path], expected);
}

fn refused(args: &[&str], expected: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted: {stderr}");
    assert!(
        stderr.contains(&format!("Error: {expected}\n")),
        "{args:?}: expected\n{expected}\nin\n{stderr}"
    );
    assert!(
        !stderr.contains("listening on"),
        "something bound: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A service that would bind if the configuration were accepted.
fn svc(port: u16, extra: &str) -> String {
    format!("services:\n- name: s0\n  addr: 127.0.0.1:{port}\n{extra}")
}

#[test]
fn dangling_references() {
    let p = free_port();
    refused_yaml(
        "chain",
        &svc(p, "  handler: {type: http, chain: x}\n"),
        "services[0].handler.chain: chain \"x\" is not defined",
    );
    refused_yaml(
        "auther",
        &svc(
            p,
            "  handler: {type: http, authers: [a, nobody]}\nauthers:\n- name: a\n  auths: [{username: u, password: p}]\n",
        ),
        "services[0].handler.authers[1]: auther \"nobody\" is not defined",
    );
    refused_yaml(
        "admission",
        &svc(p, "  admission: gone\n  handler: {type: http}\n"),
        "services[0].admission: admission \"gone\" is not defined",
    );
    refused_yaml(
        "bypass",
        &svc(p, "  bypass: gone\n  handler: {type: socks5}\n"),
        "services[0].bypass: bypass \"gone\" is not defined",
    );
    refused_yaml(
        "hop-bypass",
        &svc(
            p,
            "  handler: {type: http, chain: c}\nchains:\n- name: c\n  hops:\n  - name: h\n    bypass: gone\n    nodes:\n    - {name: n, addr: '127.0.0.1:1'}\n",
        ),
        "chains[0].hops[0].bypass: bypass \"gone\" is not defined",
    );
    refused_yaml(
        "node-bypass",
        &svc(
            p,
            "  handler: {type: forward}\n  forwarder:\n    nodes:\n    - {name: t, addr: '127.0.0.1:1', bypasses: [gone]}\n",
        ),
        "services[0].forwarder.nodes[0].bypasses[0]: bypass \"gone\" is not defined",
    );
}

/// Certificates, CA files and every chain's dialers are loaded while the configuration is
/// built, so a later service's bad file stops the server before an earlier one binds.
#[test]
fn files_are_read_before_anything_binds() {
    let (p, q) = (free_port(), free_port());
    refused_yaml(
        "files",
        &format!(
            "services:\n\
             - {{name: s0, addr: '127.0.0.1:{p}', handler: {{type: http}}}}\n\
             - name: s1\n  addr: 127.0.0.1:{q}\n  handler: {{type: relay, chain: c}}\n\
             \x20 listener:\n    type: phts\n\
             \x20   tls: {{certFile: /nonexistent/cert.pem, keyFile: /nonexistent/key.pem}}\n\
             chains:\n- name: c\n  hops:\n  - name: h\n    nodes:\n\
             \x20   - name: n\n      addr: 127.0.0.1:1\n\
             \x20     dialer: {{type: tls, tls: {{caFile: /nonexistent/ca.pem, secure: true}}}}\n"
        ),
        "chains[0].hops[0].nodes[0].dialer: read /nonexistent/ca.pem: No such file or directory (os error 2)\n\
         services[1].listener: listener TLS: read /nonexistent/cert.pem: No such file or directory (os error 2)",
    );
}

/// gost's PROXY protocol would make every connection look like a bad request here: a
/// configuration that switches it on is refused by name.
#[test]
fn proxy_protocol_is_refused() {
    let p = free_port();
    refused(
        &["-L", &format!("http://127.0.0.1:{p}?proxyProtocol=1")],
        "services[0].metadata.proxyProtocol: the PROXY protocol is not supported: every \
         connection that starts with a PROXY header would be refused as a bad request",
    );
}

/// A forwarder node's own selector keys are read at start, like a chain node's.
#[test]
fn forwarder_node_keys_name_their_path() {
    let p = free_port();
    refused_yaml(
        "forwarder-node",
        &svc(
            p,
            "  handler: {type: forward}\n  forwarder:\n    nodes:\n    - {name: t, addr: '127.0.0.1:1', metadata: {maxFails: lots, weight: heavy}}\n",
        ),
        "services[0].forwarder.nodes[0].metadata.maxFails: \"lots\" is not an integer\n\
         services[0].forwarder.nodes[0].metadata.weight: \"heavy\" is not an integer",
    );
}

#[test]
fn empty_chains_and_hops() {
    let p = free_port();
    refused_yaml(
        "no-hops",
        &svc(
            p,
            "  handler: {type: http, chain: c}\nchains:\n- name: c\n  hops: []\n",
        ),
        "chains[0].hops: chain \"c\" has no hops (a chain needs at least one hop with a node)",
    );
    refused_yaml(
        "no-nodes",
        &svc(
            p,
            "  handler: {type: http, chain: c}\nchains:\n- name: c\n  hops:\n  - name: h\n    nodes: []\n",
        ),
        "chains[0].hops[0].nodes: hop \"h\" has no nodes, and no top-level hops[] entry has its name",
    );
}

#[test]
fn unknown_types() {
    let p = free_port();
    refused_yaml(
        "handler",
        &svc(p, "  handler: {type: sshd}\n"),
        "services[0].handler.type: handler type \"sshd\" is not supported (supported: auto, http, socks5, socks, socks4, socks4a, relay, forward, tcp, file, metrics, echo)",
    );
    refused_yaml(
        "listener",
        &svc(p, "  listener: {type: quic}\n"),
        "services[0].listener.type: listener type \"quic\" is not supported (supported: tcp, tls, pht, phts, h3)",
    );
    refused_yaml(
        "connector-dialer",
        &svc(
            p,
            "  handler: {type: http, chain: c}\nchains:\n- name: c\n  hops:\n  - name: h\n    nodes:\n    - {name: n, addr: '127.0.0.1:1', connector: {type: ss}, dialer: {type: kcp}}\n",
        ),
        "chains[0].hops[0].nodes[0].connector.type: connector type \"ss\" is not supported (supported: http, socks5, socks, relay, forward, tcp)\n\
         chains[0].hops[0].nodes[0].dialer.type: dialer type \"kcp\" is not supported (supported: tcp, tls, pht, phts, h3, http3)",
    );
    // gost's command line makes `ws` a listener this server does not have.
    refused(
        &["-L", &format!("ws://127.0.0.1:{p}")],
        "services[0].listener.type: listener type \"ws\" is not supported (supported: tcp, tls, pht, phts, h3)",
    );
}

#[test]
fn durations_and_sizes_are_bounded() {
    let p = free_port();
    refused_yaml(
        "heartbeat",
        &svc(
            p,
            "  listener:\n    type: pht\n    metadata:\n      heartbeat: 99999999999999999999h\n",
        ),
        "services[0].listener.metadata.heartbeat: \"99999999999999999999h\" is not a duration up to 8760h (e.g. 10s, 1m30s, 500ms)",
    );
    refused_yaml(
        "idle",
        &svc(
            p,
            "  listener:\n    type: pht\n    metadata:\n      idleTimeout: 8761h\n",
        ),
        "services[0].listener.metadata.idleTimeout: \"8761h\" is not a duration up to 8760h (e.g. 10s, 1m30s, 500ms)",
    );
    refused(
        &[
            "-L",
            &format!("pht://127.0.0.1:{p}?backlog=18446744073709551615"),
        ],
        "services[0].listener.metadata.backlog: \"18446744073709551615\" is not a number or size up to 1GiB (1073741824; e.g. 128, 1048576, 512KiB, 4MiB)",
    );
    refused(
        &[
            "-L",
            &format!("http://127.0.0.1:{p}?readTimeout=10000000000000s"),
        ],
        "services[0].handler.metadata.readTimeout: \"10000000000000s\" is not a duration up to 8760h (e.g. 10s, 1m30s, 500ms)",
    );
    refused(
        &["-L", &format!("pht://127.0.0.1:{p}?drainTimeout=forever")],
        "services[0].metadata.drainTimeout: \"forever\" is not a duration up to 8760h (e.g. 10s, 1m30s, 500ms)",
    );
    refused(
        &["-L", &format!("pht://127.0.0.1:{p}?instance=s1.eu")],
        "services[0].listener.metadata.instance: \"s1.eu\" is not a name of up to 32 letters, digits, '-' or '_'",
    );
    refused_yaml(
        "fail-timeout",
        &svc(
            p,
            "  handler: {type: forward}\n  forwarder:\n    selector: {strategy: fifo, failTimeout: 1000000h}\n    nodes:\n    - {name: t, addr: '127.0.0.1:1'}\n",
        ),
        "services[0].forwarder.selector.failTimeout: \"1000000h\" is not a duration up to 8760h (e.g. 10s, 1m30s, 500ms)",
    );
    refused_yaml(
        "validity",
        &format!("{}tls: {{validity: 1000000000h}}\n", svc(p, "")),
        "tls.validity: \"1000000000h\" is not a duration up to 876000h (100 years; e.g. 8760h)",
    );
}

#[test]
fn bad_list_entries() {
    let p = free_port();
    refused_yaml(
        "matcher",
        &format!(
            "{}bypasses:\n- name: b\n  matchers: [10.0.0.0/8, 'example.com:99999']\n",
            svc(p, "  bypass: b\n")
        ),
        "bypasses[0].matchers[1]: \"example.com:99999\" is not an IP address, CIDR, IP range (a-b), domain (example.com, .example.com, *.example.com) or one of those with :PORT or :LOW-HIGH",
    );
    // `~` marks the whole list, once, in front: in the middle it is a mistake.
    refused(
        &[
            "-L",
            &format!("http://127.0.0.1:{p}?admission=127.0.0.1,~10.0.0.0/8"),
        ],
        "admissions[0].matchers[1]: \"~10.0.0.0/8\" is not an IP address, CIDR or IP range (a-b) (a leading ~ makes the whole list a whitelist: write it once, before the first entry)",
    );
    refused_yaml(
        "list-file",
        &format!(
            "{}admissions:\n- name: a\n  file: {{path: /nonexistent/list.txt}}\n",
            svc(p, "  admission: a\n")
        ),
        "admissions[0].file.path: read /nonexistent/list.txt: No such file or directory (os error 2)",
    );
}

/// Several problems are reported together, and the first service — fine on its own — was
/// not bound while the second was found wanting.
#[test]
fn every_problem_at_once_and_nothing_bound() {
    let (p0, p1) = (free_port(), free_port());
    let yaml = format!(
        "services:\n- name: good\n  addr: 127.0.0.1:{p0}\n  handler: {{type: http}}\n\
         - name: bad\n  addr: 127.0.0.1:{p1}\n  handler: {{type: http, chain: nope}}\n  bypass: none\n"
    );
    refused_yaml(
        "several",
        &yaml,
        "services[1].handler.chain: chain \"nope\" is not defined\n\
         services[1].bypass: bypass \"none\" is not defined",
    );
    // The good service's port is still free.
    std::net::TcpListener::bind(("127.0.0.1", p0)).expect("nothing was bound");
}
