//! `redis.url`: one Redis server (`redis://`, `rediss://`, `unix://`) or
//! a Redis Cluster by its seed nodes
//! (`redis+cluster://[user:password@]host:port[,host:port...]`,
//! `rediss+cluster://` with TLS).

/// Where Redis is, as `redis.url` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (or the primary of a replicated pair) at this URL.
    Single(String),
    /// A Redis Cluster: its seed nodes, each as a plain one-server URL
    /// carrying the cluster URL's user, password and TLS.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Reads `redis.url`; a cluster URL must name at least one node, each
    /// `host[:port]`, and no database (a cluster has only db 0).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = match url.split_once("://") {
            Some(("redis+cluster", rest)) => ("redis", rest),
            Some(("rediss+cluster", rest)) => ("rediss", rest),
            _ => return Ok(Self::Single(url.to_owned())),
        };
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((user, hosts)) => (Some(user), hosts),
            None => (None, rest),
        };
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        if hosts.contains(['/', '?', '#']) {
            return Err(
                "a redis+cluster:// URL names nodes only: no database, path or query".into(),
            );
        }
        let mut seeds = Vec::new();
        for node in hosts.split(',') {
            let (host, port) = match node.rsplit_once(':') {
                Some((host, port)) => (host, port),
                None => (node, "6379"),
            };
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(format!(
                    "redis+cluster:// node {node:?} is not host:port (seeds are comma-separated)"
                ));
            }
            let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
            seeds.push(format!("{scheme}://{user}{host}:{port}"));
        }
        Ok(Self::Cluster(seeds))
    }
}

/// `url` with any password replaced by `***` when it is a cluster URL
/// (which the `url` crate cannot read: it names several hosts); `None`
/// for any other URL.
pub(super) fn redact_cluster_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.ends_with("+cluster") {
        return None;
    }
    let Some((userinfo, hosts)) = rest.rsplit_once('@') else {
        return Some(url.to_owned());
    };
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => userinfo.to_owned(),
    };
    Some(format!("{scheme}://{user}@{hosts}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_gives_its_seed_nodes_with_the_credentials() {
        assert_eq!(
            RedisTarget::parse("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001,node3").unwrap(),
            RedisTarget::Cluster(vec![
                "redis://u:p@10.0.0.1:7000".into(),
                "redis://u:p@10.0.0.2:7001".into(),
                "redis://u:p@node3:6379".into(),
            ])
        );
        assert_eq!(
            RedisTarget::parse("rediss+cluster://h:1/").unwrap(),
            RedisTarget::Cluster(vec!["rediss://h:1".into()])
        );
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/2").unwrap(),
            RedisTarget::Single("redis://127.0.0.1:6379/2".into())
        );
    }

    #[test]
    fn a_bad_cluster_url_is_refused() {
        for url in [
            "redis+cluster://",
            "redis+cluster://h:1,",
            "redis+cluster://h:x",
            "redis+cluster://h:0",
            "redis+cluster://h:1/0",
            "redis+cluster://:1",
        ] {
            assert!(RedisTarget::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn a_cluster_urls_password_is_redacted() {
        assert_eq!(
            redact_cluster_url("redis+cluster://u:secret@h:1,h:2").unwrap(),
            "redis+cluster://u:***@h:1,h:2"
        );
        assert_eq!(
            redact_cluster_url("redis+cluster://h:1").unwrap(),
            "redis+cluster://h:1"
        );
        assert_eq!(redact_cluster_url("redis://u:p@h:1"), None);
    }
}
