//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7): a UDP relay that lives as long as the control
//! connection. Datagrams from the client carry `RSV(2) FRAG ATYP ADDR PORT DATA`; replies
//! from targets go back to the client with the same header naming their source.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use pht_core::socks_addr::SocksAddr;
use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;

use super::common::{send, send_and_close};
use super::socks5_bind::{NO_ADDR, reply_addr};
use crate::access::Bypass;
use crate::listener::Stream;
use pht_core::socks5::{REP_FAILURE, REP_OK};

/// Largest datagram plus the largest header.
const MAX_DATAGRAM: usize = 65_535 + 262;

async fn resolve(dst: &str) -> Option<SocketAddr> {
    if let Ok(a) = dst.parse() {
        return Some(a);
    }
    tokio::net::lookup_host(dst).await.ok()?.next()
}

/// Serves one UDP ASSOCIATE request for `client` on the control stream `s`. Datagrams to
/// a destination the service's `bypass` refuses are dropped (the first one is logged, the
/// count when the association ends).
pub(super) async fn serve(
    s: &mut Box<dyn Stream>,
    client: SocketAddr,
    local: SocketAddr,
    bypass: Option<&Bypass>,
) -> io::Result<()> {
    let mut refused = 0u64;
    let res = relay(s, client, local, bypass, &mut refused).await;
    if refused > 0 {
        tracing::debug!(%client, refused, "socks5 udp: datagrams dropped by bypass");
    }
    res
}

async fn relay(
    s: &mut Box<dyn Stream>,
    client: SocketAddr,
    local: SocketAddr,
    bypass: Option<&Bypass>,
    refused: &mut u64,
) -> io::Result<()> {
    let bind_ip = match local.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let sock = match UdpSocket::bind((bind_ip, 0)).await {
        Ok(u) => u,
        Err(e) => {
            send_and_close(s, &reply_addr(REP_FAILURE, NO_ADDR)).await;
            return Err(e);
        }
    };
    send(s, &reply_addr(REP_OK, sock.local_addr()?)).await?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut ctl = [0u8; 256];
    // The client's UDP address: the first datagram from its IP names it.
    let mut client_udp: Option<SocketAddr> = None;
    loop {
        tokio::select! {
            r = s.read(&mut ctl) => match r {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {} // nothing is expected on the control connection
            },
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r?;
                let from_client = match client_udp {
                    Some(c) => from == c,
                    None => from.ip() == client.ip(),
                };
                if from_client {
                    client_udp = Some(from);
                    // RSV RSV FRAG: fragments are not reassembled, so they are dropped.
                    if n < 4 || buf[2] != 0 {
                        continue;
                    }
                    let Ok((dst, hlen)) = SocksAddr::decode(&buf[3..n]) else { continue };
                    let dst = dst.to_string();
                    if bypass.is_some_and(|b| b.contains(&dst)) {
                        if *refused == 0 {
                            tracing::warn!(%client, %dst, "socks5 udp: destination refused by bypass: datagrams dropped");
                        }
                        *refused += 1;
                        continue;
                    }
                    if let Some(dst) = resolve(&dst).await {
                        let _ = sock.send_to(&buf[3 + hlen..n], dst).await;
                    }
                } else if let Some(c) = client_udp {
                    let mut out = reply_addr(0x00, from);
                    out[1] = 0x00; // RSV RSV FRAG = 0 0 0, then ATYP ADDR PORT
                    out[0] = 0x00;
                    out.extend_from_slice(&buf[..n]);
                    let _ = sock.send_to(&out, c).await;
                }
            }
        }
    }
}
