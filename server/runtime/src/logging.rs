//! Log set-up shared by the binaries: gost's levels (`-D` debug, `-DD` trace).

use tracing_subscriber::EnvFilter;

/// Installs a stderr logger. `verbosity` counts `-D` flags and sets the level of the
/// program's own `crates` (their names as in log targets, `pht_core`, not `pht-core`) and
/// of this one; everything else logs warnings only, or debug from `-DD` on. `RUST_LOG`
/// overrides it all.
///
/// ```no_run
/// pht_runtime::logging::init(1, &["pht_core", "pht_client"]);
/// ```
pub fn init(verbosity: u8, crates: &[&str]) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(directives(verbosity, crates)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// The filter [`init`] uses when `RUST_LOG` is not set.
fn directives(verbosity: u8, crates: &[&str]) -> String {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // The program's crates at the chosen level; the HTTP stack only from -DD on.
    let mut out = String::from(if verbosity >= 2 { "debug" } else { "warn" });
    for c in crates.iter().copied().chain([env!("CARGO_CRATE_NAME")]) {
        out += &format!(",{c}={level}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_s_crates_and_this_one_log_at_the_d_level() {
        let ours = ["pht_core", "pht_client", "pht_server"];
        assert_eq!(
            directives(0, &ours),
            "warn,pht_core=info,pht_client=info,pht_server=info,pht_runtime=info"
        );
        assert_eq!(
            directives(1, &ours),
            "warn,pht_core=debug,pht_client=debug,pht_server=debug,pht_runtime=debug"
        );
        assert_eq!(
            directives(3, &ours[..1]),
            "debug,pht_core=trace,pht_runtime=trace"
        );
        // Every one parses as a filter.
        for v in 0..3 {
            EnvFilter::try_new(directives(v, &ours)).unwrap();
        }
    }
}
