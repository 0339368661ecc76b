//! Bytes through real binaries: pht-client → pht-server → target, hashes compared.

use std::time::{Duration, Instant};

use pht_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_with_equal_hashes() {
    let target = bulk_target().await;
    let sp = free_port();
    let _srv = server(&["-L", &format!("pht://127.0.0.1:{sp}/{target}")], sp).await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;

    let data = random_bytes(64 * MIB, 1);
    let (digest, up) = upload(local, &data).await;
    assert_eq!(digest, sha256(&data), "upload hash");

    let (digest, down) = download(local, 64 * MIB, 2).await;
    assert_eq!(digest, sha256(&random_bytes(64 * MIB, 2)), "download hash");
    println!("64 MiB through pht (debug build): upload {up:.0} MB/s, download {down:.0} MB/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_close_reaches_client_within_a_second() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"bye").await.unwrap();
        // dropping `s` closes the target side
    });
    let sp = free_port();
    let _srv = server(&["-L", &format!("pht://127.0.0.1:{sp}/{target}")], sp).await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;

    let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"bye");
    let start = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no EOF within 5 s")
        .unwrap();
    assert_eq!(n, 0, "expected EOF");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "EOF took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_reaches_target() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got).await;
        let _ = tx.send((got, r.is_ok()));
    });
    let sp = free_port();
    let _srv = server(&["-L", &format!("pht://127.0.0.1:{sp}/{target}")], sp).await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;

    let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    s.write_all(b"last words").await.unwrap();
    drop(s);
    let (got, clean) = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("target saw no EOF within 5 s")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got), "last words");
    assert!(clean, "target read ended in an error instead of EOF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_survives_heartbeats() {
    let target = echo_target().await;
    let sp = free_port();
    let _srv = server(
        &[
            "-L",
            &format!("pht://127.0.0.1:{sp}/{target}?heartbeat=100ms"),
        ],
        sp,
    )
    .await;
    // The client gives up on a pull silent for 500 ms: only heartbeats keep this alive.
    let (_cli, local) = client(&format!(
        "forward+pht://127.0.0.1:{sp}?heartbeatTimeout=500ms"
    ))
    .await;

    let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let mut buf = [0u8; 5];
    s.write_all(b"first").await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"first");
    // Fifteen heartbeat periods, three heartbeat timeouts, of silence.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"again").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("no data after idle period")
        .unwrap();
    assert_eq!(&buf, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_silent_past_the_heartbeat_timeout_resets_both_ends() {
    let target = target_listener().await;
    let taddr = target.local_addr().unwrap();
    let sp = free_port();
    // The server's heartbeats come every 5 s; the client will not wait past 500 ms. PHT/1:
    // a PHT/2 client pulls again instead (tests/tests/resume.rs).
    let _srv = server(
        &["-L", &format!("pht://127.0.0.1:{sp}/{taddr}?heartbeat=5s")],
        sp,
    )
    .await;
    let (_cli, local) = client(&format!(
        "forward+pht://127.0.0.1:{sp}?v=1&heartbeatTimeout=500ms"
    ))
    .await;
    let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    s.write_all(b"hi").await.unwrap();
    let (mut t, _) = tokio::time::timeout(Duration::from_secs(5), target.accept())
        .await
        .unwrap()
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let app = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the application still waits");
    assert_eq!(
        app.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "the application must see a reset, not an end"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    // The client told the server, which reset the target.
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), t.read_to_end(&mut got))
        .await
        .expect("the target still waits");
    assert_eq!(got, b"hi");
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tunnels_at_once() {
    let target = echo_target().await;
    let sp = free_port();
    let _srv = server(&["-L", &format!("pht://127.0.0.1:{sp}/{target}")], sp).await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;

    let mut tasks = Vec::new();
    for i in 0..100u64 {
        tasks.push(tokio::spawn(async move {
            let data = random_bytes(256 * 1024 + i as usize, i);
            echo_roundtrip(local, &data).await;
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a tunnel stalled")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_entry_carries_bytes_like_an_ssh_proxy_command() {
    use std::io::{Read, Write};
    let target = echo_target().await;
    let sp = free_port();
    let _srv = server(&["-L", &format!("pht://127.0.0.1:{sp}/{target}")], sp).await;
    let mut child = std::process::Command::new(bin("pht-client"))
        .args([
            "-L",
            "stdio://",
            "-F",
            &format!("forward+pht://127.0.0.1:{sp}"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let data = random_bytes(2 * MIB, 5);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let d2 = data.clone();
    // Like ssh, keep stdin open while output is expected: PHT/1 has no half-close, so
    // EOF on stdin closes the whole tunnel (as in gost).
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&d2).unwrap();
        let _ = done_rx.recv();
    });
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; 2 * MIB];
        let r = stdout.read_exact(&mut got).map(|_| got);
        let _ = done_tx.send(());
        r
    });
    let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap()
        .expect("stdout ended early");
    assert_eq!(sha256(&got), sha256(&data));
    writer.join().unwrap();
    // stdin closed: the client closes the tunnel and exits by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "pht-client did not exit after stdin EOF"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_tunnels_and_exits_cleanly() {
    let target = echo_target().await;
    let sp = free_port();
    let mut srv = server(&["-L", &format!("pht://127.0.0.1:{sp}/{target}")], sp).await;
    let (_cli, local) = client(&format!("forward+pht://127.0.0.1:{sp}")).await;
    let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let mut buf = [0u8; 4];
    s.write_all(b"ping").await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    let status = tokio::task::spawn_blocking(move || srv.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    // The open tunnel ends: its local connection reaches EOF (or is reset).
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("no EOF after shutdown");
    assert!(matches!(r, Ok(0) | Err(_)));
}
