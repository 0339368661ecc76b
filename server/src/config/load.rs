//! Reading `-C` sources (YAML or JSON, file or stdin) with errors that name the key path.

use std::io::Read;
use std::path::Path;

use super::Config;

/// A configuration source that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("read {source_name}: {error}")]
    Io {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{source_name}: {path}: {message}")]
    Parse {
        source_name: String,
        path: String,
        message: String,
    },
}

/// Loads one `-C` source: a file path, `-` for stdin, or inline JSON (`{...}`).
/// The format comes from the extension (`.json` → JSON), otherwise from the first byte.
pub fn load_source(src: &str) -> Result<Config, LoadError> {
    let io = |error| LoadError::Io {
        source_name: src.to_string(),
        error,
    };
    let text = if src == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(io)?;
        s
    } else if src.trim_start().starts_with('{') {
        src.to_string()
    } else {
        std::fs::read_to_string(src).map_err(io)?
    };
    let name = if src.trim_start().starts_with('{') {
        "inline JSON"
    } else {
        src
    };
    let is_json = Path::new(src)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    parse(name, &text, is_json)
}

fn parse(name: &str, text: &str, is_json: bool) -> Result<Config, LoadError> {
    let perr = |path: String, message: String| LoadError::Parse {
        source_name: name.to_string(),
        path: if path.is_empty() || path == "." {
            "(top level)".into()
        } else {
            path
        },
        message,
    };
    if is_json {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| perr(e.path().to_string(), e.inner().to_string()))
    } else {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| perr(e.path().to_string(), e.inner().to_string()))
    }
}

/// gost's merge: list sections are concatenated, singletons replaced by the later source.
pub fn merge(mut base: Config, next: Config) -> Config {
    base.services.extend(next.services);
    base.chains.extend(next.chains);
    base.hops.extend(next.hops);
    base.authers.extend(next.authers);
    base.admissions.extend(next.admissions);
    base.bypasses.extend(next.bypasses);
    if next.log.is_some() {
        base.log = next.log;
    }
    if next.tls.is_some() {
        base.tls = next.tls;
    }
    if next.metrics.is_some() {
        base.metrics = next.metrics;
    }
    base.link_hops();
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_type_names_the_key_path_and_line() {
        let yaml = "services:\n- name: a\n  addr: :1\n  handler:\n    type: [1, 2]\n";
        let e = parse("x.yaml", yaml, false).unwrap_err().to_string();
        assert!(e.starts_with("x.yaml: services[0].handler.type: "), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let yaml = "services:\n- name: a\n  addr: :1\n  bogus: 1\n  handler: {type: http}\n  listener: {type: pht}\nprofiling: {addr: ':6060'}\n";
        let c = parse("x.yaml", yaml, false).unwrap();
        assert_eq!(c.services[0].listener.kind, "pht");
    }
}
