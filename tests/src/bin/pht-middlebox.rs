//! `pht-middlebox`: nginx or squid from `tests/fixtures/` for shell scripts, on a free
//! loopback port, in a temp dir of its own — see `pht_e2e::middlebox`.
//!
//! ```sh
//! pht-middlebox nginx --upstream 127.0.0.1:8443            # stock reverse proxy
//! pht-middlebox squid --host pht-server.test=127.0.0.1      # forward proxy, CONNECT denied
//! pht-middlebox squid --allow-connect --host pht-server.test=127.0.0.1
//! ```
//!
//! Prints one line `port N` on stdout once it accepts connections, then runs until
//! SIGTERM or SIGINT, stops the middlebox and removes its directory. If the middlebox
//! dies first, its logs go to stderr and the exit status is 1.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Parser, Subcommand};
use pht_e2e::middlebox::{Middlebox, Nginx, Squid};

#[derive(Parser)]
#[command(about = "Run nginx or squid on 127.0.0.1 for the PHT tests")]
struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// nginx reverse proxy: `location / { proxy_pass http://UPSTREAM; }`, nothing else
    Nginx {
        /// pht-server address (host:port)
        #[arg(long)]
        upstream: SocketAddr,
        /// client_max_body_size 64k instead of nginx's default 1m
        #[arg(long)]
        small_body: bool,
    },
    /// squid forward proxy for 127.0.0.1 clients; CONNECT denied unless --allow-connect
    Squid {
        /// Allow CONNECT to any port (phts through squid)
        #[arg(long)]
        allow_connect: bool,
        /// NAME=IP in squid's own hosts file (repeatable)
        #[arg(long = "host", value_parser = parse_host)]
        hosts: Vec<(String, IpAddr)>,
    },
}

fn parse_host(s: &str) -> Result<(String, IpAddr), String> {
    let (name, ip) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=IP"))?;
    let ip = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Ok((name.to_string(), ip))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    // Signal handlers first: a SIGTERM during start-up still stops the middlebox cleanly.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut mb = match args.which {
        Which::Nginx {
            upstream,
            small_body,
        } => {
            let conf = if small_body {
                Nginx::SmallBody
            } else {
                Nginx::Stock
            };
            Middlebox::nginx_with(upstream, conf).await
        }
        Which::Squid {
            allow_connect,
            hosts,
        } => {
            Middlebox::squid(&Squid {
                allow_connect,
                hosts,
            })
            .await
        }
    };
    println!("port {}", mb.port());
    std::io::stdout().flush().unwrap();
    eprintln!("[pht-middlebox] running in {}", mb.dir().display());
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                if let Some(status) = mb.exited() {
                    eprintln!("[pht-middlebox] exited unexpectedly with {status}\n{}", mb.logs());
                    drop(mb);
                    std::process::exit(1);
                }
            }
        }
    }
    drop(mb);
}
