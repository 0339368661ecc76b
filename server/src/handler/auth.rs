//! Credential checks shared by the proxy handlers.
//!
//! A handler asks one [`Authenticator`]. Today its users come from the service's
//! `handler.auth` block (one user, as `-L http://user:pass@:8080` produces); gost's named
//! `authers` (lists of users referenced by name) are another source of the same [`Users`]
//! set and plug in at [`for_service`].

use std::collections::HashMap;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::config::ServiceConfig;

/// Decides whether a user name and password are allowed.
pub trait Authenticator: Send + Sync {
    fn authenticate(&self, username: &str, password: &str) -> bool;
}

/// A fixed set of users and their passwords.
#[derive(Clone, Default)]
pub struct Users {
    users: HashMap<String, String>,
}

impl Users {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a user. An empty user name is ignored, as gost ignores an `auth`
    /// block without one.
    pub fn add(&mut self, username: impl Into<String>, password: impl Into<String>) {
        let username = username.into();
        if !username.is_empty() {
            self.users.insert(username, password.into());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("Users").field("names", &names).finish()
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Users {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        let mut users = Users::new();
        for (u, p) in iter {
            users.add(u, p);
        }
        users
    }
}

impl Authenticator for Users {
    fn authenticate(&self, username: &str, password: &str) -> bool {
        match self.users.get(username) {
            // Compares without stopping at the first difference, so timing says nothing
            // about how much of a password was right.
            Some(want) => want.as_bytes().ct_eq(password.as_bytes()).into(),
            None => false,
        }
    }
}

/// The authenticator a service's handler uses, or `None` when everyone is allowed.
pub fn for_service(svc: &ServiceConfig) -> Option<Arc<dyn Authenticator>> {
    let mut users = Users::new();
    if let Some(a) = &svc.handler.auth {
        users.add(a.username.clone(), a.password.clone());
    }
    // Users of named authers, resolved by `Config::resolve`.
    for a in &svc.handler.users {
        users.add(a.username.clone(), a.password.clone());
    }
    if users.is_empty() {
        None
    } else {
        Some(Arc::new(users))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;

    #[test]
    fn single_user_from_handler_auth() {
        let mut svc = ServiceConfig::default();
        assert!(for_service(&svc).is_none());
        svc.handler.auth = Some(AuthConfig {
            username: String::new(),
            password: "x".into(),
        });
        assert!(
            for_service(&svc).is_none(),
            "no user name: no auth, as gost"
        );
        svc.handler.auth = Some(AuthConfig {
            username: "u".into(),
            password: "p".into(),
        });
        let a = for_service(&svc).unwrap();
        assert!(a.authenticate("u", "p"));
        assert!(!a.authenticate("u", "P"));
        assert!(!a.authenticate("u", ""));
        assert!(!a.authenticate("", ""));
        assert!(!a.authenticate("v", "p"));
    }

    #[test]
    fn user_lists() {
        let users: Users = [("alice", "secret"), ("bob", "hunter2")]
            .into_iter()
            .collect();
        assert_eq!(users.len(), 2);
        assert!(users.authenticate("alice", "secret"));
        assert!(users.authenticate("bob", "hunter2"));
        assert!(!users.authenticate("alice", "hunter2"));
        assert_eq!(
            format!("{users:?}"),
            "Users { names: [\"alice\", \"bob\"] }"
        );
    }
}
