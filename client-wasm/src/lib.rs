//! PHT (gost's Plain HTTP Tunnel) for browsers and Node: wasm-bindgen bindings over
//! [`pht_core`], on the platform's `fetch` through gloo-net.
//!
//! The protocol lives in `pht-core`; this crate only adapts it: [`GlooFetch`] implements
//! [`pht_core::Fetch`], [`JsClock`] implements [`pht_core::Clock`] (`setTimeout`), and
//! [`connect`] returns a [`Tunnel`] whose `readable` and `writable` are web streams. Every request is a CORS simple request (`GET`; `POST` with
//! `Content-Type: text/plain`), so pages on other origins need no preflight.
//!
//! Only built for `wasm32`; on other targets the crate is empty.
#![cfg(target_arch = "wasm32")]

mod clock;
mod fetch;
mod options;
mod tunnel;

pub use clock::{JsClock, Sleep};
pub use fetch::{FetchBody, GlooFetch};
pub use tunnel::{
    ByteReadableStream, ByteWritableStream, ConnectOptions, Tunnel, VoidPromise, connect,
};
