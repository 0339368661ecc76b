//! Results: the human table on stdout and the JSON document.

use serde_json::{Map, Value, json};

use crate::Plan;

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

/// One measurement: direct or through the tunnel.
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

pub struct Scenario {
    name: String,
    title: String,
    direct: Side,
    tunnel: Side,
}

impl Scenario {
    pub fn new(name: &str, title: &str, direct: Side, tunnel: Side) -> Scenario {
        Scenario {
            name: name.into(),
            title: title.into(),
            direct,
            tunnel,
        }
    }

    /// tunnel ÷ direct for a metric both sides have.
    fn ratio(&self, key: &str) -> Option<f64> {
        let d = self.direct.get(key)?;
        let t = self.tunnel.get(key)?;
        (d > 0.0 && t.is_finite()).then(|| t / d)
    }

    fn cpu_total(&self) -> (f64, f64) {
        let (d, t) = (self.direct.cpu, self.tunnel.cpu);
        (d.bench + d.target, t.server + t.client + t.bench + t.target)
    }
}

struct Proc {
    peak_rss_kib: Option<u64>,
    cpu_s: f64,
}

pub struct Report {
    plan: Plan,
    nofile: u64,
    scenarios: Vec<Scenario>,
    procs: Option<[Proc; 4]>,
    load_start: String,
}

impl Report {
    pub fn new(plan: &Plan, nofile: u64) -> Report {
        Report {
            plan: plan.clone(),
            nofile,
            scenarios: Vec::new(),
            procs: None,
            load_start: loadavg(),
        }
    }

    pub fn push(&mut self, s: Scenario) {
        self.scenarios.push(s);
    }

    /// Peak RSS (VmHWM, KiB) of server, client, this process and the target at the end,
    /// and their CPU totals.
    pub fn finish(&mut self, hwm: [Option<u64>; 4], cpu: Cpu) {
        let cpus = [cpu.server, cpu.client, cpu.bench, cpu.target];
        self.procs = Some(std::array::from_fn(|i| Proc {
            peak_rss_kib: hwm[i],
            cpu_s: cpus[i],
        }));
    }

    pub fn all_ok(&self) -> bool {
        self.scenarios
            .iter()
            .all(|s| s.direct.ok() && s.tunnel.ok())
    }

    fn find(&self, name: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// The project's goals (issue 6), judged on this run: (what, value, goal, met).
    fn targets(&self) -> Vec<(String, String, String, Option<bool>)> {
        let mut out = Vec::new();
        let pct = |r: f64| format!("{:.1} % of direct", r * 100.0);
        let times = |r: f64| format!("{r:.2}× direct");
        match self.find("download").and_then(|s| s.ratio("mb_s")) {
            Some(r) => out.push((
                "download MB/s".into(),
                pct(r),
                "≥ 35 % of direct".into(),
                Some(r >= 0.35),
            )),
            None => out.push((
                "download MB/s".into(),
                "not run".into(),
                "≥ 35 % of direct".into(),
                None,
            )),
        }
        match self.find("upload").and_then(|s| s.ratio("mb_s")) {
            Some(r) => out.push((
                "upload MB/s".into(),
                pct(r),
                "≥ 25 % of direct".into(),
                Some(r >= 0.25),
            )),
            None => out.push((
                "upload MB/s".into(),
                "not run".into(),
                "≥ 25 % of direct".into(),
                None,
            )),
        }
        match self.find("pingpong").and_then(|s| s.ratio("median_us")) {
            Some(r) => out.push((
                "ping-pong median".into(),
                times(r),
                "≤ 5× direct".into(),
                Some(r <= 5.0),
            )),
            None => out.push((
                "ping-pong median".into(),
                "not run".into(),
                "≤ 5× direct".into(),
                None,
            )),
        }
        match self.find("setup").and_then(|s| s.ratio("median_us")) {
            Some(r) => out.push((
                "setup median".into(),
                times(r),
                "≤ 2× direct".into(),
                Some(r <= 2.0),
            )),
            None => out.push((
                "setup median".into(),
                "not run".into(),
                "≤ 2× direct".into(),
                None,
            )),
        }
        let goal = "all succeed, server ≤ 64 KiB RSS per open tunnel (HTTP/2)".to_string();
        match self.find("tunnels_10000") {
            Some(s) => {
                let per = s
                    .tunnel
                    .get("server_rss_kib_per_tunnel")
                    .unwrap_or(f64::INFINITY);
                let value = format!(
                    "{}/{} ok, {:.1} KiB/tunnel",
                    s.tunnel.succeeded, s.tunnel.requested, per
                );
                let met = s.tunnel.succeeded == s.tunnel.requested && per <= 64.0;
                let met = (self.plan.http == 2).then_some(met);
                let value = if self.plan.http == 2 {
                    value
                } else {
                    format!("{value} (HTTP/1.1 run)")
                };
                out.push(("10000 tunnels at once".into(), value, goal, met));
            }
            None => out.push(("10000 tunnels at once".into(), "not run".into(), goal, None)),
        }
        out
    }

    pub fn json(&self) -> Value {
        let p = &self.plan;
        let scenarios: Vec<Value> = self
            .scenarios
            .iter()
            .map(|s| {
                let mut ratio = Map::new();
                for m in &s.tunnel.metrics {
                    if let Some(r) = s.ratio(m.key) {
                        ratio.insert(m.key.into(), round(r, 4).into());
                    }
                }
                let (cd, ct) = s.cpu_total();
                if cd > 0.0 {
                    ratio.insert("cpu_s".into(), round(ct / cd, 4).into());
                }
                json!({
                    "name": s.name,
                    "title": s.title,
                    "direct": s.direct.json(false),
                    "tunnel": s.tunnel.json(true),
                    "ratio": ratio,
                })
            })
            .collect();
        let procs = self.procs.as_ref().map(|[s, c, b, t]| {
            let one =
                |p: &Proc| json!({"peak_rss_kib": p.peak_rss_kib, "cpu_s": round(p.cpu_s, 3)});
            json!({"server": one(s), "client": one(c), "bench": one(b), "target": one(t)})
        });
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|(what, value, goal, met)| json!({"target": what, "value": value, "goal": goal, "met": met}))
            .collect();
        json!({
            "tool": "pht-bench",
            "schema": 1,
            "config": {
                "proto": p.proto,
                "http": p.http,
                "size_bytes": p.size,
                "pingpongs": p.pingpongs,
                "setups": p.setups,
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
            "all_ok": self.all_ok(),
        })
    }

    pub fn table(&self) -> String {
        let p = &self.plan;
        let mut out = String::new();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        out += &format!(
            "\npht-bench: {} over {}{}, {cores} cores, 127.0.0.1 (load average at start {}, end {})\n\n",
            p.proto,
            http_name(p.http),
            match (p.proto.as_str(), p.http) {
                ("phts", 2) => " (h2 by ALPN)",
                ("pht", 2) => " (h2c)",
                _ => "",
            },
            self.load_start,
            loadavg()
        );
        let row = |a: &str, b: &str, c: &str, d: &str, e: &str, f: &str| {
            format!("{a:<22} {b:<25} {c:>10} {d:>13} {e:>14}  {f}\n")
        };
        out += &row(
            "scenario",
            "metric",
            "direct",
            "tunnel",
            "tunnel/direct",
            "ok (direct, tunnel)",
        );
        out += &format!("{}\n", "-".repeat(22 + 25 + 10 + 13 + 14 + 28));
        for s in &self.scenarios {
            let mut first = true;
            let ok = format!(
                "{}/{}, {}/{}{}",
                s.direct.succeeded,
                s.direct.requested,
                s.tunnel.succeeded,
                s.tunnel.requested,
                match (s.direct.hash_ok, s.tunnel.hash_ok) {
                    (Some(a), Some(b)) => format!(
                        "  sha256 {}, {}",
                        if a { "ok" } else { "BAD" },
                        if b { "ok" } else { "BAD" }
                    ),
                    _ => String::new(),
                }
            );
            let mut line = |metric: &str, d: String, t: String, r: String| {
                let (title, okc) = if first {
                    (s.title.as_str(), ok.as_str())
                } else {
                    ("", "")
                };
                first = false;
                row(title, metric, &d, &t, &r, okc)
            };
            for m in &s.tunnel.metrics {
                let d = s.direct.get(m.key).map(num).unwrap_or_else(|| "—".into());
                let r = match (m.better, s.ratio(m.key)) {
                    (Better::Higher, Some(r)) => format!("{:.1} %", r * 100.0),
                    (Better::Lower, Some(r)) => format!("{}×", num(r)),
                    _ => "—".into(),
                };
                out += &line(m.label, d, num(m.value), r);
            }
            let (cd, ct) = s.cpu_total();
            let r = if cd > 0.005 {
                format!("{}×", num(ct / cd))
            } else {
                "—".into()
            };
            out += &line("CPU s, all processes", cpu(cd), cpu(ct), r);
            out += &line(
                "CPU s server / client",
                "—".into(),
                format!(
                    "{} / {}",
                    cpu(s.tunnel.cpu.server),
                    cpu(s.tunnel.cpu.client)
                ),
                "—".into(),
            );
            out += &line(
                "  of which kernel",
                "—".into(),
                format!(
                    "{} / {}",
                    cpu(s.tunnel.cpu.server_sys),
                    cpu(s.tunnel.cpu.client_sys)
                ),
                "—".into(),
            );
            for (label, side) in [("direct", &s.direct), ("tunnel", &s.tunnel)] {
                if let Some(e) = &side.error {
                    out += &format!("{:<22} ! {label}: {e}\n", "");
                }
                if let Some(n) = &side.note {
                    out += &format!("{:<22} ! {label}: {n}\n", "");
                }
            }
        }
        if let Some([sv, cl, be, tg]) = &self.procs {
            out += "\nprocess        peak RSS (VmHWM)   CPU s (whole run)\n";
            let all = [
                ("pht-server", sv),
                ("pht-client", cl),
                ("bench", be),
                ("bench target", tg),
            ];
            for (name, pr) in all {
                let rss = pr
                    .peak_rss_kib
                    .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or("?".into());
                out += &format!("{name:<14} {rss:>16}   {:>17}\n", cpu(pr.cpu_s));
            }
            out += "(bench and bench target hold the test data, and one end each of every connection)\n";
        }
        out += &format!("\n{:<24} {:<45} goal\n", "target", "this run");
        for (what, value, goal, met) in self.targets() {
            let verdict = match met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "—",
            };
            out += &format!("{what:<24} {value:<45} {goal}  [{verdict}]\n");
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
    if v == 2 { "HTTP/2" } else { "HTTP/1.1" }
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
