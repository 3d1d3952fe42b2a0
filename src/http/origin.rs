//! Refuses requests a browser marks as cross-site, so a web page a
//! developer opens cannot drive the API (dtm's GET routes change state,
//! and any content type is accepted). Clients outside a browser send
//! neither `Sec-Fetch-Site` nor `Origin`, and pass unchanged.

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Origins, besides dtx's own, whose pages may call the API.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// Parses `"https://a.example,https://b.example:8443"`; origins compare
    /// case-insensitively, without a trailing slash.
    pub fn parse(list: &str) -> Self {
        Self(
            list.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
        )
    }

    /// Whether a request with these headers comes from a page that may
    /// call dtx: not marked cross-site, and with no `Origin` or dtx's own
    /// (the `Host` it was sent to) or a configured one.
    pub fn admits(&self, headers: &axum::http::HeaderMap) -> bool {
        let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
        if value(header::HeaderName::from_static("sec-fetch-site"))
            .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
        {
            return false;
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.0.contains(&origin) {
            return true;
        }
        // dtx's own pages: the origin's host and port are the request's Host
        let own = value(header::HOST).map(str::to_ascii_lowercase);
        match (url::Url::parse(&origin), own) {
            (Ok(u), Some(host)) => {
                let authority = match (u.host_str(), u.port()) {
                    (Some(h), Some(p)) => format!("{h}:{p}"),
                    (Some(h), None) => h.to_owned(),
                    _ => return false,
                };
                authority == host
            }
            _ => false,
        }
    }
}

/// The middleware: 403, and nothing done, for a cross-site request.
/// The refusal of a request with `headers`, if a browser marks it as
/// cross-site.
pub(super) fn refusal(origins: &AllowedOrigins, headers: &HeaderMap) -> Option<Response> {
    if origins.admits(headers) {
        return None;
    }
    Some(
        ApiError::Forbidden(
            "cross-site request refused: add the page's origin to http.allowed_origins (DTX_HTTP_ALLOWED_ORIGINS) to allow it"
                .into(),
        )
        .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_own_and_listed_origins_pass() {
        let o = AllowedOrigins::parse("https://ops.example/, http://b:81");
        assert!(o.admits(&headers(&[("host", "dtx:36789")])));
        assert!(o.admits(&headers(&[
            ("host", "dtx:36789"),
            ("origin", "http://dtx:36789")
        ])));
        assert!(o.admits(&headers(&[
            ("host", "x"),
            ("origin", "https://ops.example")
        ])));
        assert!(o.admits(&headers(&[("host", "x"), ("origin", "http://B:81")])));
        assert!(!o.admits(&headers(&[
            ("host", "x"),
            ("origin", "http://evil.example")
        ])));
        assert!(!o.admits(&headers(&[("host", "x"), ("origin", "null")])));
        assert!(!o.admits(&headers(&[("host", "x"), ("sec-fetch-site", "cross-site")])));
        assert!(o.admits(&headers(&[
            ("host", "x"),
            ("sec-fetch-site", "same-origin")
        ])));
    }
}
