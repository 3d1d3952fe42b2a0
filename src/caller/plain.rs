//! Plain-HTTP branch calls on hyper's pooled client, for the common case:
//! an `http://` URL that is sent as written. It skips what the general
//! client (reqwest, which keeps TLS, odd URLs and JSON-RPC) does per call:
//! parsing the URL twice (once by the url crate, with IDNA for the host),
//! and its redirect and retry layers, which dtx never uses.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::Reply;

/// The pooled client of plain-HTTP calls.
pub(super) type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// A client keeping at most `idle_per_host` idle connections per host for
/// 60 s, with Nagle's algorithm off.
pub(super) fn client(idle_per_host: usize) -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle_per_host)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// Where a call of `url` goes on the plain path: the URL with `pairs`
/// appended to its query (form-encoded, as the url crate would), and the
/// `host:port` its permits are counted under. `None` when `url` is not
/// one the url crate would leave as written ([`crate::domain::plain_http`]):
/// those take the general path.
pub(super) fn target(url: &str, pairs: &[(&str, &str)]) -> Option<(Uri, String)> {
    let (authority, _) = crate::domain::plain_http(url)?;
    let mut full = String::with_capacity(url.len() + 96);
    full.push_str(url);
    match url.split_once('?') {
        Some((_, query)) if !query.is_empty() => full.push('&'),
        Some(_) => {}
        None => full.push('?'),
    }
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            full.push('&');
        }
        full.push_str(key);
        full.push('=');
        full.extend(url::form_urlencoded::byte_serialize(value.as_bytes()));
    }
    let uri = Uri::try_from(full).ok()?;
    let host = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Some((uri, host))
}

/// Sends one request and reads at most `limit` bytes of its reply (the
/// rest is never read: the connection is then closed, not reused), all
/// within `timeout`.
pub(super) async fn send<'a>(
    client: &Client,
    post: bool,
    uri: Uri,
    headers: impl Iterator<Item = (&'a str, &'a str)>,
    body: Vec<u8>,
    limit: usize,
    timeout: Duration,
) -> Result<Reply, String> {
    let method = if post { Method::POST } else { Method::GET };
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(ACCEPT, HeaderValue::from_static("*/*"))
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in headers {
        // validated at creation; a header that still does not parse is skipped
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            request = request.header(n, v);
        }
    }
    let body = if post {
        Bytes::from(body)
    } else {
        Bytes::new()
    };
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            // hyper-util's error names only the layer; its source says why
            match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            }
        })?;
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut incoming = response.into_body();
        let mut body = Vec::new();
        if !status.is_redirection() {
            while body.len() < limit {
                match incoming.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(chunk) = frame.into_data() {
                            let room = limit - body.len();
                            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        }
                    }
                    Some(Err(e)) => return Err(format!("reading the reply: {e}")),
                    None => break,
                }
            }
        }
        Ok(Reply {
            status: status.as_u16(),
            location,
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(reply) => reply,
        Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIRS: [(&str, &str); 2] = [("gid", "a b&c"), ("op", "action")];

    #[test]
    fn simple_urls_take_the_plain_path_with_the_query_appended() {
        let (uri, host) = target("http://127.0.0.1:8081/api/a1", &PAIRS).unwrap();
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:8081/api/a1?gid=a+b%26c&op=action"
        );
        assert_eq!(host, "127.0.0.1:8081");
        let (uri, host) = target("http://busi.svc/api/a1?x=1", &PAIRS).unwrap();
        assert_eq!(
            uri.to_string(),
            "http://busi.svc/api/a1?x=1&gid=a+b%26c&op=action"
        );
        assert_eq!(host, "busi.svc:80");
        let (uri, _) = target("http://busi.svc/a?", &PAIRS).unwrap();
        assert_eq!(uri.to_string(), "http://busi.svc/a?gid=a+b%26c&op=action");
    }

    #[test]
    fn urls_the_url_crate_would_change_take_the_general_path() {
        // which ones: domain::plain_http's tests
        for url in [
            "https://busi.svc/a",
            "http://Busi.svc/a",
            "http://busi.svc/a%20b",
        ] {
            assert!(target(url, &PAIRS).is_none(), "{url}");
        }
    }
}
