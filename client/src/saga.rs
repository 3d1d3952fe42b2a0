//! SAGA (contract §3.5): steps of action and compensation, run in order or
//! concurrently with ordering constraints, submitted in one request.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::client::{Dtm, TransOptions};
use crate::error::Result;

/// A saga under construction. Add steps, then [`Saga::submit`].
///
/// ```no_run
/// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
/// let gid = dtm.new_gid().await?;
/// dtx_client::Saga::new(&dtm, &gid)
///     .add("http://svc/out", "http://svc/out-revert", &serde_json::json!({"amount": 30}))
///     .add("http://svc/in", "http://svc/in-revert", &serde_json::json!({"amount": 30}))
///     .submit()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Saga {
    dtm: Dtm,
    gid: String,
    steps: Vec<Value>,
    payloads: Vec<String>,
    concurrent: bool,
    orders: BTreeMap<String, Vec<usize>>,
    options: TransOptions,
}

impl Saga {
    /// A saga with this gid on this coordinator.
    ///
    /// ```
    /// let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// let saga = dtx_client::Saga::new(&dtm, "g1");
    /// assert_eq!(saga.gid(), "g1");
    /// ```
    pub fn new(dtm: &Dtm, gid: &str) -> Self {
        Self {
            dtm: dtm.clone(),
            gid: gid.to_owned(),
            steps: Vec::new(),
            payloads: Vec::new(),
            concurrent: false,
            orders: BTreeMap::new(),
            options: TransOptions::default(),
        }
    }

    /// The gid.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Saga::new(&dtm, "g").gid(), "g");
    /// ```
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a step: `action` is called with `payload` as JSON body, and
    /// `compensate` (same body) undoes it on rollback. An empty URL is a
    /// step that succeeds without a call.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// let saga = dtx_client::Saga::new(&dtm, "g").add("http://a", "http://a-revert", &1);
    /// assert_eq!(saga.body()["steps"][0]["action"], "http://a");
    /// ```
    pub fn add(mut self, action: &str, compensate: &str, payload: &impl serde::Serialize) -> Self {
        self.steps
            .push(json!({ "action": action, "compensate": compensate }));
        self.payloads
            .push(serde_json::to_string(payload).unwrap_or_else(|_| "null".into()));
        self
    }

    /// Runs the actions concurrently; only [`Saga::add_branch_order`]
    /// constrains their order.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// let saga = dtx_client::Saga::new(&dtm, "g").concurrent();
    /// assert_eq!(saga.body()["concurrent"], true);
    /// ```
    pub fn concurrent(mut self) -> Self {
        self.concurrent = true;
        self
    }

    /// Step `step` (0-based, in [`Saga::add`] order) starts only after every
    /// step in `after` succeeded. Only meaningful with [`Saga::concurrent`].
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// let saga = dtx_client::Saga::new(&dtm, "g").concurrent().add_branch_order(2, &[0, 1]);
    /// let custom: serde_json::Value = serde_json::from_str(saga.body()["custom_data"].as_str().unwrap()).unwrap();
    /// assert_eq!(custom["orders"]["2"], serde_json::json!([0, 1]));
    /// ```
    pub fn add_branch_order(mut self, step: usize, after: &[usize]) -> Self {
        self.orders
            .entry(step.to_string())
            .or_default()
            .extend_from_slice(after);
        self
    }

    /// Sets all options at once.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// let o = dtx_client::TransOptions { retry_limit: Some(3), ..Default::default() };
    /// let saga = dtx_client::Saga::new(&dtm, "g").options(o);
    /// assert_eq!(saga.body()["retry_limit"], 3);
    /// ```
    pub fn options(mut self, options: TransOptions) -> Self {
        self.options = options;
        self
    }

    /// Submit waits for the outcome: `Ok` only when the saga succeeded,
    /// [`crate::Error::Failure`] when it rolled back.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Saga::new(&dtm, "g").wait_result().body()["wait_result"], true);
    /// ```
    pub fn wait_result(mut self) -> Self {
        self.options.wait_result = true;
        self
    }

    /// Aborts the saga once it is older than `seconds`.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Saga::new(&dtm, "g").timeout_to_fail(60).body()["timeout_to_fail"], 60);
    /// ```
    pub fn timeout_to_fail(mut self, seconds: i64) -> Self {
        self.options.timeout_to_fail = Some(seconds);
        self
    }

    /// Seconds allowed for each branch call.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Saga::new(&dtm, "g").request_timeout(5).body()["request_timeout"], 5);
    /// ```
    pub fn request_timeout(mut self, seconds: i64) -> Self {
        self.options.request_timeout = Some(seconds);
        self
    }

    /// Base retry interval in seconds.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Saga::new(&dtm, "g").retry_interval(2).body()["retry_interval"], 2);
    /// ```
    pub fn retry_interval(mut self, seconds: i64) -> Self {
        self.options.retry_interval = Some(seconds);
        self
    }

    /// Immediate retries of a failing action before the saga aborts.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Saga::new(&dtm, "g").retry_limit(3).body()["retry_limit"], 3);
    /// ```
    pub fn retry_limit(mut self, n: i64) -> Self {
        self.options.retry_limit = Some(n);
        self
    }

    /// A header the coordinator adds to every branch call.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// let saga = dtx_client::Saga::new(&dtm, "g").branch_header("x-tenant", "7");
    /// assert_eq!(saga.body()["branch_headers"]["x-tenant"], "7");
    /// ```
    pub fn branch_header(mut self, name: &str, value: &str) -> Self {
        self.options
            .branch_headers
            .insert(name.to_owned(), value.to_owned());
        self
    }

    /// The JSON body [`Saga::submit`] sends.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Saga::new(&dtm, "g").body()["trans_type"], "saga");
    /// ```
    pub fn body(&self) -> Value {
        let mut body = serde_json::to_value(&self.options).unwrap_or_else(|_| json!({}));
        body["gid"] = json!(self.gid);
        body["trans_type"] = json!("saga");
        body["steps"] = json!(self.steps);
        body["payloads"] = json!(self.payloads);
        body["concurrent"] = json!(self.concurrent);
        if self.concurrent || !self.orders.is_empty() {
            let custom = json!({ "concurrent": self.concurrent, "orders": self.orders });
            body["custom_data"] = json!(custom.to_string());
        }
        body
    }

    /// Submits the saga. Without [`Saga::wait_result`] this returns once
    /// the coordinator stored it; the coordinator then drives it to its end.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// dtx_client::Saga::new(&dtm, "g").add("", "", &()).submit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn submit(&self) -> Result<()> {
        self.dtm.post("submit", &self.body()).await.map(drop)
    }
}
