//! `fault-proxy`: a TCP proxy between pht-client and pht-server that cuts exactly one
//! connection: the one carrying a pull (or a push) when that kind's bytes reach the given
//! count (pull: server → client, push: client → server) — see `pht_e2e::fault`.
//!
//! With `--mode random` it instead cuts a random connection carrying a pull or push (of
//! `--kind`, if given) every `--every` milliseconds (a range: a time drawn at random), with
//! a FIN or a RST, until it is stopped.
//!
//! ```sh
//! fault-proxy --upstream 127.0.0.1:8443 --kind pull --after 4000000 --mode rst
//! fault-proxy --upstream 127.0.0.1:8443 --mode random --every 200..600
//! # prints "port N" once listening; point pht-client at 127.0.0.1:N; runs until killed
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use pht_e2e::fault::{Fault, FaultProxy, Kind, Mode, RandomCuts};

/// `--mode`: one fault's way of cutting, or random cuts.
#[derive(Clone, Copy)]
enum CliMode {
    One(Mode),
    Random,
}

impl FromStr for CliMode {
    type Err = String;
    fn from_str(s: &str) -> Result<CliMode, String> {
        match s {
            "random" => Ok(CliMode::Random),
            _ => s
                .parse::<Mode>()
                .map(CliMode::One)
                .map_err(|_| format!("mode {s:?}: expected fin, rst, silent or random")),
        }
    }
}

#[derive(Parser)]
#[command(
    about = "TCP proxy that cuts the PHT connection carrying a pull or push after N bytes, \
             or random ones every few hundred ms"
)]
struct Args {
    /// pht-server address (host:port)
    #[arg(long)]
    upstream: SocketAddr,
    /// What to cut: `pull` (bytes counted server → client) or `push` (client → server);
    /// with `--mode random`, only connections carrying that kind (default: both)
    #[arg(long)]
    kind: Option<Kind>,
    /// Bytes of that kind that pass before the cut (plain number, or k/M/KiB/MiB)
    #[arg(long, value_parser = parse_size)]
    after: Option<u64>,
    /// `fin` (FIN to both peers), `rst` (RST to both), `silent` (stop forwarding, keep
    /// open), or `random` (cut random connections, see --every)
    #[arg(long)]
    mode: CliMode,
    /// `--mode random`: milliseconds between two cuts, `MIN..MAX` (drawn at random) or `N`
    #[arg(long, value_parser = parse_every)]
    every: Option<RangeInclusive<Duration>>,
    /// `--mode random`: seed of the draws
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Print nothing but the port line
    #[arg(long, short)]
    quiet: bool,
}

fn parse_every(s: &str) -> Result<RangeInclusive<Duration>, String> {
    let bad = || format!("every {s:?}: expected milliseconds, N or MIN..MAX (e.g. 200..600)");
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let (a, b) = (
        a.trim().parse::<u64>().map_err(|_| bad())?,
        b.trim().parse::<u64>().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(Duration::from_millis(a)..=Duration::from_millis(b))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = [
        ("KiB", 1u64 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("k", 1000),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("size {s:?}: expected bytes, e.g. 4000000 or 4MiB"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|e| panic!("listen on {}: {e}", args.listen));
    let proxy = match (args.mode, args.kind, args.after, args.every) {
        (CliMode::One(mode), Some(kind), Some(after), None) => {
            let fault = Fault { kind, after, mode };
            FaultProxy::with_listener(listener, args.upstream, fault, !args.quiet)
        }
        (CliMode::Random, kind, None, Some(every)) => {
            let cuts = RandomCuts {
                every,
                kind,
                seed: args.seed,
            };
            FaultProxy::random(listener, args.upstream, cuts, !args.quiet)
        }
        (CliMode::One(_), ..) => usage("--mode fin|rst|silent needs --kind and --after"),
        (CliMode::Random, ..) => usage("--mode random needs --every and takes no --after"),
    };
    println!("port {}", proxy.port());
    std::io::stdout().flush().unwrap();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    if proxy.fault().is_none() {
        // What a test run behind it went through (a run without cuts proves nothing).
        println!("cuts {}", proxy.cuts());
        std::io::stdout().flush().unwrap();
    }
    drop(proxy);
}

fn usage(msg: &str) -> ! {
    eprintln!("fault-proxy: {msg}");
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes_and_intervals() {
        assert!(matches!("rst".parse(), Ok(CliMode::One(Mode::Rst))));
        assert!(matches!("random".parse(), Ok(CliMode::Random)));
        assert!("chaos".parse::<CliMode>().is_err());
        let ms = Duration::from_millis;
        assert_eq!(parse_every("200..600"), Ok(ms(200)..=ms(600)));
        assert_eq!(parse_every("300"), Ok(ms(300)..=ms(300)));
        for bad in ["0", "600..200", "a..b", "200..", ""] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
    }
}
