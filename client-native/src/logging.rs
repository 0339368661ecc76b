//! Log set-up shared by the binaries: gost's levels (`-D` debug, `-DD` trace).

use tracing_subscriber::EnvFilter;

/// Installs a stderr logger. `verbosity` counts `-D` flags; `RUST_LOG` overrides it.
pub fn init(verbosity: u8) {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Our crates at the chosen level; the HTTP stack only from -DD on.
        let deps = if verbosity >= 2 { "debug" } else { "warn" };
        EnvFilter::new(format!(
            "{deps},pht_core={level},pht_client={level},pht_server={level}"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

pub use pht_core::token_prefix;
