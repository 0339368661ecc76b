//! What the handler, listener and dialer registries share: a table of each type's names
//! (canonical first, then gost's aliases; `""` for the type an empty name means) and the
//! function that builds it. Lookups and "supported: ..." messages read the table, so a
//! type is known everywhere once its line is there.

/// A registry: one line per type.
pub(crate) struct Registry<B: 'static>(pub &'static [(&'static [&'static str], B)]);

impl<B: Copy> Registry<B> {
    /// The builder of the type `kind` names.
    pub fn find(&self, kind: &str) -> Option<B> {
        self.0
            .iter()
            .find(|(names, _)| names.contains(&kind))
            .map(|(_, build)| *build)
    }

    /// Every name, for "supported: ..." messages.
    pub fn supported(&self) -> String {
        let names: Vec<&str> = self
            .0
            .iter()
            .flat_map(|(names, _)| names.iter().copied())
            .filter(|n| !n.is_empty())
            .collect();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::Registry;

    #[test]
    fn names_find_their_builder_and_list_without_the_empty_one() {
        let r: Registry<u8> = Registry(&[(&["tcp", ""], 1), (&["socks5", "socks"], 2)]);
        assert_eq!(r.find(""), Some(1));
        assert_eq!(r.find("socks"), Some(2));
        assert_eq!(r.find("ws"), None);
        assert_eq!(r.supported(), "tcp, socks5, socks");
    }
}
