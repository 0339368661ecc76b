//! `Send` where threads exist, nothing on wasm32: the same code serves tokio and the browser.

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    /// `Send` natively; no bound on wasm32.
    pub trait MaybeSend: Send {}
    impl<T: Send + ?Sized> MaybeSend for T {}
    /// `Sync` natively; no bound on wasm32.
    pub trait MaybeSync: Sync {}
    impl<T: Sync + ?Sized> MaybeSync for T {}
    /// A boxed future, `Send` natively.
    pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;
}

#[cfg(target_arch = "wasm32")]
mod imp {
    /// `Send` natively; no bound on wasm32.
    pub trait MaybeSend {}
    impl<T: ?Sized> MaybeSend for T {}
    /// `Sync` natively; no bound on wasm32.
    pub trait MaybeSync {}
    impl<T: ?Sized> MaybeSync for T {}
    /// A boxed future, `Send` natively.
    pub type BoxFuture<'a, T> = futures::future::LocalBoxFuture<'a, T>;
}

pub use imp::*;
