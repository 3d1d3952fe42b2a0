//! gRPC branch targets (contract §3.4): `host:port/package.Service/Method`
//! (dtm's default driver), the same with `grpc://` or, over TLS,
//! `grpcs://`; and targets found through etcd (contract §7.3, go-zero's
//! layout): `etcd://host:port[,host:port]/service-key/package.Service/Method`,
//! with optional `user` and `password` query parameters for etcd.

/// A plain `http://` URL that the url crate would parse and leave exactly
/// as written: split into its authority (`host[:port]`) and the rest
/// (starting with `/`). `None` for anything else (TLS, upper case, IPv6
/// or user info, a default or bad port, a host the url crate would read
/// as a bad IPv4 address, dot segments, percent escapes, characters it
/// would escape, a fragment): such URLs take the url crate's parse, which
/// costs far more (it maps every host name through IDNA).
pub fn plain_http(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/')?);
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n != 80 && n != 0)
    });
    // a name whose last label starts with a letter, or a dotted IPv4
    // address as std reads it (which the url crate reads the same way)
    let last_label = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    // (punycode labels, xn--, are decoded and checked by IDNA)
    let host_ok = !host.is_empty()
        && !host.contains("xn--")
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && (last_label
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase())
            || host.parse::<std::net::Ipv4Addr>().is_ok());
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"\"'<>\\^`{|}#%".contains(&b))
        && !path
            .split('?')
            .next()
            .unwrap_or_default()
            .split('/')
            .any(|segment| segment == "." || segment == "..");
    (port_ok && host_ok && path_ok).then_some((authority, path))
}

/// A parsed direct gRPC branch URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTarget {
    /// Whether the call goes over TLS (`grpcs://`).
    pub tls: bool,
    /// `host:port`, lower-cased.
    pub authority: String,
    /// The gRPC method, `/package.Service/Method`.
    pub path: String,
}

impl GrpcTarget {
    /// Parses `[grpc://|grpcs://]host:port/package.Service/Method`, split
    /// at the first `/` after the authority; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        Self::of(url).ok_or_else(|| {
            format!(
                "gRPC branch {url:?} must be [grpc://|grpcs://]host:port/package.Service/Method"
            )
        })
    }

    /// The target `url` names, or `None` when it is no direct gRPC URL
    /// (an `http(s)://` one, say): what the call paths ask, at no cost
    /// for a URL of another kind.
    pub fn of(url: &str) -> Option<Self> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("grpcs://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("grpc://") {
            (false, rest)
        } else if url.contains("://") {
            return None;
        } else {
            (false, url)
        };
        let (authority, method) = rest.split_once('/').unwrap_or((rest, ""));
        let method_ok = method.split('/').count() >= 2 && method.split('/').all(|s| !s.is_empty());
        (!authority.is_empty() && method_ok).then(|| Self {
            tls,
            authority: authority.to_ascii_lowercase(),
            path: format!("/{method}"),
        })
    }

    /// The host part of the authority (the name TLS verifies).
    pub fn host(&self) -> &str {
        let host = match self.authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.authority,
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Whether a branch URL is called over gRPC (directly or through etcd).
pub fn is_grpc_url(url: &str) -> bool {
    url.starts_with("etcd://") || GrpcTarget::of(url).is_some()
}

/// A parsed `etcd://` branch URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTarget {
    /// The etcd endpoints, `host:port`.
    pub etcd: Vec<String>,
    /// The key whose `<key>/...` entries hold the service's live
    /// `host:port` endpoints.
    pub key: String,
    /// The gRPC method, `/package.Service/Method`.
    pub path: String,
    /// etcd user and password, when the URL names them.
    pub credentials: Option<(String, String)>,
}

impl EtcdTarget {
    /// Parses a branch URL; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        Self::parse_parts(url, true)
    }

    /// Parses `etcd://host:port[,host:port]/service-key` (what a replica
    /// registers under); `path` is then empty.
    pub fn parse_service(url: &str) -> Result<Self, String> {
        Self::parse_parts(url, false)
    }

    fn parse_parts(url: &str, with_method: bool) -> Result<Self, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url:?} is not an etcd:// target"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut parts = rest.splitn(3, '/');
        let hosts = parts.next().unwrap_or_default();
        let key = parts.next().unwrap_or_default();
        let method = parts.next().unwrap_or_default();
        let etcd: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        let method_ok = if with_method {
            method.split('/').count() == 2 && method.split('/').all(|s| !s.is_empty())
        } else {
            method.is_empty()
        };
        if etcd.is_empty() || key.is_empty() || !method_ok {
            let form = if with_method {
                "etcd://host:port[,host:port]/service-key/package.Service/Method"
            } else {
                "etcd://host:port[,host:port]/service-key"
            };
            return Err(format!("{url:?} must be {form}"));
        }
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let credentials = match (get("user"), get("password")) {
            (Some(u), p) => Some((u, p.unwrap_or_default())),
            (None, _) => None,
        };
        Ok(Self {
            etcd,
            key: key.to_owned(),
            path: if with_method {
                format!("/{method}")
            } else {
                String::new()
            },
            credentials,
        })
    }

    /// The etcd endpoints and key this target watches, as one cache key.
    pub fn service(&self) -> String {
        format!("{}/{}", self.etcd.join(","), self.key)
    }

    /// The service with the credentials it is read with: targets naming
    /// other credentials are watched apart, so each authenticates on its
    /// own. Holds the password: never log it.
    pub fn watch_key(&self) -> String {
        match &self.credentials {
            Some((user, password)) => format!("{}\0{user}\0{password}", self.service()),
            None => self.service(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_urls_are_the_ones_the_url_crate_leaves_as_written() {
        for url in [
            "http://127.0.0.1:8081/api/a1",
            "http://busi-svc.ns.svc.cluster.local/a?x=1&y=2",
            "http://busi:8080/",
            "http://busi./a",
        ] {
            assert!(plain_http(url).is_some(), "{url}");
            let parsed = url::Url::parse(url).unwrap();
            assert_eq!(parsed.as_str(), url);
        }
        for url in [
            "https://busi/a",
            "HTTP://busi/a",
            "http://Busi/a",
            "http://busi",
            "http://busi:80/a",
            "http://busi:0/a",
            "http://busi:/a",
            "http://:8080/a",
            "http://busi:99999/a",
            "http://user:pw@busi/a",
            "http://[::1]:8080/a",
            "http://a.123/x",
            "http://256.1.1.1/x",
            "http://01.1.1.1/x",
            "http://busi/a/../b",
            "http://busi/./b",
            "http://busi/a b",
            "http://busi/a%20b",
            "http://busi/a#frag",
            "http://busi/é",
            "http://busi/a?x='",
            "http://xn--a/x",
        ] {
            assert!(plain_http(url).is_none(), "{url}");
        }
    }

    proptest::proptest! {
        /// Whatever `plain_http` accepts, the url crate parses to the
        /// very same text, so calling it as written changes nothing.
        #[test]
        fn accepted_urls_parse_unchanged(
            host in "[a-z0-9.-]{1,20}",
            port in proptest::option::of(0u32..70000),
            path in proptest::prop_oneof![
                "/[ -~]{0,30}",
                "/[a-zA-Z0-9/._~!$&()*+,;=:@?-]{0,30}",
            ],
        ) {
            let url = match port {
                Some(p) => format!("http://{host}:{p}{path}"),
                None => format!("http://{host}{path}"),
            };
            if plain_http(&url).is_some() {
                let parsed = url::Url::parse(&url);
                proptest::prop_assert!(parsed.is_ok(), "{url}: {parsed:?}");
                let parsed = parsed.unwrap();
                proptest::prop_assert_eq!(parsed.as_str(), url.as_str());
            }
        }
    }

    #[test]
    fn direct_targets_split_at_the_first_slash() {
        let t = |tls, authority: &str, path: &str| GrpcTarget {
            tls,
            authority: authority.into(),
            path: path.into(),
        };
        let parse = |u| GrpcTarget::parse(u).unwrap();
        assert_eq!(
            parse("Localhost:5000/busi.Busi/TransIn"),
            t(false, "localhost:5000", "/busi.Busi/TransIn")
        );
        assert_eq!(
            parse("grpc://svc:5000/busi.Busi/TransIn"),
            t(false, "svc:5000", "/busi.Busi/TransIn")
        );
        let tls = parse("grpcs://Busi.example.com:443/busi.Busi/TransIn");
        assert_eq!(tls, t(true, "busi.example.com:443", "/busi.Busi/TransIn"));
        assert_eq!(tls.host(), "busi.example.com");
        assert_eq!(parse("grpcs://[::1]:5000/a.B/C").host(), "::1");
        assert_eq!(parse("grpcs://svc/a.B/C").host(), "svc");
        for bad in [
            "localhost:5000",
            "/busi.Busi/TransIn",
            "localhost:5000/TransIn",
            "grpc://",
            "grpcs://svc:1/",
            "grpc://svc:1/a.B/",
            "http://svc:1/a.B/C",
            "etcd://e:2379/key/a.B/C",
        ] {
            assert!(GrpcTarget::parse(bad).is_err(), "{bad}");
        }
        assert!(is_grpc_url("etcd://e:2379/key/a.B/C"));
        assert!(is_grpc_url("grpcs://svc:1/a.B/C"));
        assert!(!is_grpc_url("http://svc:1/a.B/C"));
    }

    #[test]
    fn go_zero_targets_parse() {
        let t = EtcdTarget::parse(
            "etcd://localhost:2379,10.0.0.2:2379/user.rpc/user.User/saveUser?user=root&password=pw",
        )
        .unwrap();
        assert_eq!(t.etcd, ["localhost:2379", "10.0.0.2:2379"]);
        assert_eq!(t.key, "user.rpc");
        assert_eq!(t.path, "/user.User/saveUser");
        assert_eq!(t.credentials, Some(("root".into(), "pw".into())));
        assert_eq!(t.service(), "localhost:2379,10.0.0.2:2379/user.rpc");
        let other = EtcdTarget::parse(
            "etcd://localhost:2379,10.0.0.2:2379/user.rpc/user.User/saveUser?user=root&password=no",
        )
        .unwrap();
        assert_eq!(other.service(), t.service());
        assert_ne!(other.watch_key(), t.watch_key());
        let plain = EtcdTarget::parse("etcd://e:2379/score.rpc/score.UserScore/saveUserScore");
        assert_eq!(plain.unwrap().credentials, None);
        let reg = EtcdTarget::parse_service("etcd://localhost:2379/dtmservice").unwrap();
        assert_eq!((reg.key.as_str(), reg.path.as_str()), ("dtmservice", ""));
        assert!(EtcdTarget::parse_service("etcd://localhost:2379/dtmservice/x.Y/Z").is_err());
        for bad in [
            "etcd://",
            "etcd://e:2379",
            "etcd://e:2379/user.rpc",
            "etcd://e:2379/user.rpc/saveUser",
            "etcd:///user.rpc/user.User/saveUser",
            "etcd://e:2379/user.rpc/user.User/save/more",
            "http://e:2379/user.rpc/user.User/saveUser",
        ] {
            assert!(EtcdTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
