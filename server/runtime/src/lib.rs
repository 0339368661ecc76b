//! The process runtime the two native binaries, `pht-server` and `pht-client`, share:
//! everything a program around the tunnel needs and the tunnel itself does not.
//!
//! - [`shutdown_signal`]: SIGINT or SIGTERM;
//! - [`listen`]: TCP listening sockets with a deep backlog ([`LISTEN_BACKLOG`]);
//! - [`raise_fd_limit`], [`fd_limit`]: the open-file limit, raised as gost does;
//! - [`tune_allocator`]: glibc's malloc thresholds, set for bulk data;
//! - [`logging::init`]: stderr logging at gost's `-D` levels;
//! - [`splice`]: the byte pump between two streams, which turns a failure on one side
//!   into a [`Reset`] on the other (and [`pipe`], the pump alone);
//! - [`pem`]: PEM certificate and key files, fingerprints, the rustls provider.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! pht_runtime::logging::init(0, &["my_program"]);
//! pht_runtime::raise_fd_limit();
//! let listener = pht_runtime::listen("127.0.0.1:8080").await?;
//! tokio::select! {
//!     _ = async {
//!         while let Ok((mut a, _)) = listener.accept().await {
//!             tokio::spawn(async move {
//!                 let mut b = tokio::net::TcpStream::connect("127.0.0.1:22").await?;
//!                 pht_runtime::splice(&mut a, &mut b).await;
//!                 std::io::Result::Ok(())
//!             });
//!         }
//!     } => {}
//!     _ = pht_runtime::shutdown_signal() => {}
//! }
//! # Ok(()) }
//! ```

mod alloc;
mod limits;
mod listen;
pub mod logging;
pub mod pem;
mod pipe;
mod reset;
mod signal;

pub use alloc::{MMAP_THRESHOLD, TRIM_THRESHOLD, tune_allocator};
pub use limits::{fd_limit, raise_fd_limit};
pub use listen::{LISTEN_BACKLOG, listen};
pub use pipe::{Chunked, PipeStats, pipe, splice};
pub use reset::Reset;
pub use signal::shutdown_signal;
