//! Access tokens, shared by every transport: off unless tokens are
//! configured; a full token may call anything, a read-only token only what
//! reads.

use crate::config::AuthSettings;

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Auth {
    full: Vec<String>,
    read: Vec<String>,
}

/// What a request's token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every route.
    Full,
    /// The read routes only.
    Read,
    /// Nothing (no token, or an unknown one).
    None,
}

impl Auth {
    /// From settings.
    pub fn new(s: &AuthSettings) -> Self {
        Self {
            full: s.full(),
            read: s.read_only(),
        }
    }

    /// Whether any token is configured (else everything is open).
    pub fn enabled(&self) -> bool {
        !self.full.is_empty() || !self.read.is_empty()
    }

    /// What `token` allows.
    pub fn access(&self, token: &str) -> Access {
        // compare every token in full, whatever matches, so timing says nothing
        let full = self.full.iter().fold(false, |acc, t| acc | same(t, token));
        let read = self.read.iter().fold(false, |acc, t| acc | same(t, token));
        if full {
            Access::Full
        } else if read {
            Access::Read
        } else {
            Access::None
        }
    }
}

/// Constant-time equality of two tokens.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(!same("", "a"));
        let auth = Auth {
            full: vec!["f".into()],
            read: vec!["r".into()],
        };
        assert_eq!(auth.access("f"), Access::Full);
        assert_eq!(auth.access("r"), Access::Read);
        assert_eq!(auth.access("x"), Access::None);
        assert!(!Auth::default().enabled());
    }
}
