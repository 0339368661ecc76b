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
    // Keys no setting reads (gost's resolvers, limiters, a typo...) are kept, with their
    // paths, to be warned about at start: silently dropping them would hide that a
    // setting the user relies on does nothing here.
    let mut ignored = Vec::new();
    let mut cfg: Config = if is_json {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut |path| {
            ignored.push(format!("{name}: {}", key_path(&path)))
        }))
        .map_err(|e| perr(e.path().to_string(), e.inner().to_string()))?
    } else {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut |path| {
            ignored.push(format!("{name}: {}", key_path(&path)))
        }))
        .map_err(|e| perr(e.path().to_string(), e.inner().to_string()))?
    };
    cfg.ignored = ignored;
    Ok(cfg)
}

/// A path as the rest of the configuration errors spell it: `services[0].resolver`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => match key_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
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
    base.ignored.extend(next.ignored);
    base.link_hops();
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_no_setting_reads_are_kept_with_their_paths() {
        let yaml = "services:\n- name: a\n  addr: :1\n  resolver: r\n  handler: {type: http, retry: 3}\nresolvers:\n- name: r\n";
        let c = parse("x.yaml", yaml, false).unwrap();
        assert_eq!(
            c.ignored,
            [
                "x.yaml: services[0].resolver",
                "x.yaml: services[0].handler.retry",
                "x.yaml: resolvers",
            ]
        );
        let json = r#"{"services": [{"name": "a", "addr": ":1"}], "limiters": []}"#;
        assert_eq!(parse("j", json, true).unwrap().ignored, ["j: limiters"]);
        // Metadata takes any key: gost's options live there, checked by Plan::build.
        let md = "services:\n- name: a\n  addr: :1\n  metadata: {anything: 1}\n";
        assert!(parse("m", md, false).unwrap().ignored.is_empty());
    }

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
