//! SOCKS5 BIND (RFC 1928 §4, gost's reading): listen where the request says, report the
//! listening address, accept one connection, report its peer, then splice.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use pht_core::socks_addr::SocksAddr;
use pht_runtime::splice;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use super::common::{send, send_and_close};
use crate::access::Bypass;
use crate::listener::Stream;
use pht_core::socks5::{REP_FAILURE, REP_NOT_ALLOWED, REP_OK, VERSION};

/// The address a failure reply names: `0.0.0.0:0`.
pub(super) const NO_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// A reply naming `addr` (ATYP 1 or 4).
pub(super) fn reply_addr(rep: u8, addr: SocketAddr) -> Vec<u8> {
    let mut r = vec![VERSION, rep, 0x00];
    SocksAddr::from(addr)
        .encode(&mut r)
        .expect("an IP address always encodes");
    r
}

/// The address to listen on: the request's IP, or (unspecified, or a name) the address
/// the client reached this server on, with the requested port.
fn listen_addr(target: &str, local: SocketAddr) -> SocketAddr {
    let (host, port) = target.rsplit_once(':').unwrap_or((target, "0"));
    let port = port.parse().unwrap_or(0);
    let ip = host
        .trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(match local.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        });
    SocketAddr::new(ip, port)
}

/// Serves one BIND request on the control stream `s`; an inbound peer the service's
/// `bypass` refuses is turned away with `02`.
pub(super) async fn serve(
    s: &mut Box<dyn Stream>,
    target: &str,
    local: SocketAddr,
    bypass: Option<&Bypass>,
) -> io::Result<()> {
    let listener = match TcpListener::bind(listen_addr(target, local)).await {
        Ok(l) => l,
        Err(e) => {
            send_and_close(s, &reply_addr(REP_FAILURE, NO_ADDR)).await;
            return Err(e);
        }
    };
    send(s, &reply_addr(REP_OK, listener.local_addr()?)).await?;
    let mut probe = [0u8; 1];
    let (mut inbound, from) = tokio::select! {
        r = listener.accept() => match r {
            Ok(x) => x,
            Err(e) => {
                send_and_close(s, &reply_addr(REP_FAILURE, NO_ADDR)).await;
                return Err(e);
            }
        },
        // The client hung up (or broke protocol by sending first): stop listening.
        _ = s.read(&mut probe) => return Ok(()),
    };
    drop(listener);
    if bypass.is_some_and(|b| b.contains(&from.to_string())) {
        send_and_close(s, &reply_addr(REP_NOT_ALLOWED, from)).await;
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("inbound peer {from} refused by bypass"),
        ));
    }
    let _ = inbound.set_nodelay(true);
    send(s, &reply_addr(REP_OK, from)).await?;
    match splice(s, &mut inbound).await {
        (_, Some(e)) => Err(e),
        _ => Ok(()),
    }
}
