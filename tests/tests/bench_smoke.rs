//! The benchmark binary runs end to end in `--quick` mode against the debug builds: it
//! exits 0, and its JSON has every scenario, for PHT/2, for PHT/1 and for the TCP relay
//! (two plain forwarders in series, the floor of the shape), with every request answered
//! and every hash right. No timing is asserted: this checks the benchmark, not the
//! machine.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const SCENARIOS: [&str; 5] = ["download", "upload", "pingpong", "setup", "tunnels_50"];
/// What `--quick` requests per scenario: one 4 MiB transfer each way, 200 round trips,
/// 20 setups, 50 tunnels.
const REQUESTED: [u64; 5] = [1, 1, 200, 20, 50];
/// The paths measured by default: their `path` id, PHT version (none for the relay), and
/// the suffix of a scenario's JSON name for each.
const PATHS: [(&str, Option<u64>, &str); 3] = [
    ("pht2", Some(2), ""),
    ("pht1", Some(1), "_pht1"),
    ("relay", None, "_relay"),
];

/// Runs `pht-bench --quick` with `extra` options, checks its table, returns its JSON.
fn run_quick(name: &str, extra: &[&str]) -> Value {
    let json = std::env::temp_dir().join(format!(
        "pht-bench-smoke-{name}-{}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&json);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pht-bench"))
        .args(["--quick", "--strict", "--json"])
        .arg(&json)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start pht-bench");
    // The benchmark bounds itself; this is a backstop so the test cannot hang.
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pht-bench {name} did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pht-bench {name}: {}\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");
    let text = std::fs::read_to_string(&json).expect("JSON written");
    let _ = std::fs::remove_file(&json);
    check_table(name, &stdout);
    serde_json::from_str(&text).expect("valid JSON")
}

fn check(name: &str, doc: &Value) {
    let scenarios = doc["scenarios"].as_array().expect("scenarios");
    assert_eq!(doc["schema"], 3, "{name}");
    assert_eq!(
        doc["config"]["versions"],
        serde_json::json!([2, 1]),
        "{name}"
    );
    assert_eq!(doc["config"]["relay"], true, "{name}");
    assert_eq!(
        doc["config"]["paths"],
        serde_json::json!(["pht2", "pht1", "relay"]),
        "{name}"
    );
    let server = doc["config"]["server_params"]
        .as_str()
        .expect("server_params");
    assert!(
        ["maxTunnels=0", "maxTunnelsPerClient=0", "tunnelRate=0"]
            .iter()
            .all(|k| server.split('&').any(|p| p == *k)),
        "{name}: server params {server}"
    );
    for (path, version, suffix) in PATHS {
        for (base, requested) in SCENARIOS.into_iter().zip(REQUESTED) {
            let want = format!("{base}{suffix}");
            let s = scenarios
                .iter()
                .find(|s| s["name"] == want.as_str())
                .unwrap_or_else(|| panic!("{name}: scenario {want} missing: {doc:#}"));
            assert_eq!(s["scenario"], base, "{name} {want}");
            assert_eq!(s["path"], path, "{name} {want}");
            assert_eq!(s["version"].as_u64(), version, "{name} {want}");
            if version.is_none() {
                assert!(s["version"].is_null(), "{name} {want}: version");
            }
            for side in ["direct", "tunnel"] {
                let r = &s[side];
                assert_eq!(
                    r["requested"].as_u64(),
                    Some(requested),
                    "{name} {want} {side}: {r:#}"
                );
                assert_eq!(
                    r["succeeded"].as_u64(),
                    Some(requested),
                    "{name} {want} {side}: {r:#}"
                );
                assert_eq!(r["ok"], true, "{name} {want} {side}: {r:#}");
                if base == "download" || base == "upload" {
                    assert_eq!(r["hash_ok"], true, "{name} {want} {side}: hash");
                }
                let metrics = r["metrics"].as_object().expect("metrics");
                assert!(!metrics.is_empty(), "{name} {want} {side}: no metrics");
            }
            assert!(
                s["ratio"].as_object().is_some_and(|r| !r.is_empty()),
                "{name} {want}: no ratios"
            );
        }
    }
    assert_eq!(scenarios.len(), SCENARIOS.len() * PATHS.len(), "{name}");
    assert_eq!(doc["all_ok"], true, "{name}");
    // The relay's tunnels ran through its two forwarders, one TCP connection each: no HTTP.
    let relay = &scenario(doc, "tunnels_50_relay")["tunnel"];
    assert!(
        relay["metrics"].get("http_connections").is_none(),
        "{name}: relay {relay:#}"
    );
    assert!(
        relay["cpu_s"]["server"].as_f64().is_some() && relay["cpu_s"]["client"].as_f64().is_some(),
        "{name}: relay CPU {relay:#}"
    );
    for p in [
        "server",
        "client_pht2",
        "client_pht1",
        "relay_server",
        "relay_client",
    ] {
        assert!(
            doc["processes"][p]["peak_rss_kib"]
                .as_u64()
                .is_some_and(|k| k > 0),
            "{name}: {p} RSS"
        );
    }
    // The goals are judged for each PHT version, not for the relay.
    let targets = doc["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 10, "{name}: targets {targets:#?}");
    for version in [2, 1] {
        assert_eq!(
            targets.iter().filter(|t| t["version"] == version).count(),
            5,
            "{name}: targets for PHT/{version}"
        );
    }
    // The relay's figure for each ratio goal's metric, as the floor of the shape.
    let floor = doc["floor"].as_array().expect("floor");
    let metrics: Vec<&str> = floor
        .iter()
        .filter_map(|f| f["scenario"].as_str())
        .collect();
    assert_eq!(
        metrics,
        ["download", "upload", "pingpong", "setup"],
        "{name}: floor {floor:#?}"
    );
    for f in floor {
        assert_eq!(f["path"], "relay", "{name}: {f:#}");
        assert!(
            f["ratio"].as_f64().is_some_and(|r| r > 0.0),
            "{name}: floor {f:#}"
        );
    }
}

/// The printed table has the relay's column and its floor lines after the verdicts.
fn check_table(name: &str, table: &str) {
    assert!(
        table.contains("PHT/2") && table.contains("PHT/1") && table.contains("TCP relay"),
        "{name}: columns\n{table}"
    );
    let floor = table
        .lines()
        .filter(|l| l.contains(", TCP relay ") && l.contains("the floor of this 4-process shape"))
        .count();
    assert_eq!(floor, 4, "{name}: floor lines\n{table}");
}

/// The scenario named `name` (versioned: `tunnels_50_pht1`).
fn scenario<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["scenarios"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("scenario {name} missing"))
}

#[test]
fn quick_benchmark_over_pht_http1() {
    let doc = run_quick("pht1", &["--proto", "pht", "--http", "1"]);
    check("pht HTTP/1.1", &doc);
    assert_eq!(doc["config"]["rounds"], 1, "--quick runs one round");
    assert_eq!(doc["config"]["proto"], "pht");
    assert_eq!(doc["config"]["http"], 1);
}

#[test]
fn quick_benchmark_over_phts_http2() {
    // In three rounds: the 200 round trips and 20 setups of each path, split up and
    // interleaved with the other paths, still add up (checked in `check`).
    let doc = run_quick(
        "phts2",
        &["--proto", "phts", "--http", "2", "--rounds", "3"],
    );
    check("phts HTTP/2", &doc);
    assert_eq!(doc["config"]["rounds"], 3);
    // HTTP/2 multiplexes the 50 tunnels on few connections, in either PHT version (each
    // client's own connections are counted).
    for name in ["tunnels_50", "tunnels_50_pht1"] {
        let conns = scenario(&doc, name)["tunnel"]["metrics"]["http_connections"]
            .as_f64()
            .unwrap();
        assert!(
            (1.0..=4.0).contains(&conns),
            "HTTP/2 {name}: {conns} connections for 50 tunnels"
        );
    }
}

#[test]
fn quick_benchmark_over_h3() {
    let doc = run_quick("h3", &["--proto", "h3"]);
    check("h3", &doc);
    assert_eq!(doc["config"]["proto"], "h3");
    assert_eq!(doc["config"]["http"], 3);
}
