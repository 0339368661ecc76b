//! A server facing hostile clients: floods of authorizes and pulls, slow and silent
//! connections, connection limits. Floods come from 127.0.0.2 and 127.0.0.3 while a
//! tunnel from 127.0.0.1 keeps moving bytes.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use pht_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const FLOODER: &str = "127.0.0.2";
/// A second flooder, so each flood meets the per-client limits afresh.
const FLOODER2: &str = "127.0.0.3";

/// A connection to `dst` from the source address `src`.
async fn connect_from(src: &str, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(src.parse::<IpAddr>().unwrap(), 0))?;
    s.connect(dst).await
}

/// Reads one HTTP/1.1 response (head and a Content-Length body); its status.
async fn read_response(s: &mut TcpStream) -> std::io::Result<u16> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = text[9..12].parse().unwrap_or(0);
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(status)
}

/// Open descriptors and peak resident memory (KiB) of a process.
fn usage(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (fds, hwm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_and_pull_floods_leave_a_neighbour_tunnel_intact() {
    pht_runtime::raise_fd_limit();
    let echo = echo_target().await;
    let sp = free_port();
    let srv = server(&["-L", &format!("forward+pht://127.0.0.1:{sp}/{echo}")], sp).await;
    let addr: SocketAddr = format!("127.0.0.1:{sp}").parse().unwrap();
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    let started = Instant::now();
    let mut peak_fds = 0;

    // 6000 pulls on made-up tokens, each held open as an attacker would.
    let mut held = Vec::new();
    let (mut live, mut refused) = (0, 0);
    for batch in 0..12 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..500 {
            let n = batch * 500 + i;
            tasks.spawn(async move {
                let mut s = connect_from(FLOODER, addr).await.unwrap();
                let req = format!("GET /pull?token=flood-{n} HTTP/1.1\r\nHost: x\r\n\r\n");
                s.write_all(req.as_bytes()).await.unwrap();
                let mut line = [0u8; 12];
                s.read_exact(&mut line).await.unwrap();
                (s, String::from_utf8_lossy(&line[9..12]).to_string())
            });
        }
        while let Some(r) = tasks.join_next().await {
            let (s, status) = r.unwrap();
            match status.as_str() {
                "200" => live += 1,
                "429" => refused += 1,
                other => panic!("pull flood: unexpected status {other}"),
            }
            held.push(s);
        }
        peak_fds = peak_fds.max(usage(srv.pid()).0);
    }
    // The neighbour, from another address, while the flood is held.
    echo_roundtrip(local, &random_bytes(8 * 1024 * 1024, 1)).await;

    // 20 000 authorizes that are never used, on 40 keep-alive connections.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        tasks.spawn(async move {
            let mut s = connect_from(FLOODER2, addr).await.unwrap();
            let (mut ok, mut no) = (0u32, 0u32);
            for _ in 0..500 {
                s.write_all(b"GET /authorize HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
                match read_response(&mut s).await.unwrap() {
                    200 => ok += 1,
                    429 => no += 1,
                    other => panic!("authorize flood: unexpected status {other}"),
                }
            }
            (ok, no)
        });
    }
    let neighbour = tokio::spawn(async move {
        echo_roundtrip(local, &random_bytes(8 * 1024 * 1024, 2)).await;
    });
    let (mut authorized, mut auth_refused) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (ok, no) = r.unwrap();
        authorized += ok;
        auth_refused += no;
        peak_fds = peak_fds.max(usage(srv.pid()).0);
    }
    neighbour.await.unwrap();
    let (fds, hwm_kib) = usage(srv.pid());
    peak_fds = peak_fds.max(fds);
    let limit = pht_runtime::fd_limit().unwrap_or(20_000) as usize;
    println!(
        "pull flood: {live} tunnels, {refused} refused (429); authorize flood: {authorized} \
         tokens, {auth_refused} refused (429); server peak descriptors {peak_fds} of {limit}, \
         peak RSS {} MiB; {:.1} s",
        hwm_kib / 1024,
        started.elapsed().as_secs_f64()
    );
    // One client gets at most maxTunnelsPerClient (1024) tunnels, authorized or live.
    assert!(live <= 1024, "{live} tunnels for one client");
    assert_eq!(live + refused, 6000);
    assert!(authorized <= 1024, "{authorized} tokens for one client");
    assert_eq!(authorized + auth_refused, 20_000);
    assert!(
        peak_fds < limit / 2,
        "{peak_fds} descriptors of {limit}: the flood was not contained"
    );
    assert!(hwm_kib < 512 * 1024, "peak RSS {hwm_kib} KiB");
    // The refusals were summed up in the log, not written once each.
    let warns = srv
        .log_text()
        .lines()
        .filter(|l| l.contains("new tunnels refused with 429"))
        .count();
    assert!((1..=5).contains(&warns), "{warns} refusal log lines");
    drop(held);
}

/// Opens `n` connections that send nothing and `n` that trickle a request head a byte at
/// a time, and returns how long the server took to close the last of them.
async fn slowloris(addr: SocketAddr, n: usize, trickle: &'static [u8]) -> Duration {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2 * n {
        tasks.spawn(async move {
            let mut s = connect_from(FLOODER, addr).await.unwrap();
            let mut buf = [0u8; 256];
            let mut next = 0;
            loop {
                let send = i % 2 == 1 && next < trickle.len();
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return Instant::now(),
                        Ok(_) => continue, // an error page; the close follows
                    },
                    _ = tokio::time::sleep(Duration::from_millis(200)), if send => {
                        if s.write_all(&trickle[next..next + 1]).await.is_err() {
                            return Instant::now();
                        }
                        next += 1;
                    }
                }
            }
        });
    }
    let mut last = start;
    while let Some(r) = tokio::time::timeout(Duration::from_secs(30), tasks.join_next())
        .await
        .expect("a slow connection was never closed")
    {
        last = last.max(r.unwrap());
    }
    last - start
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_closed_on_every_listener_kind() {
    let echo = echo_target().await;
    let web = TempDir::new("slowloris-web");
    std::fs::write(web.path().join("index.html"), "hi").unwrap();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let (pht, phts, tls, tcp, file) = (ports[0], ports[1], ports[2], ports[3], ports[4]);
    let home = TempDir::new("slowloris-home");
    let _srv = Proc::start_env(
        "pht-server",
        &[
            "-L",
            &format!("forward+pht://127.0.0.1:{pht}/{echo}?headerTimeout=1s"),
            "-L",
            &format!("forward+phts://127.0.0.1:{phts}/{echo}?headerTimeout=1s&handshakeTimeout=1s"),
            "-L",
            &format!("forward+tls://127.0.0.1:{tls}/{echo}?handshakeTimeout=1s"),
            "-L",
            &format!("http://127.0.0.1:{tcp}?readTimeout=1s"),
            "-L",
            &format!(
                "file://127.0.0.1:{file}?dir={}&headerTimeout=1s",
                web.join("")
            ),
        ],
        file,
        &[("HOME", home.join("").as_str())],
    )
    .await;
    let head: &'static [u8] =
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for (name, port) in [
        ("pht", pht),
        ("phts", phts),
        ("tls", tls),
        ("tcp (http handler)", tcp),
        ("file", file),
    ] {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let took = slowloris(addr, 100, head).await;
        println!("{name}: 200 slow and silent connections closed within {took:?}");
        assert!(
            took < Duration::from_secs(4),
            "{name}: the last slow connection lasted {took:?} (timeout 1s)"
        );
    }
    // The listeners still serve ordinary clients.
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{pht}")).await;
    echo_roundtrip(local, b"still here").await;
    let (code, out, err) = curl(&["-s", &format!("http://127.0.0.1:{file}/")]).await;
    assert_eq!((code, out.as_str()), (0, "hi"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_conns_are_reset_and_neighbours_keep_working() {
    let echo = echo_target().await;
    let (tcp, pht) = (free_port(), free_port());
    let _srv = server(
        &[
            "-L",
            &format!("tcp://127.0.0.1:{tcp}/{echo}?maxConns=20"),
            "-L",
            &format!("forward+pht://127.0.0.1:{pht}/{echo}"),
        ],
        pht,
    )
    .await;
    let addr: SocketAddr = format!("127.0.0.1:{tcp}").parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = connect_from(FLOODER, addr).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap(); // echoed: admitted
        held.push(s);
    }
    // The reset may come before connect() returns, or at the first read.
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let mut extra = connect_from(FLOODER, addr).await?;
        extra.read(&mut [0u8; 1]).await
    })
    .await
    .expect("the 21st connection was neither served nor refused");
    assert_eq!(
        r.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    // Another listener of the same process is unaffected; a freed place is reused.
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{pht}")).await;
    echo_roundtrip(local, &random_bytes(1024 * 1024, 3)).await;
    held.pop();
    // The place comes back once the server has wound that connection down.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut b = [0u8; 1];
        let echoed = async {
            let mut again = connect_from(FLOODER, addr).await?;
            again.write_all(b"y").await?;
            again.read_exact(&mut b).await
        };
        match echoed.await {
            Ok(_) => {
                assert_eq!(&b, b"y");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "a freed place was never reused: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_push_past_the_limit_resets_the_target_after_what_it_got() {
    let target = target_listener().await;
    let taddr = target.local_addr().unwrap();
    let sp = free_port();
    let _srv = server(
        &[
            "-L",
            &format!("forward+pht://127.0.0.1:{sp}/{taddr}?maxPushBody=1MiB"),
        ],
        sp,
    )
    .await;
    let addr: SocketAddr = format!("127.0.0.1:{sp}").parse().unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A chunked body (no length to refuse it by): 4 MiB of data as one base64 line.
    s.write_all(
        b"POST /push?token=chunked-over HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let (mut t, _) = tokio::time::timeout(Duration::from_secs(5), target.accept())
        .await
        .unwrap()
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match t.read(&mut buf).await {
                Ok(0) => return (got, Ok(())),
                Ok(n) => got += n,
                Err(e) => return (got, Err(e.kind())),
            }
        }
    });
    let line = "QUFB".repeat(16 * 1024); // 48 KiB of 'A' per chunk
    let mut status = None;
    for _ in 0..120 {
        let chunk = format!("{:x}\r\n{line}\r\n", line.len());
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"1\r\n\n\r\n0\r\n\r\n").await;
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).await.is_ok() {
        status = Some(String::from_utf8_lossy(&head[9..12]).to_string());
    }
    let (got, end) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the target still waits")
        .unwrap();
    println!("over-limit chunked push: answer {status:?}, target got {got} bytes, then {end:?}");
    assert_eq!(status.as_deref(), Some("413"));
    assert!(got <= 1024 * 1024, "{got} bytes passed a 1 MiB limit");
    assert_eq!(
        end,
        Err(std::io::ErrorKind::ConnectionReset),
        "the target must see a reset after a prefix, never a clean end"
    );
}
