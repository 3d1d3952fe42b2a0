//! Which hosts dtx may call: a configured allow-list, so that a client
//! cannot make the coordinator call any URL it likes.

use super::GrpcTarget;

/// Allowed hosts; empty allows every host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<String>,
}

impl AllowList {
    /// Parses `"host-a,host-b:8080"`: an entry without a port allows every
    /// port of that host; names compare case-insensitively.
    pub fn parse(list: &str) -> Self {
        Self {
            entries: list
                .split(',')
                .map(|e| e.trim().to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
        }
    }

    /// Whether any host is allowed.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `url` may be called (an empty URL is never called, so it is
    /// allowed).
    pub fn allows(&self, url: &str) -> bool {
        if self.entries.is_empty() || url.is_empty() {
            return true;
        }
        let (host, port) = if let Some(target) = GrpcTarget::of(url) {
            // the authority is lower-cased already
            match target.authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse::<u16>().ok()),
                None => (target.authority, None),
            }
        } else {
            match url::Url::parse(url) {
                Ok(u) => (
                    u.host_str().unwrap_or_default().to_ascii_lowercase(),
                    u.port_or_known_default(),
                ),
                Err(_) => return false,
            }
        };
        self.entries
            .iter()
            .any(|e| *e == host || port.is_some_and(|p| *e == format!("{host}:{p}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        let open = AllowList::parse("");
        assert!(open.is_open() && open.allows("http://anything/x"));
        let list = AllowList::parse("svc-a, SVC-B:8080");
        assert!(list.allows("http://svc-a/x"));
        assert!(list.allows("https://svc-a:9443/x"));
        assert!(list.allows("http://svc-b:8080/y"));
        assert!(!list.allows("http://svc-b:8081/y"));
        assert!(!list.allows("http://169.254.169.254/latest/meta-data"));
        assert!(!list.allows("http://svc-a.evil.com/x"));
        assert!(list.allows("svc-b:8080/pkg.Svc/M"));
        assert!(!list.allows("other:8080/pkg.Svc/M"));
        assert!(list.allows("grpc://svc-b:8080/pkg.Svc/M"));
        assert!(list.allows("grpcs://SVC-A:443/pkg.Svc/M"));
        assert!(!list.allows("grpcs://svc-b:8081/pkg.Svc/M"));
        assert!(list.allows(""));
    }
}
