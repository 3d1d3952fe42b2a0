//! [`Dtm`]: the coordinator's HTTP API (contract §1.2) and the options every
//! global transaction may carry (contract §1.3).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// A handle on a coordinator (dtx or dtm) at its `/api/dtmsvr` base URL.
/// Cheap to clone; clones share one connection pool.
///
/// ```
/// let dtm = dtx_client::Dtm::new("http://127.0.0.1:36789/api/dtmsvr");
/// assert_eq!(dtm.base_url(), "http://127.0.0.1:36789/api/dtmsvr");
/// ```
#[derive(Clone, Debug)]
pub struct Dtm {
    base: String,
    http: reqwest::Client,
}

impl Dtm {
    /// A handle on the coordinator at `base_url`, for example
    /// `http://localhost:36789/api/dtmsvr`. Requests time out after 10 s.
    ///
    /// ```
    /// let dtm = dtx_client::Dtm::new("http://localhost:36789/api/dtmsvr/");
    /// assert!(!dtm.base_url().ends_with('/'));
    /// ```
    pub fn new(base_url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self::with_client(base_url, http)
    }

    /// The same, with a `reqwest::Client` of your own (timeouts, proxies).
    ///
    /// ```
    /// let dtm = dtx_client::Dtm::with_client("http://localhost:36789/api/dtmsvr", reqwest::Client::new());
    /// # let _ = dtm;
    /// ```
    pub fn with_client(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        let mut base = base_url.into();
        while base.ends_with('/') {
            base.pop();
        }
        Self { base, http }
    }

    /// The base URL this handle calls.
    ///
    /// ```
    /// assert_eq!(dtx_client::Dtm::new("http://h/api/dtmsvr").base_url(), "http://h/api/dtmsvr");
    /// ```
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The HTTP client, for calls of your own to branch services.
    ///
    /// ```
    /// let http = dtx_client::Dtm::new("http://h/api/dtmsvr").http().clone();
    /// # let _ = http;
    /// ```
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A fresh gid from the coordinator (`GET newGid`).
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// let gid = dtm.new_gid().await?;
    /// assert!(!gid.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn new_gid(&self) -> Result<String> {
        let reply = self.get("newGid", &[]).await?;
        reply["gid"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::other(format!("newGid: no gid in {reply}")))
    }

    /// The transaction and its branches (`GET query`), as dtm's JSON:
    /// `{"transaction": {...} | null, "branches": [...]}`.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// let q = dtm.query("gid-1").await?;
    /// println!("{}", q["transaction"]["status"]);
    /// # Ok(()) }
    /// ```
    pub async fn query(&self, gid: &str) -> Result<Value> {
        self.get("query", &[("gid", gid)]).await
    }

    /// The global status of a transaction (`prepared`, `submitted`,
    /// `aborting`, `succeed`, `failed`), or `None` when it is unknown.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// if dtm.status("gid-1").await?.as_deref() == Some("succeed") { println!("done"); }
    /// # Ok(()) }
    /// ```
    pub async fn status(&self, gid: &str) -> Result<Option<String>> {
        let q = self.query(gid).await?;
        Ok(q["transaction"]["status"].as_str().map(str::to_owned))
    }

    /// Ends an unfinished transaction as `failed` (`POST forceStop`).
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// dtm.force_stop("gid-1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn force_stop(&self, gid: &str) -> Result<()> {
        self.post("forceStop", &serde_json::json!({ "gid": gid }))
            .await
            .map(drop)
    }

    /// POSTs `body` to a route under the base URL and reads the reply per
    /// contract §2.6: 409 is [`Error::Failure`], 425 [`Error::Ongoing`],
    /// another non-200 [`Error::Status`], and a 200 whose body mentions
    /// `FAILURE` is a failure too.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// dtm.post("abort", &serde_json::json!({"gid": "g", "trans_type": "msg"})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn post(&self, route: &str, body: &impl Serialize) -> Result<Value> {
        let reply = self
            .http
            .post(format!("{}/{route}", self.base))
            .json(body)
            .send()
            .await?;
        read_reply(reply).await
    }

    /// GETs a route under the base URL with query parameters. Replies are
    /// read by status only (409, 425, other non-200), since a 200 reply may
    /// quote a rollback reason that mentions FAILURE.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// let v = dtm.get("version", &[]).await?;
    /// println!("{}", v["version"]);
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, route: &str, query: &[(&str, &str)]) -> Result<Value> {
        let reply = self
            .http
            .get(format!("{}/{route}", self.base))
            .query(query)
            .send()
            .await?;
        let status = reply.status().as_u16();
        let body = reply.text().await?;
        if status != 200 {
            Error::from_reply(status, &body)?;
        }
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Registers a branch (`POST registerBranch`) with a flat map of strings
    /// (contract §3.3).
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// let mut body = std::collections::BTreeMap::new();
    /// body.insert("gid", "g".to_string());
    /// body.insert("trans_type", "xa".to_string());
    /// body.insert("branch_id", "01".to_string());
    /// body.insert("url", "http://svc/xa".to_string());
    /// dtm.register_branch(&body).await?;
    /// # Ok(()) }
    /// ```
    pub async fn register_branch(&self, body: &BTreeMap<&str, String>) -> Result<()> {
        self.post("registerBranch", body).await.map(drop)
    }
}

/// Reads a coordinator reply into JSON, mapping statuses to errors.
async fn read_reply(reply: reqwest::Response) -> Result<Value> {
    let status = reply.status().as_u16();
    let body = reply.text().await?;
    Error::from_reply(status, &body)?;
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Options every global transaction may carry (contract §1.3). Unset
/// options are left out of the request, so the coordinator's defaults apply.
///
/// ```
/// let o = dtx_client::TransOptions { wait_result: true, retry_interval: Some(5), ..Default::default() };
/// let v = serde_json::to_value(&o).unwrap();
/// assert_eq!(v["retry_interval"], 5);
/// assert!(v.get("timeout_to_fail").is_none());
/// ```
#[derive(Clone, Debug, Default, Serialize)]
pub struct TransOptions {
    /// Submit waits for the outcome and reports it (contract §3.10).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub wait_result: bool,
    /// Seconds after which a prepared tcc, xa or msg is timed out (a saga:
    /// aborted once submitted this long).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_to_fail: Option<i64>,
    /// Seconds allowed for each branch call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<i64>,
    /// Base retry interval, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<i64>,
    /// Saga only: immediate retries of a failing action before aborting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_limit: Option<i64>,
    /// Headers added to every call the coordinator makes to a branch.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub branch_headers: BTreeMap<String, String>,
}
