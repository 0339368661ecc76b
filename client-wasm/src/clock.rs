//! [`Clock`] on the platform's timers: `setTimeout` / `clearTimeout` and `performance.now()`,
//! looked up on the global object, so the same code runs in a window, a worker and Node.
//!
//! pht-core arms a timer per HTTP exchange (`requestTimeout`) and per pull chunk (the
//! `heartbeatTimeout` watch) and drops most of them before they fire: dropping a [`Sleep`]
//! clears its timer, so none piles up.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use js_sys::{Function, Reflect};
use pht_core::Clock;
use wasm_bindgen::prelude::*;

/// Longest delay `setTimeout` takes (2³¹ − 1 ms, about 24.8 days); longer ones would fire
/// at once, so longer sleeps are armed in steps.
const MAX_TIMER_MS: f64 = 2_147_483_647.0;

/// The platform's clock: `performance.now()` (else `Date.now()`) and `setTimeout`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsClock;

impl JsClock {
    pub fn new() -> Self {
        JsClock
    }
}

/// The global functions a clock needs, looked up once per thread.
struct Globals {
    global: JsValue,
    set_timeout: Option<Function>,
    clear_timeout: Option<Function>,
    /// `performance` and its `now`, where the platform has them.
    performance: Option<(JsValue, Function)>,
    /// The last reading, so that a `Date.now()` fallback never goes backwards.
    last_ms: Cell<f64>,
}

fn function(obj: &JsValue, name: &str) -> Option<Function> {
    Reflect::get(obj, &JsValue::from_str(name))
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
}

impl Globals {
    fn load() -> Self {
        let global: JsValue = js_sys::global().into();
        let performance = Reflect::get(&global, &JsValue::from_str("performance"))
            .ok()
            .filter(|p| p.is_object())
            .and_then(|p| function(&p, "now").map(|now| (p, now)));
        Globals {
            set_timeout: function(&global, "setTimeout"),
            clear_timeout: function(&global, "clearTimeout"),
            performance,
            global,
            last_ms: Cell::new(0.0),
        }
    }

    fn now_ms(&self) -> f64 {
        let ms = self
            .performance
            .as_ref()
            .and_then(|(p, now)| now.call0(p).ok())
            .and_then(|v| v.as_f64())
            .unwrap_or_else(js_sys::Date::now);
        let ms = ms.max(self.last_ms.get());
        self.last_ms.set(ms);
        ms
    }
}

thread_local! {
    static GLOBALS: Globals = Globals::load();
}

impl Clock for JsClock {
    type Sleep = Sleep;

    fn now(&self) -> Duration {
        let ms = GLOBALS.with(Globals::now_ms);
        Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }

    fn sleep(&self, d: Duration) -> Sleep {
        let now = GLOBALS.with(Globals::now_ms);
        let mut sleep = Sleep {
            deadline_ms: now + d.as_secs_f64() * 1000.0,
            shared: Rc::new(Fired::default()),
            timer: None,
        };
        sleep.arm(now);
        sleep
    }
}

/// What the timer's callback and the future share.
#[derive(Default)]
struct Fired {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// An armed `setTimeout`: its handle and the callback it holds.
struct Timer {
    handle: JsValue,
    _callback: Closure<dyn FnMut()>,
}

/// The future of [`JsClock::sleep`]. Dropping it clears its timer.
pub struct Sleep {
    deadline_ms: f64,
    shared: Rc<Fired>,
    /// `None` once fired, or when the platform has no `setTimeout` (the sleep never ends:
    /// no deadline is better than a deadline that has always passed).
    timer: Option<Timer>,
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline_ms", &self.deadline_ms)
            .field("armed", &self.timer.is_some())
            .finish()
    }
}

impl Sleep {
    /// Arms a timer for the time left until the deadline (at most [`MAX_TIMER_MS`]).
    fn arm(&mut self, now_ms: f64) {
        self.shared.fired.set(false);
        let delay = (self.deadline_ms - now_ms).clamp(0.0, MAX_TIMER_MS).ceil();
        let shared = self.shared.clone();
        let callback = Closure::<dyn FnMut()>::new(move || {
            shared.fired.set(true);
            if let Some(w) = shared.waker.borrow_mut().take() {
                w.wake();
            }
        });
        self.timer = GLOBALS.with(|g| {
            let set = g.set_timeout.as_ref()?;
            let handle = set
                .call2(
                    &g.global,
                    callback.as_ref().unchecked_ref(),
                    &JsValue::from_f64(delay),
                )
                .ok()?;
            Some(Timer {
                handle,
                _callback: callback,
            })
        });
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.timer.is_some() && self.shared.fired.get() {
            // Fired: done, unless the sleep was longer than one timer may wait (or the
            // timer fired early by more than a rounding error).
            self.timer = None;
            let now = GLOBALS.with(Globals::now_ms);
            if now + 1.0 >= self.deadline_ms {
                return Poll::Ready(());
            }
            self.arm(now);
        }
        *self.shared.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        let Some(timer) = self.timer.take() else {
            return;
        };
        if !self.shared.fired.get() {
            GLOBALS.with(|g| {
                if let Some(clear) = &g.clear_timeout {
                    let _ = clear.call1(&g.global, &timer.handle);
                }
            });
        }
        // The callback is freed only now: after clearTimeout it can no longer run.
        drop(timer);
    }
}
