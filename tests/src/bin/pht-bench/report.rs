//! Results: the human table on stdout and the JSON document.

use serde_json::{Map, Value, json};

use crate::Plan;

/// CPU seconds (user + system) per process over one measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub server: f64,
    pub client: f64,
    pub bench: f64,
}

impl Cpu {
    pub fn minus(&self, o: &Cpu) -> Cpu {
        Cpu {
            server: self.server - o.server,
            client: self.client - o.client,
            bench: self.bench - o.bench,
        }
    }

    fn json(&self) -> Value {
        json!({
            "server": round(self.server, 3),
            "client": round(self.client, 3),
            "bench": round(self.bench, 3),
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

    fn ok(&self) -> bool {
        self.succeeded == self.requested && self.hash_ok != Some(false) && self.error.is_none()
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
        let mut m = Map::new();
        for x in &self.metrics {
            m.insert(x.key.into(), round(x.value, 3).into());
        }
        o.insert("metrics".into(), Value::Object(m));
        // Direct runs have no server or client: only this process's CPU counts.
        let cpu = if tunnel {
            self.cpu
        } else {
            Cpu {
                server: 0.0,
                client: 0.0,
                bench: self.cpu.bench,
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
        let t = self.tunnel.cpu;
        (self.direct.cpu.bench, t.server + t.client + t.bench)
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
    procs: Option<[Proc; 3]>,
}

impl Report {
    pub fn new(plan: &Plan, nofile: u64) -> Report {
        Report {
            plan: plan.clone(),
            nofile,
            scenarios: Vec::new(),
            procs: None,
        }
    }

    pub fn push(&mut self, s: Scenario) {
        self.scenarios.push(s);
    }

    /// Peak RSS (VmHWM) and CPU totals of server, client and this process at the end.
    pub fn finish(
        &mut self,
        server: Option<u64>,
        client: Option<u64>,
        bench: Option<u64>,
        cpu: Cpu,
    ) {
        self.procs = Some([
            Proc {
                peak_rss_kib: server,
                cpu_s: cpu.server,
            },
            Proc {
                peak_rss_kib: client,
                cpu_s: cpu.client,
            },
            Proc {
                peak_rss_kib: bench,
                cpu_s: cpu.bench,
            },
        ]);
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
        let procs = self.procs.as_ref().map(|[s, c, b]| {
            let one =
                |p: &Proc| json!({"peak_rss_kib": p.peak_rss_kib, "cpu_s": round(p.cpu_s, 3)});
            json!({"server": one(s), "client": one(c), "bench": one(b)})
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
            "\npht-bench: {} over HTTP/{}{}, {cores} cores, 127.0.0.1\n\n",
            p.proto,
            p.http,
            match (p.proto.as_str(), p.http) {
                ("phts", 2) => " (h2 by ALPN)",
                ("pht", 2) => " (h2c)",
                _ => "",
            }
        );
        let row = |a: &str, b: &str, c: &str, d: &str, e: &str, f: &str| {
            format!("{a:<24} {b:<26} {c:>12} {d:>12} {e:>16}  {f}\n")
        };
        out += &row(
            "scenario",
            "metric",
            "direct",
            "tunnel",
            "tunnel/direct",
            "ok (direct, tunnel)",
        );
        out += &format!("{}\n", "-".repeat(24 + 26 + 12 + 12 + 16 + 26));
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
            out += &line("CPU s (all processes)", num(cd), num(ct), r);
            out += &line(
                "CPU s server / client",
                "—".into(),
                format!(
                    "{} / {}",
                    num(s.tunnel.cpu.server),
                    num(s.tunnel.cpu.client)
                ),
                "—".into(),
            );
            for (label, side) in [("direct", &s.direct), ("tunnel", &s.tunnel)] {
                if let Some(e) = &side.error {
                    out += &format!("{:<24} ! {label}: {e}\n", "");
                }
            }
        }
        if let Some([sv, cl, be]) = &self.procs {
            out += "\nprocess      peak RSS (VmHWM)   CPU s (whole run)\n";
            for (name, pr) in [("pht-server", sv), ("pht-client", cl), ("pht-bench", be)] {
                let rss = pr
                    .peak_rss_kib
                    .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or("?".into());
                out += &format!("{name:<12} {rss:>16}   {:>17}\n", num(pr.cpu_s));
            }
            out += "(pht-bench holds the test data and both ends of direct connections)\n";
        }
        out += "\ntarget                   this run                                      goal\n";
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

fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// A number with three significant digits or so.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

pub fn bytes(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n % MIB == 0 {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}
