//! The tunnel state machine under a scripted fetch and a manual clock: every way a tunnel
//! can end, without sockets or a runtime.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::executor::LocalPool;
use futures::io::ReadHalf;
use futures::task::LocalSpawnExt;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};

use super::*;
use crate::{FetchError, FetchResponse, TunnelConfig, decode_push_body};

// ---------------------------------------------------------------- manual clock

#[derive(Clone, Default)]
struct ManualClock(Arc<Mutex<ClockState>>);

#[derive(Default)]
struct ClockState {
    now: Duration,
    sleepers: Vec<Waker>,
}

impl ManualClock {
    fn advance(&self, d: Duration) {
        let wakers = {
            let mut st = self.0.lock().unwrap();
            st.now += d;
            std::mem::take(&mut st.sleepers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

struct ManualSleep {
    clock: ManualClock,
    until: Duration,
}

impl Future for ManualSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.clock.0.lock().unwrap();
        if st.now >= self.until {
            Poll::Ready(())
        } else {
            st.sleepers.push(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Clock for ManualClock {
    type Sleep = ManualSleep;
    fn now(&self) -> Duration {
        self.0.lock().unwrap().now
    }
    fn sleep(&self, d: Duration) -> ManualSleep {
        ManualSleep {
            clock: self.clone(),
            until: self.now() + d,
        }
    }
}

// ---------------------------------------------------------------- scripted fetch

type Body = mpsc::UnboundedReceiver<Result<Bytes, FetchError>>;

/// How the script answers one request.
enum Answer {
    /// Status and, for a GET, the body's sender (the test feeds chunks through it).
    Get(u16, Body),
    /// A PHT/2 pull (labelled as one).
    GetV2(Body),
    Post(u16),
    /// A POST answered with a body (PHT/2's `ack=`).
    PostBody(u16, &'static str),
    /// Fails below HTTP.
    Fail(&'static str),
    /// Never answers (the deadline must fire).
    Hang,
    /// A POST answered when the test sends its answer.
    PostLater(futures::channel::oneshot::Receiver<(u16, &'static str)>),
}

#[derive(Clone, Default)]
struct Script(Arc<Mutex<ScriptState>>);

#[derive(Default)]
struct ScriptState {
    gets: VecDeque<Answer>,
    posts: VecDeque<Answer>,
    /// Every POST as (url, decoded payload or "" for an empty body).
    posted: Vec<(String, Vec<u8>)>,
    got: Vec<String>,
}

impl Script {
    fn get(&self, a: Answer) {
        self.0.lock().unwrap().gets.push_back(a);
    }
    fn post(&self, a: Answer) {
        self.0.lock().unwrap().posts.push_back(a);
    }
    /// A pull whose body the test writes: returns the sender.
    fn pull(&self) -> mpsc::UnboundedSender<Result<Bytes, FetchError>> {
        let (tx, rx) = mpsc::unbounded();
        self.get(Answer::Get(200, rx));
        tx
    }
    fn posted(&self) -> Vec<(String, Vec<u8>)> {
        self.0.lock().unwrap().posted.clone()
    }
}

impl Fetch for Script {
    type Body = Body;

    fn get(
        &self,
        url: &str,
        _: &[(String, String)],
    ) -> impl Future<Output = Result<FetchResponse<Body>, FetchError>> + Send {
        let answer = {
            let mut st = self.0.lock().unwrap();
            st.got.push(url.to_string());
            st.gets.pop_front()
        };
        async move {
            match answer {
                Some(Answer::Get(status, body)) => Ok(FetchResponse {
                    status,
                    content_type: None,
                    body,
                }),
                Some(Answer::GetV2(body)) => Ok(FetchResponse {
                    status: 200,
                    content_type: Some("application/octet-stream".into()),
                    body,
                }),
                Some(Answer::Fail(m)) => Err(FetchError(m.into())),
                Some(Answer::Hang) | None => futures::future::pending().await,
                Some(Answer::Post(_) | Answer::PostBody(..) | Answer::PostLater(_)) => {
                    panic!("script: POST answer for a GET")
                }
            }
        }
    }

    fn post(
        &self,
        url: &str,
        _: &[(String, String)],
        body: crate::PostBody,
    ) -> impl Future<Output = Result<(u16, Bytes), FetchError>> + Send {
        let body = body.to_bytes();
        let answer = {
            let mut st = self.0.lock().unwrap();
            let payload = if body.is_empty() {
                Vec::new()
            } else if url.contains("&v=2") {
                body.to_vec()
            } else {
                decode_push_body(&body)
                    .expect("client sent valid base64")
                    .unwrap_or_default()
            };
            st.posted.push((url.to_string(), payload));
            // An empty POST (close or reset) is answered 200 unless scripted.
            if body.is_empty() {
                st.posts.pop_front().or(Some(Answer::Post(200)))
            } else {
                st.posts.pop_front()
            }
        };
        async move {
            match answer {
                Some(Answer::Post(status)) => Ok((status, Bytes::new())),
                Some(Answer::PostBody(status, b)) => Ok((status, Bytes::from_static(b.as_bytes()))),
                Some(Answer::PostLater(rx)) => match rx.await {
                    Ok((status, b)) => Ok((status, Bytes::from_static(b.as_bytes()))),
                    Err(_) => futures::future::pending().await,
                },
                Some(Answer::Fail(m)) => Err(FetchError(m.into())),
                Some(Answer::Hang) | None => futures::future::pending().await,
                Some(Answer::Get(..) | Answer::GetV2(_)) => panic!("script: GET answer for a POST"),
            }
        }
    }
}

// ---------------------------------------------------------------- harness

fn config() -> TunnelConfig {
    let mut c = TunnelConfig::new("http://srv:1");
    c.token_mode = TokenMode::Mint;
    c.request_timeout = Duration::from_secs(30);
    c.heartbeat_timeout = Duration::from_secs(30);
    c
}

struct Rig {
    pool: LocalPool,
    script: Script,
    clock: ManualClock,
}

impl Rig {
    fn new() -> Self {
        Rig {
            pool: LocalPool::new(),
            script: Script::default(),
            clock: ManualClock::default(),
        }
    }

    /// Opens a tunnel (the script must already answer what `open` asks) and spawns its
    /// driver on the pool.
    fn open(&mut self, cfg: TunnelConfig) -> Tunnel {
        let Ok((t, driver)) =
            self.pool
                .run_until(open(self.script.clone(), self.clock.clone(), cfg))
        else {
            panic!("open failed")
        };
        self.pool.spawner().spawn_local(driver).unwrap();
        self.pool.run_until_stalled();
        t
    }

    /// Runs `fut` as far as it goes without time passing; `None` if it is still waiting.
    fn try_run<T: 'static>(
        &mut self,
        fut: impl Future<Output = T> + 'static,
    ) -> Rc<RefCell<Option<T>>> {
        let out = Rc::new(RefCell::new(None));
        let o = out.clone();
        self.pool
            .spawner()
            .spawn_local(fut.map(move |v| *o.borrow_mut() = Some(v)))
            .unwrap();
        self.pool.run_until_stalled();
        out
    }

    fn advance(&mut self, d: Duration) {
        self.clock.advance(d);
        self.pool.run_until_stalled();
    }
}

use std::cell::RefCell;
use std::rc::Rc;

fn line(data: &[u8]) -> Result<Bytes, FetchError> {
    let mut v = Vec::new();
    crate::encode_pull_line(data, &mut v);
    Ok(Bytes::from(v))
}

/// Reads to the end: the bytes and how it ended.
async fn read_all(mut t: ReadHalf<Tunnel>) -> (Vec<u8>, io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match t.read(&mut buf).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn a_clean_end_is_eof_after_every_byte() {
    let mut rig = Rig::new();
    let pull = rig.script.pull();
    let (t, _tw) = rig.open(config()).split();
    pull.unbounded_send(line(b"hello ")).unwrap();
    pull.unbounded_send(line(b"world")).unwrap();
    drop(pull);
    let out = rig.try_run(read_all(t));
    let (got, end) = out.borrow_mut().take().expect("read finished");
    assert_eq!(got, b"hello world");
    assert!(end.is_ok(), "clean end: {end:?}");
    assert!(
        !rig.script.posted().iter().any(|(u, _)| u.contains("rst=1")),
        "no reset request after a clean end"
    );
}

#[test]
fn a_broken_pull_is_an_error_after_the_bytes_that_arrived_and_resets_the_server_side() {
    let mut rig = Rig::new();
    let pull = rig.script.pull();
    let (t, tw) = rig.open(config()).split();
    pull.unbounded_send(line(b"part")).unwrap();
    pull.unbounded_send(Err(FetchError("connection reset".into())))
        .unwrap();
    let out = rig.try_run(read_all(t));
    let (got, end) = out.borrow_mut().take().expect("read finished");
    assert_eq!(got, b"part");
    let e = end.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(e.to_string(), "pull request failed: connection reset");
    let posted = rig.script.posted();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert!(posted[0].0.ends_with("&rst=1"), "{}", posted[0].0);
    // Writes fail the same way.
    let w = rig.try_run(async move {
        let mut tw = tw;
        tw.write(b"x").await
    });
    assert_eq!(
        w.borrow_mut().take().unwrap().unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
}

#[test]
fn a_pull_truncated_mid_line_is_an_error() {
    let mut rig = Rig::new();
    let pull = rig.script.pull();
    let (t, _tw) = rig.open(config()).split();
    pull.unbounded_send(Ok(Bytes::from_static(b"aGVsbG8")))
        .unwrap();
    drop(pull);
    let out = rig.try_run(read_all(t));
    let (got, end) = out.borrow_mut().take().unwrap();
    assert!(got.is_empty());
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidData);
}

#[test]
fn silence_past_the_heartbeat_timeout_kills_the_tunnel_and_heartbeats_keep_it_alive() {
    let mut rig = Rig::new();
    let pull = rig.script.pull();
    let (t, _tw) = rig.open(config()).split();
    let out = rig.try_run(read_all(t));
    rig.advance(Duration::from_secs(29));
    pull.unbounded_send(Ok(Bytes::from_static(b"\n"))).unwrap();
    rig.pool.run_until_stalled();
    rig.advance(Duration::from_secs(29));
    pull.unbounded_send(line(b"late")).unwrap();
    rig.pool.run_until_stalled();
    rig.advance(Duration::from_secs(29));
    assert!(out.borrow().is_none(), "alive while lines keep coming");
    rig.advance(Duration::from_secs(2));
    let (got, end) = out.borrow_mut().take().expect("dead after 30 s of silence");
    assert_eq!(got, b"late");
    let e = end.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(
        e.to_string(),
        "no data or heartbeat from the server for 30s (heartbeatTimeout)"
    );
    assert!(rig.script.posted()[0].0.ends_with("&rst=1"));
}

#[test]
fn a_slow_reader_is_not_mistaken_for_a_silent_server() {
    let mut rig = Rig::new();
    let pull = rig.script.pull();
    let mut cfg = config();
    cfg.recv_buffer = 4;
    let (t, _tw) = rig.open(cfg).split();
    pull.unbounded_send(line(b"12345678")).unwrap();
    rig.pool.run_until_stalled();
    // Nobody reads for a minute: the pull is held back, not dead.
    rig.advance(Duration::from_secs(60));
    drop(pull);
    let out = rig.try_run(read_all(t));
    let (got, end) = out.borrow_mut().take().unwrap();
    assert_eq!(got, b"12345678");
    assert!(end.is_ok(), "{end:?}");
}

#[test]
fn an_old_gost_long_poll_that_ends_after_a_heartbeat_is_pulled_again() {
    let mut rig = Rig::new();
    let first = rig.script.pull();
    let second = rig.script.pull();
    let (t, _tw) = rig.open(config()).split();
    first.unbounded_send(line(b"a")).unwrap();
    first.unbounded_send(Ok(Bytes::from_static(b"\n"))).unwrap();
    drop(first);
    second.unbounded_send(line(b"b")).unwrap();
    drop(second);
    let out = rig.try_run(read_all(t));
    let (got, end) = out.borrow_mut().take().unwrap();
    assert_eq!(got, b"ab");
    assert!(end.is_ok());
    assert_eq!(rig.script.0.lock().unwrap().got.len(), 2);
}

#[test]
fn a_refused_pull_is_an_error() {
    let mut rig = Rig::new();
    let (_tx, rx) = mpsc::unbounded();
    rig.script.get(Answer::Get(403, rx));
    let (t, _tw) = rig.open(config()).split();
    let out = rig.try_run(read_all(t));
    let (_, end) = out.borrow_mut().take().unwrap();
    let e = end.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    assert!(
        e.to_string()
            .starts_with("pull refused by server: HTTP 403")
    );
}

#[test]
fn pull_headers_have_a_deadline() {
    let mut rig = Rig::new();
    rig.script.get(Answer::Hang);
    let (t, _tw) = rig.open(config()).split();
    let out = rig.try_run(read_all(t));
    rig.advance(Duration::from_secs(29));
    assert!(out.borrow().is_none());
    rig.advance(Duration::from_secs(1));
    let (_, end) = out.borrow_mut().take().unwrap();
    assert_eq!(
        end.unwrap_err().to_string(),
        "pull request timed out after 30s (requestTimeout)"
    );
}

#[test]
fn authorize_has_a_deadline() {
    let mut rig = Rig::new();
    rig.script.get(Answer::Hang);
    let mut cfg = config();
    cfg.token_mode = TokenMode::Authorize;
    let opened = rig.try_run(open(rig.script.clone(), rig.clock.clone(), cfg));
    rig.advance(Duration::from_secs(30));
    let Some(Err(e)) = opened.borrow_mut().take() else {
        panic!("open did not fail")
    };
    assert_eq!(
        e.to_string(),
        "authorize request timed out after 30s (requestTimeout)"
    );
}

#[test]
fn a_push_without_answer_times_out_and_fails_writes_and_reads() {
    let mut rig = Rig::new();
    let _pull = rig.script.pull();
    rig.script.post(Answer::Hang);
    let (t, tw) = rig.open(config()).split();
    let flushed = rig.try_run(async move {
        let mut t = tw;
        t.write_all(b"data").await?;
        t.flush().await
    });
    rig.advance(Duration::from_secs(31));
    let e = flushed.borrow_mut().take().unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(
        e.to_string(),
        "push request timed out after 30s (requestTimeout)"
    );
    let out = rig.try_run(read_all(t));
    assert!(out.borrow_mut().take().unwrap().1.is_err());
    let posted = rig.script.posted();
    assert!(posted.last().unwrap().0.ends_with("&rst=1"), "{posted:?}");
}

#[test]
fn a_413_halves_the_push_and_resends_the_same_bytes() {
    let mut rig = Rig::new();
    let _pull = rig.script.pull();
    let mut cfg = config();
    cfg.max_push_payload = 64 * 1024;
    cfg.min_push_payload = 8 * 1024;
    rig.script.post(Answer::Post(413));
    rig.script.post(Answer::Post(413));
    for _ in 0..20 {
        rig.script.post(Answer::Post(200));
    }
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (_t, tw) = rig.open(cfg).split();
    let d = data.clone();
    let done = rig.try_run(async move {
        let mut t = tw;
        t.write_all(&d).await?;
        t.flush().await
    });
    done.borrow_mut().take().unwrap().unwrap();
    let posted = rig.script.posted();
    let sizes: Vec<usize> = posted.iter().map(|(_, p)| p.len()).collect();
    assert_eq!(&sizes[..2], &[64 * 1024, 32 * 1024], "refused: {sizes:?}");
    assert!(sizes[2..].iter().all(|&n| n <= 16 * 1024), "{sizes:?}");
    // What the server took (the 200s) is the data, once, in order.
    let taken: Vec<u8> = posted[2..].iter().flat_map(|(_, p)| p.clone()).collect();
    assert_eq!(taken, data);
}

#[test]
fn a_413_at_the_floor_is_an_error() {
    let mut rig = Rig::new();
    let _pull = rig.script.pull();
    let mut cfg = config();
    cfg.max_push_payload = 16 * 1024;
    cfg.min_push_payload = 16 * 1024;
    rig.script.post(Answer::Post(413));
    let (_t, tw) = rig.open(cfg).split();
    let done = rig.try_run(async move {
        let mut t = tw;
        t.write_all(b"too big anyway").await?;
        t.flush().await
    });
    let e = done.borrow_mut().take().unwrap().unwrap_err();
    assert!(
        e.to_string()
            .starts_with("push refused by server: HTTP 413")
    );
}

#[test]
fn a_push_refused_because_the_far_end_finished_still_delivers_its_last_words() {
    let mut rig = Rig::new();
    let pull = rig.script.pull();
    rig.script.post(Answer::Post(410));
    let (t, tw) = rig.open(config()).split();
    let _w = rig.try_run(async move {
        let mut t = tw;
        let _ = t.write_all(b"request").await;
        t.flush().await
    });
    // The refusal is on its way down while the push is refused.
    pull.unbounded_send(line(b"relay: 2 Unauthorized")).unwrap();
    drop(pull);
    let out = rig.try_run(read_all(t));
    let (got, end) = out.borrow_mut().take().unwrap();
    assert_eq!(got, b"relay: 2 Unauthorized");
    assert!(
        end.unwrap_err()
            .to_string()
            .starts_with("push refused by server: HTTP 410")
    );
    assert!(
        !rig.script.posted().iter().any(|(u, _)| u.contains("rst=1")),
        "the server already ended the tunnel: no reset request"
    );
}

#[test]
fn a_failed_push_below_http_is_an_error_for_the_reader_too() {
    let mut rig = Rig::new();
    let pull = rig.script.pull();
    rig.script.post(Answer::Fail("connection reset by peer"));
    let (t, tw) = rig.open(config()).split();
    let _w = rig.try_run(async move {
        let mut t = tw;
        let _ = t.write_all(b"x").await;
        t.flush().await
    });
    let out = rig.try_run(read_all(t));
    let (_, end) = out
        .borrow_mut()
        .take()
        .expect("ended without the pull ending");
    assert_eq!(
        end.unwrap_err().to_string(),
        "push request failed: connection reset by peer"
    );
    drop(pull);
}

#[test]
fn close_sends_the_close_request_and_reset_sends_the_reset_request() {
    let mut rig = Rig::new();
    let _pull = rig.script.pull();
    rig.script.post(Answer::Post(200));
    let t = rig.open(config());
    let closed = rig.try_run(async move {
        let mut t = t;
        t.write_all(b"bye").await?;
        t.close().await
    });
    closed.borrow_mut().take().unwrap().unwrap();
    let posted = rig.script.posted();
    assert_eq!(posted.len(), 2);
    assert_eq!(posted[0].1, b"bye");
    assert!(posted[1].1.is_empty() && !posted[1].0.contains("rst=1"));

    let mut rig = Rig::new();
    let pull = rig.script.pull();
    let t = rig.open(config());
    t.reset();
    rig.pool.run_until_stalled();
    let posted = rig.script.posted();
    assert_eq!(posted.len(), 1);
    assert!(posted[0].0.ends_with("&rst=1"));
    assert!(pull.is_closed(), "the pull was cancelled");
    let (t, _tw) = t.split();
    let out = rig.try_run(read_all(t));
    assert_eq!(
        out.borrow_mut().take().unwrap().1.unwrap_err().kind(),
        io::ErrorKind::ConnectionAborted
    );
}

#[test]
fn a_reset_request_that_hangs_still_ends_the_driver() {
    let mut rig = Rig::new();
    let pull = rig.script.pull();
    rig.script.post(Answer::Hang);
    let Ok((t, driver)) = rig
        .pool
        .run_until(open(rig.script.clone(), rig.clock.clone(), config()))
    else {
        panic!("open failed")
    };
    let (done_tx, mut done_rx) = oneshot::channel();
    rig.pool
        .spawner()
        .spawn_local(driver.map(move |()| {
            let _ = done_tx.send(());
        }))
        .unwrap();
    rig.pool.run_until_stalled();
    drop(pull);
    t.reset();
    rig.pool.run_until_stalled();
    assert!(done_rx.try_recv().unwrap().is_none());
    rig.advance(Duration::from_secs(30));
    assert!(done_rx.try_recv().unwrap().is_some());
}

mod v2;
