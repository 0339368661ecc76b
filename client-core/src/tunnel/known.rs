//! Servers known to speak PHT/2, per process: a later tunnel to the same server mints its
//! token and sends its first bytes with its first request, instead of spending a round
//! trip on `/authorize` first. Only our servers speak PHT/2, and they all take minted
//! tokens.

use std::sync::Mutex;

use crate::TunnelConfig;
use crate::frame::Limits;

/// Servers remembered at most; the table starts again when full.
const MAX_SERVERS: usize = 256;

/// The endpoints (see [`key`]) and their limits. A list, not a hash map: it is read once per
/// tunnel opened, and a hash table with its hasher weighs 4.5 KB of the wasm package.
static TABLE: Mutex<Vec<(String, Limits)>> = Mutex::new(Vec::new());

fn table() -> std::sync::MutexGuard<'static, Vec<(String, Limits)>> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// What names one PHT endpoint: where the requests go, and their paths.
fn key(cfg: &TunnelConfig) -> String {
    format!(
        "{} {} {} {}",
        cfg.base_url, cfg.authorize_path, cfg.push_path, cfg.pull_path
    )
}

/// The limits a PHT/2 server at `cfg`'s endpoint offered, if one did.
pub(super) fn get(cfg: &TunnelConfig) -> Option<Limits> {
    let key = key(cfg);
    table()
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, l)| l.clone())
}

pub(super) fn remember(cfg: &TunnelConfig, limits: &Limits) {
    let key = key(cfg);
    let mut t = table();
    if t.len() >= MAX_SERVERS {
        t.clear();
    }
    match t.iter_mut().find(|(k, _)| *k == key) {
        Some((_, l)) => *l = limits.clone(),
        None => t.push((key, limits.clone())),
    }
}

/// The server refused what it should have taken (it was replaced, say): ask it again.
pub(super) fn forget(cfg: &TunnelConfig) {
    let key = key(cfg);
    table().retain(|(k, _)| *k != key);
}
