//! `fault-proxy`: a TCP proxy between pht-client and pht-server that cuts exactly one
//! connection: the one carrying a pull (or a push) when that kind's bytes reach the given
//! count (pull: server → client, push: client → server) — see `pht_e2e::fault`.
//!
//! ```sh
//! fault-proxy --upstream 127.0.0.1:8443 --kind pull --after 4000000 --mode rst
//! # prints "port N" once listening; point pht-client at 127.0.0.1:N; runs until killed
//! ```

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;
use pht_e2e::fault::{Fault, FaultProxy, Kind, Mode};

#[derive(Parser)]
#[command(about = "TCP proxy that cuts the PHT connection carrying a pull or push after N bytes")]
struct Args {
    /// pht-server address (host:port)
    #[arg(long)]
    upstream: SocketAddr,
    /// What to cut: `pull` (bytes counted server → client) or `push` (client → server)
    #[arg(long)]
    kind: Kind,
    /// Bytes of that kind that pass before the cut (plain number, or k/M/KiB/MiB)
    #[arg(long, value_parser = parse_size)]
    after: u64,
    /// `fin` (FIN to both peers), `rst` (RST to both), `silent` (stop forwarding, keep open)
    #[arg(long)]
    mode: Mode,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Print nothing but the port line
    #[arg(long, short)]
    quiet: bool,
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
    let fault = Fault {
        kind: args.kind,
        after: args.after,
        mode: args.mode,
    };
    let proxy = FaultProxy::with_listener(listener, args.upstream, fault, !args.quiet);
    println!("port {}", proxy.port());
    std::io::stdout().flush().unwrap();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(proxy);
}
