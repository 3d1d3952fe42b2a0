//! `redis.url`: one Redis server (`redis://`, `rediss://`, `unix://`), a
//! Redis Cluster by its seed nodes
//! (`redis+cluster://[user:password@]host:port[,host:port...]`,
//! `rediss+cluster://` with TLS), or a master behind Redis Sentinel
//! (`redis+sentinel://[user:password@]host:port[,host:port...]/master-name[/db]`:
//! the sentinels' addresses; the user and password are the master's;
//! `rediss+sentinel://` with TLS to the sentinels and the master).

/// Where Redis is, as `redis.url` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (or the primary of a replicated pair) at this URL.
    Single(String),
    /// A Redis Cluster: its seed nodes, each as a plain one-server URL
    /// carrying the cluster URL's user, password and TLS.
    Cluster(Vec<String>),
    /// The master that Redis Sentinel names.
    Sentinel(SentinelTarget),
}

/// A master behind Redis Sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The sentinels, as `redis://host:port` (`rediss://` with TLS, which
    /// then goes for the master too).
    pub sentinels: Vec<String>,
    /// The master's name in the sentinels' configuration.
    pub master: String,
    /// The user dtx logs in to the master as.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// The database.
    pub db: i64,
}

impl RedisTarget {
    /// Reads `redis.url`. A cluster or sentinel URL must name at least
    /// one node, each `host[:port]`; a cluster URL no database (a cluster
    /// has only db 0), a sentinel URL the master's name.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, form, rest) = match url.split_once("://") {
            Some(("redis+cluster", rest)) => ("redis", "redis+cluster", rest),
            Some(("rediss+cluster", rest)) => ("rediss", "redis+cluster", rest),
            Some(("redis+sentinel", rest)) => ("redis", "redis+sentinel", rest),
            Some(("rediss+sentinel", rest)) => ("rediss", "redis+sentinel", rest),
            _ => return Ok(Self::Single(url.to_owned())),
        };
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        if rest.contains(['?', '#']) {
            return Err(format!("a {form}:// URL takes no query"));
        }
        let nodes = |credentials: bool| -> Result<Vec<String>, String> {
            let user = match userinfo {
                Some(u) if credentials => format!("{u}@"),
                _ => String::new(),
            };
            hosts
                .split(',')
                .map(|node| {
                    let (host, port) = node.rsplit_once(':').unwrap_or((node, "6379"));
                    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                        return Err(format!(
                            "{form}:// node {node:?} is not host:port (nodes are comma-separated)"
                        ));
                    }
                    Ok(format!("{scheme}://{user}{host}:{port}"))
                })
                .collect()
        };
        if form == "redis+cluster" {
            if !path.is_empty() {
                return Err("a redis+cluster:// URL names nodes only: no database or path".into());
            }
            return Ok(Self::Cluster(nodes(true)?));
        }
        let (master, db) = path.split_once('/').unwrap_or((path, ""));
        if master.is_empty() {
            return Err("a redis+sentinel:// URL ends with /<master-name>[/<db>]".into());
        }
        let db = match db {
            "" => 0,
            db => db
                .parse()
                .map_err(|_| format!("redis+sentinel:// database {db:?} is not a number"))?,
        };
        let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            Some((user, password)) => (
                Some(user.to_owned()).filter(|u| !u.is_empty()),
                Some(password.to_owned()).filter(|p| !p.is_empty()),
            ),
            None => (None, None),
        };
        Ok(Self::Sentinel(SentinelTarget {
            sentinels: nodes(false)?,
            master: master.to_owned(),
            username,
            password,
            db,
        }))
    }

    /// Whether dtx talks TLS to it.
    pub fn is_tls(&self) -> bool {
        match self {
            Self::Single(url) => url.starts_with("rediss://"),
            Self::Cluster(seeds) => seeds.first().is_some_and(|s| s.starts_with("rediss://")),
            Self::Sentinel(target) => target.is_tls(),
        }
    }
}

impl SentinelTarget {
    /// Whether dtx talks TLS to the sentinels, and so to the master
    /// (`rediss+sentinel://` names every sentinel `rediss://`).
    pub fn is_tls(&self) -> bool {
        self.sentinels
            .first()
            .is_some_and(|url| url.starts_with("rediss://"))
    }
}

/// `url` with any password replaced by `***` when it is a cluster or
/// sentinel URL (which the `url` crate cannot read: it names several
/// hosts); `None` for any other URL.
pub(super) fn redact_cluster_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.ends_with("+cluster") && !scheme.ends_with("+sentinel") {
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
        assert!(RedisTarget::parse("rediss+cluster://h:1").unwrap().is_tls());
        assert!(RedisTarget::parse("rediss://h:1").unwrap().is_tls());
        assert!(!RedisTarget::parse("redis+cluster://h:1").unwrap().is_tls());
        assert!(!RedisTarget::parse("unix:///r.sock").unwrap().is_tls());
    }

    #[test]
    fn a_sentinel_url_gives_the_sentinels_the_master_and_its_credentials() {
        assert_eq!(
            RedisTarget::parse("redis+sentinel://u:p@10.0.0.1:26379,s2/mymaster/3").unwrap(),
            RedisTarget::Sentinel(SentinelTarget {
                sentinels: vec!["redis://10.0.0.1:26379".into(), "redis://s2:6379".into()],
                master: "mymaster".into(),
                username: Some("u".into()),
                password: Some("p".into()),
                db: 3,
            })
        );
        let RedisTarget::Sentinel(plain) = RedisTarget::parse("redis+sentinel://h:1/m").unwrap()
        else {
            panic!("not a sentinel target");
        };
        assert_eq!((plain.username, plain.password, plain.db), (None, None, 0));
        let tls = RedisTarget::parse("rediss+sentinel://h:1,h:2/m").unwrap();
        let RedisTarget::Sentinel(ref over_tls) = tls else {
            panic!("not a sentinel target");
        };
        assert_eq!(over_tls.sentinels, ["rediss://h:1", "rediss://h:2"]);
        assert!(tls.is_tls());
        assert!(!RedisTarget::parse("redis+sentinel://h:1/m")
            .unwrap()
            .is_tls());
        assert_eq!(
            redact_cluster_url("redis+sentinel://:secret@h:1/m").unwrap(),
            "redis+sentinel://:***@h:1/m"
        );
    }

    #[test]
    fn a_bad_cluster_or_sentinel_url_is_refused() {
        for url in [
            "redis+cluster://",
            "redis+cluster://h:1,",
            "redis+cluster://h:x",
            "redis+cluster://h:0",
            "redis+cluster://h:1/0",
            "redis+cluster://h:1?x=1",
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:1/m/x",
            "redis+sentinel://h:x/m",
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
