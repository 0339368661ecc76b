//! Servers known to speak PHT/2, per process: a later tunnel to the same server mints its
//! token and sends its first bytes with its first request, instead of spending a round
//! trip on `/authorize` first. Only our servers speak PHT/2, and they all take minted
//! tokens.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::TunnelConfig;
use crate::frame::Limits;

/// Servers remembered at most; the table starts again when full.
const MAX_SERVERS: usize = 256;

fn table() -> &'static Mutex<HashMap<String, Limits>> {
    static TABLE: OnceLock<Mutex<HashMap<String, Limits>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
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
    table()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key(cfg))
        .cloned()
}

pub(super) fn remember(cfg: &TunnelConfig, limits: &Limits) {
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    if t.len() >= MAX_SERVERS {
        t.clear();
    }
    t.insert(key(cfg), limits.clone());
}

/// The server refused what it should have taken (it was replaced, say): ask it again.
pub(super) fn forget(cfg: &TunnelConfig) {
    table()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key(cfg));
}
