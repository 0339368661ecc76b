/// A fresh tunnel token: 128 random bits, URL-safe base64 without padding (22 characters).
///
/// Used by the server's authorize endpoint and by clients that mint their own token
/// (`TokenMode::Mint`), which servers of gost ≥ 3.3 accept.
///
/// ```
/// let t = pht_core::mint_token();
/// assert_eq!(t.len(), 22);
/// assert_ne!(t, pht_core::mint_token());
/// ```
pub fn mint_token() -> String {
    let mut raw = [0u8; 16];
    let filled = getrandom::fill(&mut raw);
    // wasm: no panic message is ever shown there, so none carries getrandom's error (whose
    // `Debug` weighs 700 bytes of the package).
    #[cfg(target_arch = "wasm32")]
    assert!(filled.is_ok(), "the OS random source is unavailable");
    #[cfg(not(target_arch = "wasm32"))]
    filled.expect("the OS random source is unavailable");
    base64_simd::URL_SAFE_NO_PAD.encode_to_string(raw)
}

/// The first characters of a token: enough to follow a tunnel in logs, too few to hijack it.
///
/// ```
/// assert_eq!(pht_core::token_prefix("abcdefghij"), "abcdef");
/// ```
pub fn token_prefix(token: &str) -> &str {
    let end = token
        .char_indices()
        .nth(6)
        .map(|(i, _)| i)
        .unwrap_or(token.len());
    &token[..end]
}
