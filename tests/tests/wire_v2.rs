//! PHT/2 on the wire: a raw HTTP client speaking the protocol of docs/PROTOCOL.md byte for
//! byte against the real pht-server, beside PHT/1 requests on the same server.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pht_core::frame::{Frame, FrameDecoder, ResetCode};
use pht_e2e::raw::RawConn;
use pht_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const T: Duration = Duration::from_secs(10);

/// One PHT/2 pull response, read frame by frame.
struct Pull {
    conn: RawConn,
    dec: FrameDecoder,
    frames: VecDeque<Frame>,
    /// The upload count of the last ACK frame.
    last_ack: Option<u64>,
}

impl Pull {
    /// `GET /pull?token=T&v=2&ack=N<extra>`: checks the head and the leading PING.
    async fn open(port: u16, token: &str, ack: u64, extra: &str) -> Pull {
        let mut conn = RawConn::connect(port).await;
        conn.go_get(&format!("/pull?token={token}&v=2&ack={ack}{extra}"))
            .await;
        let head = tokio::time::timeout(T, conn.head())
            .await
            .expect("pull head stalled")
            .expect("pull: no response");
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(head.header("cache-control"), Some("no-store"));
        assert_eq!(head.header("x-accel-buffering"), Some("no"));
        let mut p = Pull {
            conn,
            dec: FrameDecoder::default(),
            frames: VecDeque::new(),
            last_ack: None,
        };
        assert_eq!(
            p.raw_frame().await,
            Some(Frame::Ping),
            "a PHT/2 pull starts with PING"
        );
        assert!(
            matches!(p.raw_frame().await, Some(Frame::Ack(_))),
            "then ACK"
        );
        p
    }

    /// The next frame; `None` once the response has ended.
    async fn raw_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.frames.pop_front() {
                if let Frame::Ack(n) = f {
                    self.last_ack = Some(n);
                }
                return Some(f);
            }
            let chunk = tokio::time::timeout(T, self.conn.chunk())
                .await
                .expect("pull stalled")?;
            let frames = &mut self.frames;
            self.dec
                .feed(chunk.into(), &mut |f| frames.push_back(f))
                .expect("malformed frame");
        }
    }

    /// The next frame other than PING and ACK.
    async fn signal(&mut self) -> Option<Frame> {
        loop {
            match self.raw_frame().await? {
                Frame::Ping | Frame::Ack(_) => {}
                f => return Some(f),
            }
        }
    }

    /// Reads DATA until `have` holds `want` bytes; bytes already in `have` may come again
    /// (a resumed pull), a gap may not.
    async fn read_data(&mut self, have: &mut Vec<u8>, want: usize) {
        while have.len() < want {
            match self.signal().await {
                Some(Frame::Data { offset, data }) => take_data(have, offset, &data),
                other => panic!("expected DATA at {}, got {other:?}", have.len()),
            }
        }
    }

    /// Reads until the response ends, skipping PING and ACK; returns the rest.
    async fn rest(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = self.signal().await {
            out.push(f);
        }
        out
    }

    /// Reads the rest of the response (skipping PING and ACK), then tells whether it
    /// ended with its terminating chunk: the connection then takes another request,
    /// which a broken-off response never allows.
    async fn finish(mut self) -> (Vec<Frame>, bool) {
        let rest = self.rest().await;
        // Not authorize: that would take a share of maxTunnels.
        self.conn.go_get("/").await;
        let clean = matches!(
            tokio::time::timeout(T, self.conn.head()).await,
            Ok(Some(h)) if h.status == 404
        );
        (rest, clean)
    }
}

/// Appends what `data` at `offset` adds to `have`.
fn take_data(have: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let offset = offset as usize;
    assert!(
        offset <= have.len(),
        "DATA at {offset} leaves a gap after {}",
        have.len()
    );
    let skip = have.len() - offset;
    if skip < data.len() {
        have.extend_from_slice(&data[skip..]);
    }
}

/// `POST /push?token=T&v=2&<query>` with a raw body: status and body text.
async fn push(c: &mut RawConn, token: &str, query: &str, body: &[u8]) -> (u16, String) {
    let (s, b) = tokio::time::timeout(
        T,
        c.exchange_post(&format!("/push?token={token}&v=2&{query}"), body),
    )
    .await
    .expect("push stalled");
    (s, String::from_utf8(b).unwrap())
}

async fn authorize_v2(c: &mut RawConn) -> String {
    let (s, body) = c.exchange_get("/authorize?v=2").await;
    assert_eq!(s, 200);
    let body = String::from_utf8(body).unwrap();
    body.split('&')
        .next()
        .and_then(|t| t.strip_prefix("token="))
        .expect("token=")
        .to_string()
}

async fn start(target: SocketAddr, opts: &str) -> (Proc, u16) {
    let sp = free_port();
    let url = format!("pht://127.0.0.1:{sp}/{target}?{opts}");
    (server(&["-L", &url], sp).await, sp)
}

/// How a target's read side ended.
type Ending = (Vec<u8>, Result<(), ErrorKind>);

/// A target taking one connection: it echoes what it reads (so a client knows the target
/// has it), and reports what it got and how its read ended.
async fn recording_target() -> (SocketAddr, oneshot::Receiver<Ending>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        let end = loop {
            match s.read(&mut b).await {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    got.extend_from_slice(&b[..n]);
                    let _ = s.write_all(&b[..n]).await;
                }
                Err(e) => break Err(e.kind()),
            }
        };
        let _ = tx.send((got, end));
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_answers_by_version() {
    let target = echo_target().await;
    let (_srv, sp) = start(target, "").await;
    let mut c = RawConn::connect(sp).await;
    let (s, body) = c.exchange_get("/authorize").await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(s, 200);
    let token = body.strip_prefix("token=").unwrap();
    assert_eq!(token.len(), 22, "PHT/1: exactly token=T, as gost: {body:?}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );

    let (s, body) = c.exchange_get("/authorize?v=2").await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(s, 200);
    let (token, limits) = body.split_once('&').unwrap();
    assert_eq!(token.len(), "token=".len() + 22);
    assert_eq!(
        limits,
        "v=2&heartbeat=10000&grace=30000&replay=8388608&reorder=8388608&maxPush=8388608"
    );

    // The limits follow the listener's options.
    let (_srv2, sp2) = start(
        target,
        "heartbeat=5s&resumeGrace=7s&replayBuffer=1MiB&reorderBuffer=0&maxPushBody=64KiB",
    )
    .await;
    let mut c = RawConn::connect(sp2).await;
    let (s, body) = c.exchange_get("/authorize?v=2").await;
    assert_eq!(s, 200);
    let body = String::from_utf8(body).unwrap();
    assert_eq!(
        body.split_once('&').unwrap().1,
        "v=2&heartbeat=5000&grace=7000&replay=1048576&reorder=0&maxPush=65536"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_with_sequenced_pushes_and_acks() {
    let target = echo_target().await;
    let (_srv, sp) = start(target, "").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let mut pull = Pull::open(sp, &token, 0, "").await;
    assert_eq!(pull.last_ack, Some(0));

    assert_eq!(
        push(&mut ctl, &token, "seq=0", b"hello ").await,
        (200, "ack=6".into())
    );
    assert_eq!(
        push(&mut ctl, &token, "seq=6&ack=0", b"world").await,
        (200, "ack=11".into())
    );
    let mut got = Vec::new();
    pull.read_data(&mut got, 11).await;
    assert_eq!(got, b"hello world");
    // ACK frames report the upload count too.
    while pull.last_ack != Some(11) {
        let f = pull.raw_frame().await.expect("pull ended");
        assert!(matches!(f, Frame::Ping | Frame::Ack(_)), "unexpected {f:?}");
    }
    // Binary bytes pass untouched (no base64 in PHT/2).
    let binary: Vec<u8> = (0..=255).collect();
    assert_eq!(
        push(&mut ctl, &token, "seq=11&ack=11", &binary).await,
        (200, "ack=267".into())
    );
    pull.read_data(&mut got, 267).await;
    assert_eq!(&got[11..], &binary[..]);

    // A missing seq or a bad number is refused; the tunnel is unharmed.
    assert_eq!(
        push(&mut ctl, &token, "ack=1", b"x").await,
        (400, "missing or bad seq\n".into())
    );
    assert_eq!(
        push(&mut ctl, &token, "seq=x", b"x").await,
        (400, "missing or bad seq\n".into())
    );
    assert_eq!(push(&mut ctl, &token, "seq=267&ack=-1", b"x").await.0, 400);
    assert_eq!(
        push(&mut ctl, &token, "seq=267&ack=267", b"!").await,
        (200, "ack=268".into())
    );
    pull.read_data(&mut got, 268).await;
    assert_eq!(got[267], b'!');
}

/// A target that sends `random_bytes(len, seed)`, half-closes, and waits for the end.
async fn download_target(len: usize, seed: u64) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(&random_bytes(len, seed)).await.unwrap();
        s.shutdown().await.unwrap();
        let mut b = [0u8; 64];
        while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_pull_resumes_exactly_where_the_client_is() {
    const LEN: usize = 3 * 1024 * 1024;
    let target = download_target(LEN, 21).await;
    // A small replay buffer: the download moves only as far as acknowledgements let it.
    let (_srv, sp) = start(target, "replayBuffer=256KiB").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;

    let mut got = Vec::new();
    let mut pull = Pull::open(sp, &token, 0, "").await;
    // Without acknowledgements, the replay buffer's worth comes and nothing more.
    pull.read_data(&mut got, 256 * 1024).await;
    let stalled = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match pull.signal().await {
                Some(Frame::Data { offset, data }) => take_data(&mut got, offset, &data),
                other => return other,
            }
        }
    })
    .await;
    assert!(stalled.is_err(), "the pull must wait for acks");
    assert_eq!(got.len(), 256 * 1024, "exactly the replay buffer");
    // Cut the pull mid-stream, keeping only part of what it carried.
    drop(pull);
    got.truncate(200_000);

    let mut pull = Pull::open(sp, &token, got.len() as u64, "").await;
    match pull.signal().await {
        Some(Frame::Data { offset, data }) => {
            assert_eq!(offset, 200_000, "resumes at the client's offset");
            take_data(&mut got, offset, &data);
        }
        other => panic!("expected DATA, got {other:?}"),
    }
    let mut acked = 0;
    let mut rotated = false;
    while got.len() < LEN {
        match pull.signal().await {
            Some(Frame::Data { offset, data }) => take_data(&mut got, offset, &data),
            other => panic!("expected DATA at {}, got {other:?}", got.len()),
        }
        if got.len() - acked >= 64 * 1024 {
            acked = got.len();
            let (s, _) = push(&mut ctl, &token, &format!("seq=0&ack={acked}"), b"").await;
            assert_eq!(s, 200, "a pure acknowledgement");
        }
        if !rotated && got.len() > LEN / 2 {
            // Make before break: the newer pull replaces this one, which ends with END.
            rotated = true;
            let next = Pull::open(sp, &token, got.len() as u64, "").await;
            let mut old = std::mem::replace(&mut pull, next);
            loop {
                match old.signal().await {
                    Some(Frame::Data { offset, data }) => take_data(&mut got, offset, &data),
                    Some(Frame::End) => break,
                    other => panic!("the replaced pull must end with END, got {other:?}"),
                }
            }
            assert_eq!(
                old.finish().await,
                (vec![], true),
                "the replaced pull ended cleanly"
            );
        }
    }
    assert_eq!(got.len(), LEN);
    assert_eq!(sha256(&got), sha256(&random_bytes(LEN, 21)));
    // The target half-closed after its bytes: FIN with the total, and the response stays.
    assert_eq!(pull.signal().await, Some(Frame::Fin(LEN as u64)));
    let quiet = tokio::time::timeout(Duration::from_millis(300), pull.signal()).await;
    assert!(quiet.is_err(), "after FIN the pull stays open: {quiet:?}");
    assert_eq!(
        push(&mut ctl, &token, &format!("seq=0&ack={LEN}&close=1"), b"").await,
        (200, "ack=0".into())
    );
    assert!(pull.rest().await.is_empty(), "a close just ends the pull");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_and_reordered_pushes_arrive_once_in_order() {
    let target = echo_target().await;
    let (_srv, sp) = start(target, "").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let mut pull = Pull::open(sp, &token, 0, "").await;

    // The second body first: held until the gap before it is filled.
    assert_eq!(
        push(&mut ctl, &token, "seq=5", b"world").await,
        (200, "ack=0".into())
    );
    assert_eq!(
        push(&mut ctl, &token, "seq=5", b"world").await,
        (200, "ack=0".into()),
        "held twice"
    );
    assert_eq!(
        push(&mut ctl, &token, "seq=0", b"hello").await,
        (200, "ack=10".into())
    );
    // Retries, whole and overlapping: nothing new.
    assert_eq!(
        push(&mut ctl, &token, "seq=0", b"hello").await,
        (200, "ack=10".into())
    );
    assert_eq!(
        push(&mut ctl, &token, "seq=3", b"lowor").await,
        (200, "ack=10".into())
    );
    // Overlapping new bytes: only the new part goes on.
    assert_eq!(
        push(&mut ctl, &token, "seq=8", b"ld!").await,
        (200, "ack=11".into())
    );
    let mut got = Vec::new();
    pull.read_data(&mut got, 11).await;
    assert_eq!(got, b"helloworld!");
    // Nothing was echoed twice: the next bytes follow at once.
    assert_eq!(
        push(&mut ctl, &token, "seq=11", b"?").await,
        (200, "ack=12".into())
    );
    pull.read_data(&mut got, 12).await;
    assert_eq!(got, b"helloworld!?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorder_buffer_and_push_size_limits() {
    let target = echo_target().await;
    // Each held body counts 1 KiB of bookkeeping besides its bytes.
    let (_srv, sp) = start(target, "reorderBuffer=2KiB&maxPushBody=4096").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let mut pull = Pull::open(sp, &token, 0, "").await;

    let body = random_bytes(100, 5);
    // Room for it, but it would end further than the buffer past the next byte: no
    // client has that much in flight.
    assert_eq!(
        push(&mut ctl, &token, "seq=2040", &body[..10]).await,
        (429, "reorder buffer full\n".into()),
    );
    assert_eq!(
        push(&mut ctl, &token, "seq=100", &body[..10]).await,
        (200, "ack=0".into())
    );
    assert_eq!(
        push(&mut ctl, &token, "seq=200", &body[..10]).await,
        (429, "reorder buffer full\n".into()),
        "2 KiB hold one body of 10 and its bookkeeping, not two"
    );

    // Over maxPushBody: 413, nothing taken, the tunnel lives on.
    assert_eq!(
        push(&mut ctl, &token, "seq=0", &random_bytes(5000, 1)).await,
        (413, "push body too large\n".into())
    );
    // Filling the gap delivers the held body after it.
    assert_eq!(
        push(&mut ctl, &token, "seq=0", &body).await,
        (200, "ack=110".into())
    );
    let mut got = Vec::new();
    pull.read_data(&mut got, 110).await;
    assert_eq!(&got[..100], &body[..]);
    assert_eq!(&got[100..], &body[..10]);
    // Room again: the refused body is taken now.
    assert_eq!(
        push(&mut ctl, &token, "seq=200", &body[..10]).await,
        (200, "ack=110".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_body_that_stops_coming_is_answered_and_its_connection_freed() {
    // It used to hold its connection, and a slot under maxConns, for as long as the
    // client kept it open: headerTimeout bounded only the head.
    let target = echo_target().await;
    let (_srv, sp) = start(target, "headerTimeout=1s").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let mut pull = Pull::open(sp, &token, 0, "").await;
    let mut stalled = RawConn::connect(sp).await;
    stalled
        .write_raw(
            format!(
                "POST /push?token={token}&v=2&seq=0 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"
            )
            .as_bytes(),
        )
        .await;
    let started = std::time::Instant::now();
    let head = tokio::time::timeout(T, stalled.head())
        .await
        .expect("a stalled body is never answered")
        .expect("answered, not just closed");
    assert_eq!(head.status, 408);
    assert_eq!(stalled.body(&head).await, b"push body stalled\n");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    assert!(stalled.head().await.is_none(), "the connection is closed");
    // Nothing of it was taken: the tunnel goes on from offset 0 (on a new connection:
    // headerTimeout closed the idle one meanwhile).
    let mut ctl = RawConn::connect(sp).await;
    assert_eq!(
        push(&mut ctl, &token, "seq=0", b"hello").await,
        (200, "ack=5".into())
    );
    let mut got = Vec::new();
    pull.read_data(&mut got, 5).await;
    assert_eq!(got, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_outside_the_window_resets_the_tunnel() {
    let (target, ended) = recording_target().await;
    let (_srv, sp) = start(target, "").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let mut pull = Pull::open(sp, &token, 0, "").await;
    assert_eq!(
        push(&mut ctl, &token, "seq=0", b"abc").await,
        (200, "ack=3".into())
    );
    let mut echo = Vec::new();
    pull.read_data(&mut echo, 3).await;
    // Three download bytes were sent: an ack of 4 claims one the server never had.
    assert_eq!(
        push(&mut ctl, &token, "seq=3&ack=4", b"").await,
        (410, "ack outside the replay window\n".into())
    );
    match pull.signal().await {
        Some(Frame::Reset { code, .. }) => assert_eq!(code, ResetCode::Other as u8),
        other => panic!("expected RESET, got {other:?}"),
    }
    assert_eq!(
        pull.finish().await,
        (vec![], true),
        "RESET, then a clean end"
    );
    let (got, end) = tokio::time::timeout(T, ended).await.unwrap().unwrap();
    assert_eq!(
        (got.as_slice(), end),
        (&b"abc"[..], Err(ErrorKind::ConnectionReset))
    );
    let mut again = RawConn::connect(sp).await;
    assert_eq!(
        again
            .exchange_get(&format!("/pull?token={token}&v=2&ack=0"))
            .await,
        (410, b"tunnel was reset\n".to_vec())
    );
    assert_eq!(
        push(&mut ctl, &token, "seq=3", b"d").await,
        (410, "tunnel was reset\n".into())
    );

    // The same from a pull's ack, on a fresh tunnel.
    let token = authorize_v2(&mut ctl).await;
    let (s, body) = ctl
        .exchange_get(&format!("/pull?token={token}&v=2&ack=5"))
        .await;
    assert_eq!(
        (s, body.as_slice()),
        (410, &b"ack outside the replay window\n"[..])
    );
    let (s, body) = ctl
        .exchange_get(&format!("/pull?token={token}&v=2&ack=0"))
        .await;
    assert_eq!((s, body.as_slice()), (410, &b"tunnel was reset\n"[..]));
    let (s, body) = ctl.exchange_get(&format!("/pull?token={token}&v=2")).await;
    assert_eq!((s, body.as_slice()), (400, &b"missing or bad ack\n"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fin_half_closes_and_the_answer_comes_after_it() {
    // A target that answers only once its read side has ended.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&sha256(&got)).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let (_srv, sp) = start(target, "maxTunnels=1").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let mut pull = Pull::open(sp, &token, 0, "").await;
    let payload = random_bytes(300_000, 8);
    assert_eq!(
        push(&mut ctl, &token, "seq=0", &payload[..200_000]).await,
        (200, "ack=200000".into())
    );
    let quiet = tokio::time::timeout(Duration::from_millis(200), pull.signal()).await;
    assert!(quiet.is_err(), "no answer before the end: {quiet:?}");
    assert_eq!(
        push(&mut ctl, &token, "seq=200000&fin=1", &payload[200_000..]).await,
        (200, "ack=300000".into())
    );
    let mut answer = Vec::new();
    pull.read_data(&mut answer, 32).await;
    assert_eq!(
        answer,
        sha256(&payload),
        "the target saw every byte, then EOF"
    );
    assert_eq!(pull.signal().await, Some(Frame::Fin(32)));
    // Sent again (its answer was lost): harmless.
    assert_eq!(
        push(&mut ctl, &token, "seq=200000&fin=1", &payload[200_000..]).await,
        (200, "ack=300000".into())
    );
    assert_eq!(
        push(&mut ctl, &token, "seq=300000", b"more").await,
        (400, "push beyond the upload's end\n".into())
    );
    assert_eq!(
        push(&mut ctl, &token, "seq=300000&ack=32&close=1", b"").await,
        (200, "ack=300000".into())
    );
    assert_eq!(
        pull.finish().await,
        (vec![], true),
        "a close ends the pull cleanly"
    );
    let (s, body) = ctl
        .exchange_get(&format!("/pull?token={token}&v=2&ack=32"))
        .await;
    assert_eq!((s, body.as_slice()), (410, &b"tunnel closed\n"[..]));
    // The tunnel gave its share of maxTunnels back.
    let (s, _) = ctl.exchange_get("/authorize?v=2").await;
    assert_eq!(s, 200, "the closed tunnel no longer counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delivers_then_ends_cleanly_and_rst_resets() {
    let (target, ended) = recording_target().await;
    let (_srv, sp) = start(target, "maxTunnels=1").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let pull = Pull::open(sp, &token, 0, "").await;
    assert_eq!(
        push(&mut ctl, &token, "seq=0", b"good").await,
        (200, "ack=4".into())
    );
    assert_eq!(
        push(&mut ctl, &token, "seq=4&close=1", b"bye").await,
        (200, "ack=7".into())
    );
    let (got, end) = tokio::time::timeout(T, ended).await.unwrap().unwrap();
    assert_eq!((got.as_slice(), end), (&b"goodbye"[..], Ok(())));
    // The echo may come before the end; no RESET does, and the end is clean.
    let (rest, clean) = pull.finish().await;
    assert!(clean, "a close ends the pull cleanly");
    let mut echo = Vec::new();
    for f in rest {
        match f {
            Frame::Data { offset, data } => take_data(&mut echo, offset, &data),
            other => panic!("a close ends the pull without {other:?}"),
        }
    }
    assert!(b"goodbye".starts_with(&echo));
    assert_eq!(
        push(&mut ctl, &token, "seq=7", b"late").await,
        (410, "tunnel closed\n".into())
    );

    // rst=1: the target is reset, the pull gets RESET, the token stays reset.
    let (target, ended) = recording_target().await;
    let (_srv2, sp) = start(target, "maxTunnels=1").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let mut pull = Pull::open(sp, &token, 0, "").await;
    assert_eq!(
        push(&mut ctl, &token, "seq=0", b"x").await,
        (200, "ack=1".into())
    );
    let mut echo = Vec::new();
    pull.read_data(&mut echo, 1).await;
    assert_eq!(
        push(&mut ctl, &token, "seq=1&rst=1", b"").await,
        (200, "ack=1".into())
    );
    match pull.signal().await {
        Some(Frame::Reset { code, reason }) => {
            assert_eq!(code, ResetCode::ClientReset as u8);
            assert_eq!(reason, "reset by client");
        }
        other => panic!("expected RESET, got {other:?}"),
    }
    assert_eq!(pull.finish().await, (vec![], true));
    let (got, end) = tokio::time::timeout(T, ended).await.unwrap().unwrap();
    assert_eq!(
        (got.as_slice(), end),
        (&b"x"[..], Err(ErrorKind::ConnectionReset))
    );
    let (s, body) = ctl
        .exchange_get(&format!("/pull?token={token}&v=2&ack=0"))
        .await;
    assert_eq!((s, body.as_slice()), (410, &b"tunnel was reset\n"[..]));
    let (s, _) = ctl.exchange_get("/authorize?v=2").await;
    assert_eq!(s, 200, "the reset tunnel no longer counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_waits_then_ends_with_end() {
    let target = echo_target().await;
    let (_srv, sp) = start(target, "pollWait=1500ms").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;

    let start = Instant::now();
    let mut poll = Pull::open(sp, &token, 0, "&poll=1").await;
    assert_eq!(poll.signal().await, Some(Frame::End), "nothing came");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(8),
        "waited {waited:?}"
    );
    assert_eq!(poll.finish().await, (vec![], true));

    assert_eq!(
        push(&mut ctl, &token, "seq=0", b"ping").await,
        (200, "ack=4".into())
    );
    // Data ready: it comes at once, then END.
    let start = Instant::now();
    let mut poll = Pull::open(sp, &token, 0, "&poll=1").await;
    let mut got = Vec::new();
    poll.read_data(&mut got, 4).await;
    assert_eq!(got, b"ping");
    assert_eq!(poll.signal().await, Some(Frame::End));
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "no wait with data ready"
    );
    assert_eq!(poll.finish().await, (vec![], true));
    // Data that comes during the wait ends it early.
    let mut poll = Pull::open(sp, &token, 4, "&poll=1").await;
    assert_eq!(
        push(&mut ctl, &token, "seq=4", b"pong").await,
        (200, "ack=8".into())
    );
    poll.read_data(&mut got, 8).await;
    assert_eq!(got, b"pingpong");
    assert_eq!(poll.signal().await, Some(Frame::End));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_pull_replaces_the_older_one() {
    let target = echo_target().await;
    let (_srv, sp) = start(target, "").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let mut first = Pull::open(sp, &token, 0, "").await;
    let mut second = Pull::open(sp, &token, 0, "").await;
    assert_eq!(first.rest().await, vec![Frame::End], "no 409 in PHT/2");
    assert_eq!(
        push(&mut ctl, &token, "seq=0", b"to the second").await,
        (200, "ack=13".into())
    );
    let mut got = Vec::new();
    second.read_data(&mut got, 13).await;
    assert_eq!(got, b"to the second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_without_a_pull_is_reset_after_the_grace() {
    let (target, ended) = recording_target().await;
    let (_srv, sp) = start(target, "resumeGrace=1s&heartbeat=2s").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let pull = Pull::open(sp, &token, 0, "").await;
    assert_eq!(
        push(&mut ctl, &token, "seq=0", b"hi").await,
        (200, "ack=2".into())
    );
    // A pull that breaks does not end the tunnel: the next one within the grace works.
    drop(pull);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pull = Pull::open(sp, &token, 0, "").await;
    assert_eq!(
        push(&mut ctl, &token, "seq=2", b"!").await,
        (200, "ack=3".into())
    );
    drop(pull);
    let cut = Instant::now();
    let (got, end) = tokio::time::timeout(T, ended)
        .await
        .expect("not reset after the grace")
        .unwrap();
    assert!(
        cut.elapsed() >= Duration::from_millis(900),
        "reset after {:?}, before the grace was over",
        cut.elapsed()
    );
    assert_eq!(
        (got.as_slice(), end),
        (&b"hi!"[..], Err(ErrorKind::ConnectionReset))
    );
    let (s, body) = ctl
        .exchange_get(&format!("/pull?token={token}&v=2&ack=0"))
        .await;
    assert_eq!((s, body.as_slice()), (410, &b"tunnel was reset\n"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pht1_beside_pht2_on_one_server() {
    let target = echo_target().await;
    let (_srv, sp) = start(target, "").await;
    let mut ctl = RawConn::connect(sp).await;
    let v2_token = authorize_v2(&mut ctl).await;
    let mut v2_pull = Pull::open(sp, &v2_token, 0, "").await;

    // A PHT/1 tunnel, exactly as gost's client speaks it.
    let (s, body) = ctl.exchange_get("/authorize").await;
    assert_eq!(s, 200);
    let body = String::from_utf8(body).unwrap();
    let v1_token = body.strip_prefix("token=").unwrap().to_string();
    assert_eq!(v1_token.len(), 22);
    let mut v1_pull = RawConn::connect(sp).await;
    v1_pull.go_get(&format!("/pull?token={v1_token}")).await;
    let head = tokio::time::timeout(T, v1_pull.head())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), None, "PHT/1 pulls as before");
    let mut line = STANDARD.encode(b"one").into_bytes();
    line.push(b'\n');
    let (s, b) = ctl
        .exchange_post(&format!("/push?token={v1_token}"), &line)
        .await;
    assert_eq!((s, b.len()), (200, 0), "PHT/1 push: 200, empty");
    let chunk = tokio::time::timeout(T, v1_pull.chunk())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(chunk, b"b25l\n");

    // Each tunnel keeps the version it started with.
    let (s, b) = ctl
        .exchange_post(&format!("/push?token={v2_token}"), &line)
        .await;
    assert_eq!((s, b.as_slice()), (400, &b"version mismatch\n"[..]));
    assert_eq!(
        push(&mut ctl, &v1_token, "seq=0", b"two").await,
        (400, "version mismatch\n".into())
    );
    let (s, b) = ctl
        .exchange_get(&format!("/pull?token={v1_token}&v=2&ack=0"))
        .await;
    assert_eq!((s, b.as_slice()), (400, &b"version mismatch\n"[..]));
    let (s, b) = ctl.exchange_get(&format!("/pull?token={v2_token}")).await;
    assert_eq!((s, b.as_slice()), (400, &b"version mismatch\n"[..]));

    // Both still work, and a PHT/1 close ends its pull as gost expects.
    assert_eq!(
        push(&mut ctl, &v2_token, "seq=0", b"three").await,
        (200, "ack=5".into())
    );
    let mut got = Vec::new();
    v2_pull.read_data(&mut got, 5).await;
    assert_eq!(got, b"three");
    let (s, _) = ctl
        .exchange_post(&format!("/push?token={v1_token}"), b"")
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        tokio::time::timeout(T, v1_pull.chunk()).await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_reset_before_the_server_exits() {
    let target = echo_target().await;
    let (mut srv, sp) = start(target, "").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let mut pull = Pull::open(sp, &token, 0, "").await;
    assert_eq!(
        push(&mut ctl, &token, "seq=0", b"last").await,
        (200, "ack=4".into())
    );
    let mut got = Vec::new();
    pull.read_data(&mut got, 4).await;
    let status = tokio::task::spawn_blocking(move || srv.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    // A dropped connection would read as resumable: the client must be told.
    match pull.signal().await {
        Some(Frame::Reset { code, .. }) => assert_eq!(code, ResetCode::ShuttingDown as u8),
        other => panic!("expected RESET before the exit, got {other:?}"),
    }
    assert_eq!(pull.signal().await, None);
}

/// A push whose connection dies while the server is still handing its bytes to a slow
/// target: the body was taken whole, so its bytes count as received and the same push
/// sent again is a duplicate. Every byte must still reach the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_cut_while_its_bytes_wait_for_the_target_still_delivers_them_all() {
    const N: usize = 8 * 1024 * 1024;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let got = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        // A slow reader: the server's buffer to it fills while the push is delivered.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.map(|_| got)
    });
    // The retry must wait for the cut push's delivery, not be refused with 429 first.
    let (_srv, sp) = start(target, "pushWait=10s").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let _pull = Pull::open(sp, &token, 0, "").await;
    let data = random_bytes(N, 77);
    {
        let mut doomed = RawConn::connect(sp).await;
        doomed
            .go_post(&format!("/push?token={token}&v=2&seq=0"), &data)
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The connection dies with the answer still pending.
        doomed.reset();
    }
    let mut again = RawConn::connect(sp).await;
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(30),
        again.exchange_post(&format!("/push?token={token}&v=2&seq=0"), &data),
    )
    .await
    .expect("the retried push stalled");
    assert_eq!(
        (status, String::from_utf8(body).unwrap()),
        (200, format!("ack={N}"))
    );
    assert_eq!(
        push(&mut ctl, &token, &format!("seq={N}&fin=1"), b"").await,
        (200, format!("ack={N}"))
    );
    let got = tokio::time::timeout(Duration::from_secs(30), got)
        .await
        .expect("the target never saw the end")
        .unwrap()
        .expect("the target's read failed");
    assert_eq!(got.len(), N, "bytes delivered to the target");
    assert!(got == data, "the target got other bytes");
}

/// A target that reads nothing for a while (a full window): the push's answer waits
/// `pushWait`, then comes with what the handler has taken; the next push is refused with
/// `429` and nothing of it taken; the pull announces the count once the target has read,
/// and then pushes are taken again. Nothing resets the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_does_not_read_gets_early_answers_then_429_and_no_reset() {
    // More than the handler's queue and the socket buffers to the target hold.
    const N: usize = 32 * 1024 * 1024;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let (reading_tx, reading) = oneshot::channel();
    let got = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = reading_tx.send(std::time::Instant::now());
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.map(|_| got)
    });
    let (_srv, sp) = start(target, "pushWait=300ms&pushTimeout=1s&maxPushBody=32MiB").await;
    let mut ctl = RawConn::connect(sp).await;
    let token = authorize_v2(&mut ctl).await;
    let mut pull = Pull::open(sp, &token, 0, "").await;
    let data = random_bytes(N, 78);
    let t0 = std::time::Instant::now();
    assert_eq!(
        push(&mut ctl, &token, "seq=0", &data).await,
        (200, "ack=0".into()),
        "answered with the count taken so far"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2500),
        "the first answer came after {took:?}"
    );
    let tail = b"tail";
    assert_eq!(
        push(&mut ctl, &token, &format!("seq={N}"), tail).await,
        (
            429,
            "the target is not reading: earlier bytes are still being delivered\n".into()
        )
    );
    // Past pushTimeout, which PHT/2 does not apply: once the target reads, the pull
    // announces every byte of the first push.
    loop {
        match pull.raw_frame().await {
            Some(Frame::Ack(n)) if n == N as u64 => break,
            Some(Frame::Ping | Frame::Ack(_)) => {}
            other => panic!("expected ACK {N}, got {other:?}"),
        }
    }
    let acked = std::time::Instant::now();
    let started = reading.await.expect("the target never started reading");
    assert!(acked > started, "acknowledged before the target read");
    let end = N + tail.len();
    assert_eq!(
        push(&mut ctl, &token, &format!("seq={N}&fin=1"), tail).await,
        (200, format!("ack={end}"))
    );
    let got = tokio::time::timeout(Duration::from_secs(30), got)
        .await
        .expect("the target never saw the end")
        .unwrap()
        .expect("the target's read failed");
    assert_eq!(got.len(), end, "bytes delivered to the target");
    assert!(
        got[..N] == data[..] && &got[N..] == tail,
        "the target got other bytes"
    );
}
