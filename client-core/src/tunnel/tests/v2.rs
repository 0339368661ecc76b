//! PHT/2 under the scripted fetch: cut pulls resume from the ack, failed pushes are sent
//! again, and the ends (FIN, RESET, half-close) reach the application as they should.

use super::*;
use crate::Version;
use crate::frame::{ResetCode, kind, put_count, put_data, put_empty, put_reset};

/// Each test its own server name: which servers speak PHT/2 is remembered per process.
fn unique_base() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("http://v2-{}:1", N.fetch_add(1, Ordering::Relaxed))
}

fn v2_config() -> TunnelConfig {
    let mut c = config();
    c.base_url = unique_base();
    c.version = Version::V2;
    c
}

/// A PHT/2 pull whose body the test writes.
fn pull_v2(rig: &Rig) -> mpsc::UnboundedSender<Result<Bytes, FetchError>> {
    let (tx, rx) = mpsc::unbounded();
    rig.script.get(Answer::GetV2(rx));
    tx
}

fn frames(build: impl FnOnce(&mut Vec<u8>)) -> Result<Bytes, FetchError> {
    let mut v = Vec::new();
    build(&mut v);
    Ok(Bytes::from(v))
}

fn got_urls(rig: &Rig) -> Vec<String> {
    rig.script.0.lock().unwrap().got.clone()
}

#[test]
fn a_cut_pull_resumes_from_the_ack_and_duplicates_are_dropped() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let (t, _tw) = rig.open(v2_config()).split();
    p1.unbounded_send(frames(|v| {
        put_empty(v, kind::PING);
        put_data(v, 0, b"hello ");
    }))
    .unwrap();
    let out = rig.try_run(read_all(t));
    let p2 = pull_v2(&rig);
    p1.unbounded_send(Err(FetchError("connection reset".into())))
        .unwrap();
    rig.pool.run_until_stalled();
    // The first retry waits the shortest back-off.
    rig.advance(Duration::from_millis(50));
    let urls = got_urls(&rig);
    assert!(urls[0].ends_with("&v=2&ack=0"), "{urls:?}");
    assert!(urls[1].ends_with("&v=2&ack=6"), "{urls:?}");
    // The server resends from an older offset: only the new part counts.
    p2.unbounded_send(frames(|v| {
        put_empty(v, kind::PING);
        put_data(v, 3, b"lo world");
        put_count(v, kind::FIN, 11);
    }))
    .unwrap();
    rig.pool.run_until_stalled();
    let (got, end) = out.borrow_mut().take().expect("read finished");
    assert_eq!(got, b"hello world");
    assert!(end.is_ok(), "FIN is a clean end: {end:?}");
}

#[test]
fn a_gap_in_the_offsets_is_resumed_not_delivered() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let (t, _tw) = rig.open(v2_config()).split();
    let out = rig.try_run(read_all(t));
    let p2 = pull_v2(&rig);
    p1.unbounded_send(frames(|v| {
        put_empty(v, kind::PING);
        put_data(v, 4, b"late");
    }))
    .unwrap();
    rig.pool.run_until_stalled();
    rig.advance(Duration::from_millis(50));
    assert!(got_urls(&rig)[1].ends_with("&ack=0"));
    p2.unbounded_send(frames(|v| {
        put_data(v, 0, b"0123late");
        put_count(v, kind::FIN, 8);
    }))
    .unwrap();
    rig.pool.run_until_stalled();
    let (got, end) = out.borrow_mut().take().expect("read finished");
    assert_eq!(got, b"0123late");
    assert!(end.is_ok());
}

#[test]
fn a_failed_push_is_sent_again_with_the_same_offset() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let t = rig.open(v2_config());
    p1.unbounded_send(frames(|v| put_empty(v, kind::PING)))
        .unwrap();
    rig.script.post(Answer::Fail("connection reset"));
    rig.script.post(Answer::PostBody(200, "ack=3"));
    let (_tr, mut tw) = t.split();
    let flushed = rig.try_run(async move {
        tw.write_all(b"abc").await.unwrap();
        tw.flush().await.map(|()| tw)
    });
    assert!(flushed.borrow().is_none(), "not acknowledged yet");
    rig.advance(Duration::from_millis(50));
    assert!(flushed.borrow().as_ref().is_some_and(|r| r.is_ok()));
    let posted = rig.script.posted();
    assert_eq!(posted.len(), 2, "{posted:?}");
    for (url, body) in &posted {
        assert!(url.contains("&v=2&seq=0&ack=0"), "{url}");
        assert_eq!(body, b"abc");
    }
}

#[test]
fn a_reset_frame_is_an_error_after_the_bytes_before_it() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let (t, _tw) = rig.open(v2_config()).split();
    p1.unbounded_send(frames(|v| {
        put_empty(v, kind::PING);
        put_data(v, 0, b"partial");
        put_reset(v, ResetCode::TargetFailed, "the target connection failed");
    }))
    .unwrap();
    let out = rig.try_run(read_all(t));
    let (got, end) = out.borrow_mut().take().expect("read finished");
    assert_eq!(got, b"partial");
    let e = end.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(
        e.to_string(),
        "tunnel reset by the server: the target connection failed"
    );
}

#[test]
fn a_push_refused_with_410_reports_the_reset_that_follows_on_the_pull() {
    // The server resets the tunnel (its target failed): a push in flight gets 410 first,
    // and the RESET frame with the reason comes down the pull a moment later.
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let t = rig.open(v2_config());
    p1.unbounded_send(frames(|v| put_empty(v, kind::PING)))
        .unwrap();
    rig.script.post(Answer::PostBody(410, "tunnel was reset\n"));
    let (tr, mut tw) = t.split();
    let out = rig.try_run(read_all(tr));
    let _written = rig.try_run(async move { tw.write_all(b"abc").await });
    rig.pool.run_until_stalled();
    assert!(out.borrow().is_none(), "the reason is waited for");
    p1.unbounded_send(frames(|v| {
        put_reset(v, ResetCode::TargetFailed, "the target connection failed")
    }))
    .unwrap();
    rig.pool.run_until_stalled();
    let (_, end) = out.borrow_mut().take().expect("read finished");
    assert_eq!(
        end.unwrap_err().to_string(),
        "tunnel reset by the server: the target connection failed"
    );
}

#[test]
fn a_push_refused_with_410_and_no_reason_after_it_fails_as_refused() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let t = rig.open(v2_config());
    p1.unbounded_send(frames(|v| put_empty(v, kind::PING)))
        .unwrap();
    rig.script.post(Answer::PostBody(410, "tunnel closed\n"));
    let (tr, mut tw) = t.split();
    let out = rig.try_run(read_all(tr));
    let _written = rig.try_run(async move { tw.write_all(b"abc").await });
    rig.pool.run_until_stalled();
    assert!(out.borrow().is_none());
    // Half a second without a reason: the refusal itself is the error.
    rig.advance(Duration::from_millis(500));
    let (_, end) = out.borrow_mut().take().expect("read finished");
    assert_eq!(
        end.unwrap_err().to_string(),
        "push refused by server: HTTP 410 (tunnel is gone on the server)"
    );
}

#[test]
fn closing_the_writer_is_a_half_close_and_the_answer_still_arrives() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let (t, mut tw) = rig.open(v2_config()).split();
    p1.unbounded_send(frames(|v| put_empty(v, kind::PING)))
        .unwrap();
    rig.script.post(Answer::PostBody(200, "ack=5"));
    let closed = rig.try_run(async move {
        tw.write_all(b"query").await.unwrap();
        tw.close().await
    });
    assert!(closed.borrow_mut().take().unwrap().is_ok());
    let posted = rig.script.posted();
    assert_eq!(posted.len(), 1, "one POST carries the data and the fin");
    assert!(
        posted[0].0.ends_with("&seq=0&ack=0&fin=1"),
        "{}",
        posted[0].0
    );
    // The far end answers after the half-close, then ends.
    rig.script.post(Answer::PostBody(200, "ack=5"));
    p1.unbounded_send(frames(|v| {
        put_data(v, 0, b"answer");
        put_count(v, kind::FIN, 6);
    }))
    .unwrap();
    let out = rig.try_run(read_all(t));
    let (got, end) = out.borrow_mut().take().expect("read finished");
    assert_eq!(got, b"answer");
    assert!(end.is_ok());
    let posted = rig.script.posted();
    assert!(
        posted[1].0.ends_with("&seq=5&ack=6&fin=1&close=1"),
        "both ends done: the tunnel is closed: {posted:?}"
    );
}

/// Once the close is sent, the end of the pull response is the tunnel's end, whether it
/// comes before or after the close's answer: the response is read to its end, so that
/// its connection can serve the next tunnel, and no pull is sent again (it would find the
/// token gone). A pull that does not end is let go after `CLOSE_DRAIN`.
#[test]
fn after_the_close_the_pull_is_read_to_its_end_and_not_resumed() {
    #[derive(Debug, Clone, Copy)]
    enum PullEnds {
        AfterTheAnswer,
        BeforeTheAnswer,
        Never,
    }
    for case in [
        PullEnds::AfterTheAnswer,
        PullEnds::BeforeTheAnswer,
        PullEnds::Never,
    ] {
        let mut rig = Rig::new();
        let p1 = pull_v2(&rig);
        let (t, mut tw) = rig.open(v2_config()).split();
        p1.unbounded_send(frames(|v| {
            put_empty(v, kind::PING);
            put_count(v, kind::FIN, 0);
        }))
        .unwrap();
        rig.script.post(Answer::PostBody(200, "ack=2"));
        let (answer_close, held) = futures::channel::oneshot::channel();
        rig.script.post(Answer::PostLater(held));
        let closed = rig.try_run(async move {
            tw.write_all(b"hi").await.unwrap();
            tw.close().await
        });
        assert!(closed.borrow_mut().take().unwrap().is_ok(), "{case:?}");
        let out = rig.try_run(read_all(t));
        assert_eq!(out.borrow_mut().take().expect("read finished").0, b"");
        let posted = rig.script.posted();
        assert!(
            posted.last().unwrap().0.ends_with("&close=1"),
            "{case:?}: the close was sent: {posted:?}"
        );
        match case {
            PullEnds::AfterTheAnswer => {
                answer_close.send((200, "ack=2")).unwrap();
                rig.pool.run_until_stalled();
                assert!(
                    !p1.is_closed(),
                    "the pull response was dropped before its end"
                );
                p1.close_channel();
            }
            PullEnds::BeforeTheAnswer => {
                p1.close_channel();
                rig.advance(Duration::from_millis(100));
                answer_close.send((200, "ack=2")).unwrap();
            }
            PullEnds::Never => {
                answer_close.send((200, "ack=2")).unwrap();
                rig.pool.run_until_stalled();
                rig.advance(super::super::v2::CLOSE_DRAIN);
                assert!(p1.is_closed(), "a pull that never ends is let go");
            }
        }
        rig.advance(Duration::from_secs(5));
        assert_eq!(got_urls(&rig).len(), 1, "{case:?}: a pull after the close");
        assert_eq!(
            rig.script.posted().len(),
            2,
            "{case:?}: a push after the close"
        );
    }
}

/// The push with the fin is lost while the data push before it is answered: that answer
/// acknowledges every byte, but not the end. The fin must be sent again, and the
/// writer's close must wait for it (else the target never reads its end of stream).
#[test]
fn a_lost_fin_is_sent_again_even_when_every_byte_before_it_is_acknowledged() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let (_t, mut tw) = rig.open(v2_config()).split();
    p1.unbounded_send(frames(|v| put_empty(v, kind::PING)))
        .unwrap();
    let (answer_data, held) = futures::channel::oneshot::channel();
    rig.script.post(Answer::PostLater(held));
    rig.script.post(Answer::Fail("connection reset"));
    rig.script.post(Answer::PostBody(200, "ack=3"));
    let (go, wait) = futures::channel::oneshot::channel::<()>();
    let closed = rig.try_run(async move {
        tw.write_all(b"abc").await.unwrap();
        wait.await.unwrap();
        tw.close().await
    });
    assert_eq!(rig.script.posted().len(), 1, "the data push is in flight");
    go.send(()).unwrap();
    rig.pool.run_until_stalled();
    let posted = rig.script.posted();
    assert_eq!(posted.len(), 2, "{posted:?}");
    assert!(posted[1].0.ends_with("&seq=3&ack=0&fin=1"), "{posted:?}");
    answer_data.send((200, "ack=3")).unwrap();
    rig.pool.run_until_stalled();
    assert!(
        closed.borrow().is_none(),
        "closed before the server knew where the upload ends"
    );
    rig.advance(Duration::from_millis(50));
    let posted = rig.script.posted();
    assert_eq!(posted.len(), 3, "{posted:?}");
    assert!(posted[2].0.ends_with("&seq=3&ack=0&fin=1"), "{posted:?}");
    assert!(closed.borrow_mut().take().unwrap().is_ok());
}

#[test]
fn a_pull_held_back_by_a_proxy_switches_to_long_polls() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let (_t, _tw) = rig.open(v2_config()).split();
    let p2 = pull_v2(&rig);
    // Nothing, not even the first PING, within heartbeat (10 s) + 5 s.
    rig.advance(Duration::from_secs(14));
    assert_eq!(got_urls(&rig).len(), 1);
    rig.advance(Duration::from_secs(1));
    let urls = got_urls(&rig);
    assert!(urls[1].ends_with("&ack=0&poll=1"), "{urls:?}");
    drop((p1, p2));
}

#[test]
fn pulls_that_keep_failing_end_the_tunnel_after_the_resume_timeout() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let (t, _tw) = rig.open(v2_config()).split();
    for _ in 0..64 {
        rig.script.get(Answer::Fail("connection refused"));
    }
    p1.unbounded_send(Err(FetchError("connection reset".into())))
        .unwrap();
    let out = rig.try_run(read_all(t));
    for _ in 0..40 {
        rig.advance(Duration::from_secs(1));
    }
    let (_, end) = out.borrow_mut().take().expect("read finished");
    let e = end.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    assert!(
        e.to_string()
            .starts_with("pull failed for 30s in a row (resumeTimeout)"),
        "{e}"
    );
    assert!(
        rig.script
            .posted()
            .iter()
            .any(|(u, _)| u.ends_with("&rst=1")),
        "the server is told"
    );
}

#[test]
fn the_pull_is_replaced_before_its_max_age_without_a_gap() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let mut cfg = v2_config();
    cfg.pull_max_age = Duration::from_secs(20);
    let (t, _tw) = rig.open(cfg).split();
    let out = rig.try_run(read_all(t));
    let p2 = pull_v2(&rig);
    p1.unbounded_send(frames(|v| {
        put_empty(v, kind::PING);
        put_data(v, 0, b"one ");
    }))
    .unwrap();
    for _ in 0..4 {
        rig.advance(Duration::from_secs(5));
        p1.unbounded_send(frames(|v| put_empty(v, kind::PING)))
            .unwrap();
        rig.pool.run_until_stalled();
    }
    let urls = got_urls(&rig);
    assert_eq!(
        urls.len(),
        2,
        "the next pull is asked for at 20 s: {urls:?}"
    );
    assert!(urls[1].ends_with("&ack=4"), "{urls:?}");
    // The old pull still carries data until the server ends it.
    p1.unbounded_send(frames(|v| {
        put_data(v, 4, b"two ");
        put_empty(v, kind::END);
    }))
    .unwrap();
    // The new one resends from its ack: the duplicate is dropped.
    p2.unbounded_send(frames(|v| {
        put_empty(v, kind::PING);
        put_data(v, 4, b"two three");
        put_count(v, kind::FIN, 13);
    }))
    .unwrap();
    rig.pool.run_until_stalled();
    let (got, end) = out.borrow_mut().take().expect("read finished");
    assert_eq!(got, b"one two three");
    assert!(end.is_ok());
    assert_eq!(got_urls(&rig).len(), 2, "no pull in between");
}

#[test]
fn a_server_known_to_speak_pht2_is_not_asked_to_authorize_again() {
    let mut rig = Rig::new();
    let mut cfg = config();
    cfg.base_url = unique_base();
    cfg.token_mode = TokenMode::Authorize;
    // The first tunnel authorizes and learns the offer.
    let (tx, rx) = mpsc::unbounded();
    tx.unbounded_send(Ok(Bytes::from(format!(
        "token=first{}",
        crate::frame::Limits::default().to_query()
    ))))
    .unwrap();
    drop(tx);
    rig.script.get(Answer::Get(200, rx));
    let _p1 = pull_v2(&rig);
    let first = rig.open(cfg.clone());
    assert_eq!(first.token(), "first");
    // The second mints its token, and its first bytes go out at once.
    let _p2 = pull_v2(&rig);
    rig.script.post(Answer::PostBody(200, "ack=2"));
    let second = rig.open(cfg);
    assert_ne!(second.token(), "first");
    let (_r, mut w) = second.split();
    rig.try_run(async move {
        w.write_all(b"hi").await.unwrap();
        w
    });
    let urls = got_urls(&rig);
    assert_eq!(
        urls.iter().filter(|u| u.contains("/authorize")).count(),
        1,
        "{urls:?}"
    );
    let posted = rig.script.posted();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert!(posted[0].0.contains("&v=2&seq=0"), "{}", posted[0].0);
    assert_eq!(posted[0].1, b"hi");
}

/// The upload offset a push names.
fn seq_of(url: &str) -> usize {
    let v = url.split("&seq=").nth(1).expect("a seq parameter");
    v.split('&').next().unwrap_or(v).parse().expect("a number")
}

#[test]
fn refusals_of_pushes_in_flight_together_halve_the_limit_once() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let mut cfg = v2_config();
    cfg.max_push_payload = 64 * 1024;
    cfg.min_push_payload = 8 * 1024;
    let t = rig.open(cfg);
    p1.unbounded_send(frames(|v| put_empty(v, kind::PING)))
        .unwrap();
    // Every POST is answered by the test, in the order they were sent.
    let mut answers = VecDeque::new();
    for _ in 0..64 {
        let (tx, rx) = futures::channel::oneshot::channel();
        rig.script.post(Answer::PostLater(rx));
        answers.push_back(tx);
    }
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (_tr, mut tw) = t.split();
    let d = data.clone();
    let flushed = rig.try_run(async move {
        tw.write_all(&d).await?;
        tw.flush().await.map(|()| tw)
    });
    // The first two pushes go out together, and a proxy refuses both.
    assert_eq!(rig.script.posted().len(), 2);
    for _ in 0..2 {
        let _ = answers.pop_front().unwrap().send((413, ""));
    }
    rig.advance(Duration::ZERO);
    // From here on the server takes each push and acknowledges what it holds in order.
    let mut have = vec![false; data.len()];
    let mut answered = 2;
    while flushed.borrow().is_none() {
        let posted = rig.script.posted();
        assert!(posted.len() > answered, "stalled after {posted:?}");
        for (url, body) in &posted[answered..] {
            let seq = seq_of(url);
            have[seq..seq + body.len()]
                .iter_mut()
                .for_each(|h| *h = true);
            let acked = have.iter().position(|h| !h).unwrap_or(have.len());
            let ack: &'static str = Box::leak(format!("ack={acked}").into_boxed_str());
            let _ = answers.pop_front().unwrap().send((200, ack));
        }
        answered = posted.len();
        rig.advance(Duration::ZERO);
    }
    assert!(flushed.borrow().as_ref().unwrap().is_ok());
    let posted = rig.script.posted();
    let sizes: Vec<usize> = posted.iter().map(|(_, b)| b.len()).collect();
    assert_eq!(&sizes[..2], &[64 * 1024, 64 * 1024], "{sizes:?}");
    // The second refusal was of a body sent before the first: the limit is 32 KiB, not 16.
    assert_eq!(sizes[2..].iter().max(), Some(&(32 * 1024)), "{sizes:?}");
    let mut taken = vec![0u8; data.len()];
    for (url, body) in &posted[2..] {
        let seq = seq_of(url);
        taken[seq..seq + body.len()].copy_from_slice(body);
    }
    assert!(taken == data, "the bytes the server took differ");
}

#[test]
fn back_pressure_429s_are_waited_out_past_the_resume_timeout() {
    let mut rig = Rig::new();
    let p1 = pull_v2(&rig);
    let t = rig.open(v2_config());
    p1.unbounded_send(frames(|v| put_empty(v, kind::PING)))
        .unwrap();
    rig.script.post(Answer::PostBody(200, "ack=3"));
    let (_tr, mut tw) = t.split();
    let first = rig.try_run(async move {
        tw.write_all(b"abc").await.unwrap();
        tw.flush().await.map(|()| tw)
    });
    let Some(Ok(mut tw)) = first.borrow_mut().take() else {
        panic!("the first push was not acknowledged")
    };
    // The target stops reading: every push is refused with 429 for a minute, twice the
    // resume timeout, while the pull stays alive.
    for _ in 0..64 {
        rig.script.post(Answer::PostBody(429, ""));
    }
    let flushed = rig.try_run(async move {
        tw.write_all(b"def").await?;
        tw.flush().await.map(|()| tw)
    });
    for s in 0..60 {
        p1.unbounded_send(frames(|v| put_empty(v, kind::PING)))
            .unwrap();
        rig.advance(Duration::from_secs(1));
        assert!(
            flushed.borrow().is_none(),
            "flushed at {s} s without an ack"
        );
    }
    let refused = rig.script.posted().len() - 1;
    assert!(
        (20..64).contains(&refused),
        "{refused} pushes in 60 s: the back-off is not 50 ms to 2 s"
    );
    // The target reads again: the next push is taken.
    rig.script.0.lock().unwrap().posts.clear();
    rig.script.post(Answer::PostBody(200, "ack=6"));
    rig.advance(Duration::from_secs(2));
    assert!(flushed.borrow().as_ref().is_some_and(|r| r.is_ok()));
    for (url, body) in &rig.script.posted()[1..] {
        assert!(url.contains("&v=2&seq=3&"), "{url}");
        assert_eq!(body, b"def");
    }
}
