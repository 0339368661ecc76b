//! The PHT/2 push: a raw body at a stream offset, read whole before any of it is applied,
//! so a push that breaks or is refused leaves nothing behind and can simply be sent again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use pht_core::PostBody;
use pht_core::frame::{ResetCode, param};
use pht_core::token_prefix;
use tracing::debug;

use super::super::registry::{Registry, ServerTunnel};
use super::super::reorder::ReorderError;
use super::super::routes::{Body, PUSH_SLICE, Peer, ReqBody, full, text};
use super::{Session, count_param, flag};

/// Why a push body could not be read; nothing of it was applied.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("push body over {0} bytes")]
    TooLarge(usize),
    #[error("push body broken: {0}")]
    Broken(#[from] std::io::Error),
}

/// `POST push?token=T&v=2&seq=S[&ack=N][&fin=1][&close=1][&rst=1]`.
pub(in crate::listener::pht) async fn push(
    req: Request<ReqBody>,
    reg: &Arc<Registry>,
    token: &str,
    peer: &Peer,
) -> Response<Body> {
    let query = req.uri().query().unwrap_or("");
    let Ok(Some(seq)) = count_param(query, param::SEQ) else {
        return text(StatusCode::BAD_REQUEST, "missing or bad seq\n");
    };
    let Ok(ack) = count_param(query, param::ACK) else {
        return text(StatusCode::BAD_REQUEST, "bad ack\n");
    };
    let (fin, close, rst) = (
        flag(query, param::FIN),
        flag(query, param::CLOSE),
        flag(query, "rst"),
    );
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Only bytes start a tunnel: an acknowledgement, close or reset for a token that has
    // none has nothing to act on. Nor does a push that acknowledges download bytes for a
    // token never seen: its tunnel existed on another instance, or before a restart, and
    // a new one would dial the target for nothing.
    let create = if declared == Some(0) || rst {
        super::Create::Never
    } else if ack.is_some_and(|n| n > 0) {
        super::Create::Reserved
    } else {
        super::Create::Any
    };
    let (t, session) = match super::live_session(reg, token, peer, create).await {
        Ok(live) => live,
        Err(r) => return r,
    };
    let log = |what: &str| {
        debug!(service = %reg.service, token = token_prefix(token), %peer, seq, ?declared, fin, close, rst, "push: {what}");
    };
    if rst {
        log("reset by client");
        let m = session.uploaded();
        reg.abort(token, ResetCode::ClientReset, "reset by client");
        return answer(m);
    }
    if let Some(n) = ack
        && let Err(r) = super::take_ack(reg, token, &session, n)
    {
        log("ack outside the replay window");
        return r;
    }
    let max = reg.opts.max_push_body;
    if declared.is_some_and(|n| n > max as u64) {
        // Refused unread: the client sends the same bytes again in smaller pushes.
        log("body too large: refused unread");
        return text(StatusCode::PAYLOAD_TOO_LARGE, "push body too large\n");
    }
    t.touch();
    let body = tokio::select! {
        r = read_body(req.into_body(), max) => r,
        _ = t.cancel.cancelled() => return gone(&t),
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            // Nothing was applied: the tunnel is unharmed and the client sends it again.
            log(&e.to_string());
            return match e {
                BodyError::TooLarge(_) => {
                    text(StatusCode::PAYLOAD_TOO_LARGE, "push body too large\n")
                }
                BodyError::Broken(e) => {
                    let (status, body) = super::super::stall::body_failure(&e);
                    text(status, body)
                }
            };
        }
    };
    let len = body.len();
    if len == 0 && !fin && !close {
        // A pure acknowledgement (applied above). It must not queue behind a delivery
        // that waits for the handler: that wait may be for the very acknowledgement that
        // lets the download, and so the handler, move again.
        return answer(session.uploaded());
    }
    // Once the reorder buffer has taken the body, its bytes count as received and a
    // retry of them is dropped as a duplicate: their delivery to the handler must finish
    // even if this request's connection dies meanwhile (hyper then drops this future).
    // So it runs as a task of its own once it has to wait; a reset tunnel ends it at once.
    let deadline = tokio::time::Instant::now() + reg.opts.push_wait;
    let (taken_tx, taken_rx) = tokio::sync::oneshot::channel();
    // Set by whichever comes first of the delivery's end and an early answer: the second
    // sees it. An early answer then carries the final count, or else the delivery's end
    // announces it.
    let first_done = Arc::new(AtomicBool::new(false));
    let (tt, ss, rr, done) = (t.clone(), session.clone(), reg.clone(), first_done.clone());
    let mut delivery = Box::pin(async move {
        let (t, session, reg) = (&tt, &ss, &rr);
        let r = tokio::select! {
            r = apply(t, session, reg, seq, body, fin, taken_tx) => r,
            _ = t.cancel.cancelled() => Err(gone(t)),
        };
        if let Ok(m) = r {
            if close {
                reg.close(&t.token, "closed by client");
            }
            if done.swap(true, Ordering::AcqRel) {
                // The push was answered before these bytes were all taken: an ACK frame
                // on the pull tells the client, which may have nothing left to push.
                session.announce_uploaded();
                debug!(service = %reg.service, token = token_prefix(&t.token), seq, ack = m, "push delivered after its answer");
            }
        }
        r
    });
    // Usually the handler's queue has room and the delivery is done at its first poll:
    // then no task is spawned, which saves a task switch (and often a wake-up of another
    // worker thread) on every push. Nothing can drop it between that poll and the spawn.
    let applied = match futures::poll!(delivery.as_mut()) {
        Poll::Ready(r) => r,
        Poll::Pending => {
            let mut task = tokio::spawn(delivery);
            // A slow reader is not a broken tunnel: once the body is in the server's
            // hands and `pushWait` has passed, the push is answered with the count taken
            // so far and the task goes on delivering, however long the target takes.
            let answer_early = async {
                match taken_rx.await {
                    Ok(()) => tokio::time::sleep_until(deadline).await,
                    // Never taken: the task ends by itself (429, 410).
                    Err(_) => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut task => match r {
                    Ok(r) => r,
                    Err(_) => Err(gone(&t)),
                },
                () = answer_early => {
                    if !first_done.swap(true, Ordering::AcqRel) {
                        log("answered before the handler took all of it");
                    }
                    return answer(session.uploaded());
                }
            }
        }
    };
    let m = match applied {
        Ok(m) => m,
        Err(r) => {
            log(&format!("refused with {}", r.status()));
            return r;
        }
    };
    t.touch();
    debug!(service = %reg.service, token = token_prefix(token), %peer, seq, len, fin, close, ack = m, "push applied");
    answer(m)
}

/// `200` with the upload count the server has in order.
fn answer(m: u64) -> Response<Body> {
    let mut r = text(StatusCode::OK, "");
    *r.body_mut() = full(Bytes::from(format!("ack={m}")));
    r
}

/// The tunnel ended while the push waited.
fn gone(t: &ServerTunnel) -> Response<Body> {
    if t.pipe.cause().is_some() {
        text(StatusCode::GONE, "tunnel was reset\n")
    } else {
        text(StatusCode::GONE, "tunnel closed\n")
    }
}

/// Reads a whole body of at most `max` bytes, in the pieces it arrived in.
async fn read_body(mut body: ReqBody, max: usize) -> Result<PostBody, BodyError> {
    let mut parts = PostBody::default();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if parts.len() + data.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        parts.push(data);
    }
    Ok(parts)
}

/// Puts the body in sequence and hands what is now in order to the handler; returns the
/// upload count in order. `taken` fires once the body is in the server's hands (a retry
/// of it is a duplicate from then on).
async fn apply(
    t: &ServerTunnel,
    session: &Session,
    reg: &Registry,
    seq: u64,
    body: PostBody,
    fin: bool,
    taken: tokio::sync::oneshot::Sender<()>,
) -> Result<u64, Response<Body>> {
    // Another push's delivery holds the order while the handler takes its bytes; this
    // body is not taken at all when that lasts (the client sends it again later).
    let Ok(mut upload) = tokio::time::timeout(reg.opts.push_wait, session.upload.lock()).await
    else {
        debug!(service = %reg.service, token = token_prefix(&t.token), seq, "push refused: the handler is still taking earlier bytes");
        let mut r = text(
            StatusCode::TOO_MANY_REQUESTS,
            "the target is not reading: earlier bytes are still being delivered\n",
        );
        r.extensions_mut()
            .insert(crate::metrics::RefusalReason("pushWait"));
        return Err(r);
    };
    let chunks = upload.insert(seq, body, fin).map_err(|e| {
        debug!(service = %reg.service, token = token_prefix(&t.token), seq, "push refused: {e}");
        match e {
            ReorderError::Full { .. } => {
                let mut r = text(StatusCode::TOO_MANY_REQUESTS, "reorder buffer full\n");
                r.extensions_mut()
                    .insert(crate::metrics::RefusalReason("reorderBuffer"));
                r
            }
            ReorderError::Overflow { .. } => text(StatusCode::BAD_REQUEST, "missing or bad seq\n"),
            ReorderError::BeyondEnd { .. } => {
                text(StatusCode::BAD_REQUEST, "push beyond the upload's end\n")
            }
            ReorderError::FinConflict { .. } => text(
                StatusCode::BAD_REQUEST,
                "fin contradicts the upload's end\n",
            ),
        }
    })?;
    let _ = taken.send(());
    'deliver: for mut chunk in chunks {
        while !chunk.is_empty() {
            let piece = chunk.split_to(chunk.len().min(PUSH_SLICE));
            if t.pipe.push(piece).await.is_err() {
                match t.pipe.cause() {
                    Some(c) => {
                        reg.abort(&t.token, c.code, c.reason);
                        return Err(text(StatusCode::GONE, "tunnel was reset\n"));
                    }
                    // The handler has finished: like a TCP peer that closed, it takes
                    // bytes and drops them.
                    None if t.pipe.handler_gone() => break 'deliver,
                    None => return Err(text(StatusCode::GONE, "tunnel closed\n")),
                }
            }
        }
    }
    let m = upload.next();
    session.set_uploaded(m);
    if upload.ended() {
        // Every upload byte is in: the handler reads EOF after them (a half-close).
        t.pipe.finish_down();
        debug!(service = %reg.service, token = token_prefix(&t.token), total = m, "upload finished: handler reads EOF");
    }
    Ok(m)
}
