//! gost's free-form `metadata` maps: case-insensitive keys, lenient scalar values.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use pht_core::{MAX_DURATION, MAX_SIZE, parse_duration, parse_size};

const DURATION_EXPECTED: &str = "a duration up to 8760h (e.g. 10s, 1m30s, 500ms)";
const SIZE_EXPECTED: &str =
    "a number or size up to 1GiB (1073741824; e.g. 128, 1048576, 512KiB, 4MiB)";

/// A duration option's text → its value, if it is one and at most [`MAX_DURATION`].
pub fn bounded_duration(v: &str) -> Result<Duration, &'static str> {
    parse_duration(v)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or(DURATION_EXPECTED)
}

/// A metadata map as written in the config (values kept as given, for `-O`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(pub BTreeMap<String, Value>);

/// A metadata value that cannot be used for its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata {key}: {value} is not {expected}")]
pub struct MetadataError {
    pub key: String,
    pub value: String,
    pub expected: &'static str,
}

impl Metadata {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), Value::String(value.into()));
    }

    /// The value of `key`, matched case-insensitively, as text.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
    }

    fn err(key: &str, value: &str, expected: &'static str) -> MetadataError {
        MetadataError {
            key: key.into(),
            value: format!("{value:?}"),
            expected,
        }
    }

    /// A boolean, read like Go's `strconv.ParseBool`.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, MetadataError> {
        let Some(v) = self.get_str(key) else {
            return Ok(None);
        };
        pht_core::parse_bool(&v)
            .map(Some)
            .ok_or_else(|| Self::err(key, &v, "a boolean"))
    }

    /// A non-negative integer up to [`MAX_SIZE`] (sizes may carry a KB/MB/GB suffix or
    /// KiB/MiB/GiB).
    pub fn get_size(&self, key: &str) -> Result<Option<usize>, MetadataError> {
        let Some(v) = self.get_str(key) else {
            return Ok(None);
        };
        parse_size(&v)
            .filter(|n| *n <= MAX_SIZE)
            .map(Some)
            .ok_or_else(|| Self::err(key, &v, SIZE_EXPECTED))
    }

    /// A whole number, negative or not (gost's `GetInt` keys: `maxFails`, `weight`,
    /// `retries`; each caller decides what 0 or less means).
    pub fn get_int(&self, key: &str) -> Result<Option<i64>, MetadataError> {
        let Some(v) = self.get_str(key) else {
            return Ok(None);
        };
        v.trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Self::err(key, &v, "an integer"))
    }

    /// A duration up to [`MAX_DURATION`]: Go syntax (`10s`, `1m30s`, `250ms`) or a bare
    /// number of seconds.
    pub fn get_duration(&self, key: &str) -> Result<Option<Duration>, MetadataError> {
        let Some(v) = self.get_str(key) else {
            return Ok(None);
        };
        bounded_duration(&v)
            .map(Some)
            .map_err(|expected| Self::err(key, &v, expected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(k: &str, v: &str) -> Metadata {
        let mut m = Metadata::default();
        m.insert(k, v);
        m
    }

    #[test]
    fn sizes_and_durations_are_bounded() {
        assert_eq!(md("n", "4MiB").get_size("n"), Ok(Some(4 << 20)));
        assert_eq!(md("n", "1GiB").get_size("n"), Ok(Some(MAX_SIZE)));
        for v in [
            "18446744073709551615",
            "99999999999999999999",
            "1025MiB",
            "17179869184GiB",
        ] {
            let e = md("backlog", v).get_size("backlog").unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("metadata backlog: {v:?} is not {SIZE_EXPECTED}")
            );
        }
        assert_eq!(md("t", "8760h").get_duration("t"), Ok(Some(MAX_DURATION)));
        for v in [
            "8761h",
            "99999999999999999999h",
            "18446744073709551615",
            "1e300s",
            "soon",
        ] {
            assert!(md("t", v).get_duration("t").is_err(), "{v}");
        }
    }
}
