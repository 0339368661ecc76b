//! Results: the human table on stdout and the JSON document.

use serde_json::{Map, Value, json};

use crate::{Plan, Via, version_name};

/// CPU seconds (user + system) per process over one measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub server: f64,
    pub client: f64,
    pub bench: f64,
    pub target: f64,
    /// Of `server` and `client`: the part spent in the kernel.
    pub server_sys: f64,
    pub client_sys: f64,
}

impl Cpu {
    pub fn plus(&self, o: &Cpu) -> Cpu {
        Cpu {
            server: self.server + o.server,
            client: self.client + o.client,
            bench: self.bench + o.bench,
            target: self.target + o.target,
            server_sys: self.server_sys + o.server_sys,
            client_sys: self.client_sys + o.client_sys,
        }
    }

    pub fn minus(&self, o: &Cpu) -> Cpu {
        Cpu {
            server: self.server - o.server,
            client: self.client - o.client,
            bench: self.bench - o.bench,
            target: self.target - o.target,
            server_sys: self.server_sys - o.server_sys,
            client_sys: self.client_sys - o.client_sys,
        }
    }

    fn json(&self) -> Value {
        json!({
            "server": round(self.server, 3),
            "client": round(self.client, 3),
            "bench": round(self.bench, 3),
            "target": round(self.target, 3),
            "server_sys": round(self.server_sys, 3),
            "client_sys": round(self.client_sys, 3),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    /// Only measured for the tunnel; no ratio.
    Info,
}

#[derive(Debug, Clone)]
pub struct Metric {
    label: &'static str,
    key: &'static str,
    value: f64,
    better: Better,
}

impl Metric {
    pub fn higher(label: &'static str, key: &'static str, value: f64) -> Metric {
        Metric {
            label,
            key,
            value,
            better: Better::Higher,
        }
    }
    pub fn lower(label: &'static str, key: &'static str, value: f64) -> Metric {
        Metric {
            label,
            key,
            value,
            better: Better::Lower,
        }
    }
    pub fn info(label: &'static str, key: &'static str, value: f64) -> Metric {
        Metric {
            label,
            key,
            value,
            better: Better::Info,
        }
    }
}

/// One measurement: direct, through a tunnel, or through the TCP relay.
#[derive(Debug, Clone)]
pub struct Side {
    pub requested: usize,
    pub succeeded: usize,
    pub hash_ok: Option<bool>,
    pub error: Option<String>,
    /// Something worth knowing that is not a failed request (e.g. a slow close).
    pub note: Option<String>,
    pub cpu: Cpu,
    metrics: Vec<Metric>,
    extra: Map<String, Value>,
}

impl Side {
    pub fn new(requested: usize, succeeded: usize, cpu: Cpu) -> Side {
        Side {
            requested,
            succeeded,
            hash_ok: None,
            error: None,
            note: None,
            cpu,
            metrics: Vec::new(),
            extra: Map::new(),
        }
    }

    pub fn metric(&mut self, m: Metric) {
        self.metrics.push(m);
    }

    pub fn extra(&mut self, key: &str, v: Value) {
        self.extra.insert(key.to_string(), v);
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.key == key).map(|m| m.value)
    }

    /// Every request answered, every hash right.
    fn ok(&self) -> bool {
        self.succeeded == self.requested && self.hash_ok != Some(false)
    }

    fn json(&self, tunnel: bool) -> Value {
        let mut o = Map::new();
        o.insert("requested".into(), self.requested.into());
        o.insert("succeeded".into(), self.succeeded.into());
        if let Some(h) = self.hash_ok {
            o.insert("hash_ok".into(), h.into());
        }
        o.insert("ok".into(), self.ok().into());
        o.insert(
            "error".into(),
            self.error.clone().map_or(Value::Null, Value::from),
        );
        o.insert(
            "note".into(),
            self.note.clone().map_or(Value::Null, Value::from),
        );
        let mut m = Map::new();
        for x in &self.metrics {
            m.insert(x.key.into(), round(x.value, 6).into());
        }
        o.insert("metrics".into(), Value::Object(m));
        // Direct runs have no server or client: only this process and the target count.
        // (Through the relay, server and client are its server-side and client-side
        // forwarders.)
        let cpu = if tunnel {
            self.cpu
        } else {
            Cpu {
                server: 0.0,
                client: 0.0,
                server_sys: 0.0,
                client_sys: 0.0,
                ..self.cpu
            }
        };
        o.insert("cpu_s".into(), cpu.json());
        for (k, v) in &self.extra {
            o.insert(k.clone(), v.clone());
        }
        Value::Object(o)
    }
}

/// One scenario: its direct run, and one run per path (PHT version or TCP relay) in
/// `--versions` order.
pub struct Scenario {
    /// `download`, `upload`, `pingpong`, `setup`, `tunnels_N`.
    name: String,
    title: String,
    direct: Side,
    tunnels: Vec<(Via, Side)>,
}

/// The scenario's name in the JSON for one path: the bare name for PHT/2, `_pht1`
/// appended for PHT/1, `_relay` for the TCP relay.
pub fn versioned_name(name: &str, via: Via) -> String {
    match via {
        Via::Pht(2) => name.to_string(),
        other => format!("{name}_{}", other.id()),
    }
}

impl Scenario {
    pub fn new(name: &str, title: &str, direct: Side, tunnels: Vec<(Via, Side)>) -> Scenario {
        Scenario {
            name: name.into(),
            title: title.into(),
            direct,
            tunnels,
        }
    }

    fn tunnel(&self, via: Via) -> Option<&Side> {
        self.tunnels.iter().find(|(v, _)| *v == via).map(|(_, s)| s)
    }

    /// tunnel ÷ direct for a metric both sides have.
    fn ratio(&self, tunnel: &Side, key: &str) -> Option<f64> {
        let d = self.direct.get(key)?;
        let t = tunnel.get(key)?;
        (d > 0.0 && t.is_finite()).then(|| t / d)
    }

    /// CPU seconds of every process: direct (bench + target), and through `tunnel`
    /// (server and its client too).
    fn cpu_total(&self, tunnel: &Side) -> (f64, f64) {
        let (d, t) = (self.direct.cpu, tunnel.cpu);
        (d.bench + d.target, t.server + t.client + t.bench + t.target)
    }

    /// The metrics of the tunnel runs, in order, each once.
    fn metrics(&self) -> Vec<&Metric> {
        let mut out: Vec<&Metric> = Vec::new();
        for (_, t) in &self.tunnels {
            for m in &t.metrics {
                if !out.iter().any(|o| o.key == m.key) {
                    out.push(m);
                }
            }
        }
        out
    }

    fn ok(&self) -> bool {
        self.direct.ok() && self.tunnels.iter().all(|(_, t)| t.ok())
    }
}

/// One process at the end of the run: its peak RSS and the CPU it used.
pub struct ProcStat {
    /// The key in the JSON's `processes`: `server`, `client_pht2`, `client_pht1`,
    /// `relay_server`, `relay_client`, `bench`, `target`.
    pub key: String,
    /// Its name in the table.
    pub label: String,
    /// `VmHWM`.
    pub peak_rss_kib: Option<u64>,
    /// CPU seconds (user + system) over the whole run.
    pub cpu_s: f64,
}

/// One of the project's goals judged on this run.
struct Target {
    what: &'static str,
    version: u8,
    value: String,
    goal: String,
    met: Option<bool>,
}

/// The TCP relay's figure for one of the goals' metrics: not judged, the floor of the
/// four-process shape on this machine.
struct Floor {
    what: &'static str,
    /// The base scenario name (`download`, ...).
    scenario: &'static str,
    /// relay ÷ direct.
    ratio: Option<f64>,
    value: String,
}

/// (what, scenario, metric key, goal text, judge, shown as a percentage): the ratio goals
/// of issue 10, each a ratio of a path's figure to direct.
type Judge = fn(f64) -> bool;
const RATIO_GOALS: [(&str, &str, &str, &str, Judge, bool); 4] = [
    (
        "download MB/s",
        "download",
        "mb_s",
        "≥ 60 % of direct",
        |r| r >= 0.60,
        true,
    ),
    (
        "upload MB/s",
        "upload",
        "mb_s",
        "≥ 60 % of direct",
        |r| r >= 0.60,
        true,
    ),
    (
        "ping-pong median",
        "pingpong",
        "median_us",
        "≤ 3× direct",
        |r| r <= 3.0,
        false,
    ),
    (
        "setup median",
        "setup",
        "median_us",
        "≤ 2× direct",
        |r| r <= 2.0,
        false,
    ),
];

/// A ratio as the goals state it: "45.1 % of direct" or "3.40× direct".
fn ratio_text(r: Option<f64>, percent: bool) -> String {
    match r {
        Some(r) if percent => format!("{:.1} % of direct", r * 100.0),
        Some(r) => format!("{r:.2}× direct"),
        None => "not run".into(),
    }
}

pub struct Report {
    plan: Plan,
    nofile: u64,
    scenarios: Vec<Scenario>,
    procs: Vec<ProcStat>,
    load_start: String,
}

impl Report {
    pub fn new(plan: &Plan, nofile: u64) -> Report {
        Report {
            plan: plan.clone(),
            nofile,
            scenarios: Vec::new(),
            procs: Vec::new(),
            load_start: loadavg(),
        }
    }

    pub fn push(&mut self, s: Scenario) {
        self.scenarios.push(s);
    }

    /// Peak RSS and CPU totals of every process at the end.
    pub fn finish(&mut self, procs: Vec<ProcStat>) {
        self.procs = procs;
    }

    pub fn all_ok(&self) -> bool {
        self.scenarios.iter().all(Scenario::ok)
    }

    fn find(&self, name: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// The project's goals (issue 10), judged on this run for each PHT version.
    fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        for v in self.plan.versions() {
            for (what, name, key, goal, judge, percent) in RATIO_GOALS {
                let r = self
                    .find(name)
                    .and_then(|s| s.ratio(s.tunnel(Via::Pht(v))?, key));
                out.push(Target {
                    what,
                    version: v,
                    value: ratio_text(r, percent),
                    goal: goal.into(),
                    met: r.map(judge),
                });
            }
            let goal =
                "all succeed, server ≤ 64 KiB RSS per open tunnel (HTTP/2, HTTP/3)".to_string();
            let what = "10000 tunnels at once";
            match self
                .find("tunnels_10000")
                .and_then(|s| s.tunnel(Via::Pht(v)))
            {
                Some(t) => {
                    let per = t.get("server_rss_kib_per_tunnel").unwrap_or(f64::INFINITY);
                    let value =
                        format!("{}/{} ok, {:.1} KiB/tunnel", t.succeeded, t.requested, per);
                    let met = t.succeeded == t.requested && per <= 64.0;
                    // Judged where tunnels share connections: HTTP/2 and HTTP/3.
                    let met = (self.plan.http >= 2).then_some(met);
                    let value = if self.plan.http >= 2 {
                        value
                    } else {
                        format!("{value} (HTTP/1.1 run)")
                    };
                    out.push(Target {
                        what,
                        version: v,
                        value,
                        goal,
                        met,
                    });
                }
                None => out.push(Target {
                    what,
                    version: v,
                    value: "not run".into(),
                    goal,
                    met: None,
                }),
            }
        }
        out
    }

    /// The TCP relay's figures for the ratio goals' metrics (empty when the relay was not
    /// measured): what the four-process shape reaches here without HTTP or PHT.
    fn floor(&self) -> Vec<Floor> {
        if !self.plan.relay() {
            return Vec::new();
        }
        RATIO_GOALS
            .iter()
            .map(|&(what, name, key, _, _, percent)| {
                let ratio = self
                    .find(name)
                    .and_then(|s| s.ratio(s.tunnel(Via::Relay)?, key));
                Floor {
                    what,
                    scenario: name,
                    ratio,
                    value: ratio_text(ratio, percent),
                }
            })
            .collect()
    }

    pub fn json(&self) -> Value {
        let p = &self.plan;
        let mut scenarios: Vec<Value> = Vec::new();
        for s in &self.scenarios {
            for (via, t) in &s.tunnels {
                let mut ratio = Map::new();
                for m in &t.metrics {
                    if let Some(r) = s.ratio(t, m.key) {
                        ratio.insert(m.key.into(), round(r, 4).into());
                    }
                }
                let (cd, ct) = s.cpu_total(t);
                if cd > 0.0 {
                    ratio.insert("cpu_s".into(), round(ct / cd, 4).into());
                }
                scenarios.push(json!({
                    "name": versioned_name(&s.name, *via),
                    "scenario": s.name,
                    "path": via.id(),
                    "version": via.version(),
                    "title": s.title,
                    "direct": s.direct.json(false),
                    "tunnel": t.json(true),
                    "ratio": ratio,
                }));
            }
        }
        let procs: Map<String, Value> = self
            .procs
            .iter()
            .map(|pr| {
                (
                    pr.key.clone(),
                    json!({"peak_rss_kib": pr.peak_rss_kib, "cpu_s": round(pr.cpu_s, 3)}),
                )
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|t| {
                json!({"target": t.what, "version": t.version, "value": t.value, "goal": t.goal, "met": t.met})
            })
            .collect();
        let floor: Vec<Value> = self
            .floor()
            .into_iter()
            .map(|f| {
                json!({
                    "metric": f.what,
                    "scenario": f.scenario,
                    "path": Via::Relay.id(),
                    "value": f.value,
                    "ratio": f.ratio.map(|r| round(r, 4)),
                })
            })
            .collect();
        json!({
            "tool": "pht-bench",
            "schema": 3,
            "config": {
                "proto": p.proto,
                "http": p.http,
                "versions": p.versions(),
                "relay": p.relay(),
                "paths": p.paths.iter().map(|v| v.id()).collect::<Vec<_>>(),
                "server_params": p.server_query,
                "client_params": p.client_params,
                "size_bytes": p.size,
                "pingpongs": p.pingpongs,
                "setups": p.setups,
                "rounds": p.rounds,
                "tunnels": p.tunnels,
                "scenarios": p.scenarios,
                "quick": p.quick,
                "open_file_limit": self.nofile,
                "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                "loadavg_start": self.load_start,
                "loadavg_end": loadavg(),
            },
            "scenarios": scenarios,
            "processes": procs,
            "targets": targets,
            "floor": floor,
            "all_ok": self.all_ok(),
        })
    }

    pub fn table(&self) -> String {
        let p = &self.plan;
        let mut out = String::new();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let names: Vec<String> = p.paths.iter().map(|v| v.name()).collect();
        out += &format!(
            "\npht-bench: {} over {}{}, {}, {cores} cores, 127.0.0.1 (load average at start {}, end {})\n",
            p.proto,
            http_name(p.http),
            match (p.proto.as_str(), p.http) {
                ("phts", 2) => " (h2 by ALPN)",
                ("pht", 2) => " (h2c)",
                _ => "",
            },
            names.join(" and "),
            self.load_start,
            loadavg()
        );
        let versions = p.versions();
        if !versions.is_empty() {
            out += &format!(
                "server -L ?{}; clients -F ?{}\n",
                p.server_query,
                versions
                    .iter()
                    .map(|v| format!("v={v}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
                    + &if p.client_params.is_empty() {
                        String::new()
                    } else {
                        format!("&{}", p.client_params)
                    }
            );
        }
        if p.relay() {
            out += "TCP relay: bench → pht-server -L tcp:// → pht-server -L tcp:// → target \
                    (no HTTP, no PHT: the floor of this 4-process shape)\n";
        }
        out += "\n";
        // scenario, metric, direct, then (value, ratio) per version, then ok.
        const W: [usize; 5] = [22, 24, 10, 12, 9];
        let row = |a: &str, b: &str, c: &str, per: &[(String, String)], f: &str| {
            let mut line = format!(
                "{a:<w0$} {b:<w1$} {c:>w2$}",
                w0 = W[0],
                w1 = W[1],
                w2 = W[2]
            );
            for (v, r) in per {
                line += &format!(" {v:>w3$} {r:>w4$}", w3 = W[3], w4 = W[4]);
            }
            format!("{}\n", format!("{line}  {f}").trim_end())
        };
        let head: Vec<(String, String)> = names
            .iter()
            .map(|n| (n.clone(), "÷ direct".to_string()))
            .collect();
        out += &row(
            "scenario",
            "metric",
            "direct",
            &head,
            &format!("ok (direct, {})", names.join(", ")),
        );
        let width = W[0] + W[1] + W[2] + 2 + names.len() * (W[3] + W[4] + 2) + 2 + 26;
        out += &format!("{}\n", "-".repeat(width));
        for s in &self.scenarios {
            let mut first = true;
            let sides: Vec<&Side> = std::iter::once(&s.direct)
                .chain(s.tunnels.iter().map(|(_, t)| t))
                .collect();
            let counts: Vec<String> = sides
                .iter()
                .map(|x| format!("{}/{}", x.succeeded, x.requested))
                .collect();
            let hashes: Vec<&str> = sides
                .iter()
                .filter_map(|x| x.hash_ok)
                .map(|h| if h { "ok" } else { "BAD" })
                .collect();
            let ok = if hashes.is_empty() {
                counts.join(", ")
            } else {
                format!("{}  sha256 {}", counts.join(", "), hashes.join(", "))
            };
            let mut line = |metric: &str, d: String, per: Vec<(String, String)>| {
                let (title, okc) = if first {
                    (s.title.as_str(), ok.as_str())
                } else {
                    ("", "")
                };
                first = false;
                row(title, metric, &d, &per, okc)
            };
            let dash = || "—".to_string();
            for m in s.metrics() {
                let d = s.direct.get(m.key).map(num).unwrap_or_else(dash);
                let per = s
                    .tunnels
                    .iter()
                    .map(|(_, t)| {
                        let v = t.get(m.key).map(num).unwrap_or_else(dash);
                        let r = match (m.better, s.ratio(t, m.key)) {
                            (Better::Higher, Some(r)) => format!("{:.1} %", r * 100.0),
                            (Better::Lower, Some(r)) => format!("{}×", num(r)),
                            _ => dash(),
                        };
                        (v, r)
                    })
                    .collect();
                out += &line(m.label, d, per);
            }
            let cd = s.cpu_total(&s.direct).0;
            let per = s
                .tunnels
                .iter()
                .map(|(_, t)| {
                    let ct = s.cpu_total(t).1;
                    let r = if cd > 0.005 {
                        format!("{}×", num(ct / cd))
                    } else {
                        dash()
                    };
                    (cpu(ct), r)
                })
                .collect();
            out += &line("CPU s, all processes", cpu(cd), per);
            let per = s
                .tunnels
                .iter()
                .map(|(_, t)| {
                    (
                        format!("{} / {}", cpu(t.cpu.server), cpu(t.cpu.client)),
                        dash(),
                    )
                })
                .collect();
            out += &line("CPU s server / client", dash(), per);
            let per = s
                .tunnels
                .iter()
                .map(|(_, t)| {
                    (
                        format!("{} / {}", cpu(t.cpu.server_sys), cpu(t.cpu.client_sys)),
                        dash(),
                    )
                })
                .collect();
            out += &line("  of which kernel", dash(), per);
            let labelled = std::iter::once(("direct".to_string(), &s.direct))
                .chain(s.tunnels.iter().map(|(v, t)| (v.name(), t)));
            for (label, side) in labelled {
                if let Some(e) = &side.error {
                    out += &format!("{:<22} ! {label}: {e}\n", "");
                }
                if let Some(n) = &side.note {
                    out += &format!("{:<22} ! {label}: {n}\n", "");
                }
            }
        }
        if !self.procs.is_empty() {
            out += "\nprocess                peak RSS (VmHWM)   CPU s (whole run)\n";
            for pr in &self.procs {
                let rss = pr
                    .peak_rss_kib
                    .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or("?".into());
                out += &format!("{:<22} {rss:>16}   {:>17}\n", pr.label, cpu(pr.cpu_s));
            }
            out += "(one server serves every version; bench and bench target hold the test data, and one end each of every connection)\n";
            if p.relay() {
                out += "(relay server-side / client-side: the TCP relay's two forwarders; its \"server\" and \"client\" in the CPU rows)\n";
            }
            if p.paths.contains(&Via::Wstunnel) {
                out += "(wstunnel server-side / client-side: `wstunnel server` and `wstunnel client`; the same in the CPU rows)\n";
            }
        }
        let targets = self.targets();
        if !targets.is_empty() {
            out += &format!("\n{:<31} {:<45} goal\n", "target", "this run");
        }
        for t in targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "—",
            };
            let what = format!("{}, {}", t.what, version_name(t.version));
            out += &format!("{what:<31} {:<45} {}  [{verdict}]\n", t.value, t.goal);
        }
        // The relay's figures for the same metrics: what any tunnel of this shape can reach.
        let floor = self.floor();
        if floor.is_empty() {
            out += "\nfloor (TCP relay): not measured (add relay to --versions)\n";
        } else {
            out += "\n";
        }
        for f in floor {
            let what = format!("{}, {}", f.what, Via::Relay.name());
            out += &format!(
                "{what:<31} {:<45} the floor of this 4-process shape (not judged)\n",
                f.value
            );
        }
        out += &format!(
            "\nall measurements succeeded: {}\n",
            if self.all_ok() { "yes" } else { "NO" }
        );
        out
    }
}

/// The 1-minute load average: other work on the machine skews every figure.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// A number with four significant digits (no exponent).
pub fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs().log10().floor() as i32;
    let decimals = (3 - mag).clamp(0, 6) as usize;
    format!("{v:.decimals$}")
}

/// CPU seconds: the kernel counts in ticks of 10 ms.
fn cpu(v: f64) -> String {
    format!("{v:.2}")
}

/// "HTTP/1.1" or "HTTP/2".
pub fn http_name(v: u8) -> &'static str {
    match v {
        3 => "HTTP/3",
        2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

pub fn bytes(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}
