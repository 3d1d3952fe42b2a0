//! Branch calls: turns one branch of a transaction into an [`Outcome`].
//!
//! One shared HTTP client with keep-alive pools serves every HTTP call,
//! one cached channel per target every gRPC call ([`grpc`]); a semaphore
//! bounds the calls in flight per replica, and one per host its share. A reply is classified
//! exactly as dtm's clients expect (contract §2.2), and an unknown outcome
//! is never taken as a failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{BranchSettings, TransSettings};
use crate::domain::{
    is_grpc_url, AllowList, Branch, EtcdTarget, GrpcTarget, Outcome, Resume, TraceContext, Trans,
    TransKind,
};
use crate::{otel, telemetry};

use classify::truncate;
pub use classify::{classify, classify_rpc};

/// Hosts with a permit pool of their own kept at most; pools of idle
/// hosts are dropped beyond this.
const MAX_HOST_POOLS: usize = 1024;

/// Calls branches.
#[derive(Clone)]
pub struct Caller {
    /// Plain `http://` calls sent as written.
    plain: plain::Client,
    /// Every other HTTP call (TLS, URLs to normalise, JSON-RPC) and alerts.
    client: reqwest::Client,
    allow: AllowList,
    limit: Arc<Semaphore>,
    hosts: Arc<HostPermits>,
    grpc: Arc<grpc::Channels>,
    etcd: Arc<crate::discovery::Resolver>,
    default_timeout: Duration,
    max_timeout: Duration,
    max_reply_bytes: usize,
}

/// The permits of one host: calls to one host may hold at most `share` of
/// the replica's in-flight calls, so a hanging host cannot starve the rest.
struct HostPermits {
    share: usize,
    pools: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostPermits {
    fn pool(&self, host: &str) -> Arc<Semaphore> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.get(host) {
            return Arc::clone(p);
        }
        if pools.len() >= MAX_HOST_POOLS {
            // a pool nobody holds has every permit back: dropping it is free
            pools.retain(|_, p| Arc::strong_count(p) > 1);
        }
        let p = Arc::new(Semaphore::new(self.share));
        pools.insert(host.to_owned(), Arc::clone(&p));
        p
    }
}

/// One request to a branch.
struct BranchRequest<'a> {
    /// Metric label of the call (bounded: an op, `msg` or `callback`).
    label: &'static str,
    url: &'a str,
    branch_id: &'a str,
    op: &'a str,
    body: &'a [u8],
    post: bool,
}

impl Caller {
    /// A caller with the configured pool, in-flight bound, default
    /// timeout and trusted gRPC certificates; the error says which setting
    /// is wrong.
    pub fn new(settings: &BranchSettings, trans: &TransSettings) -> Result<Self, String> {
        let allow = AllowList::parse(&settings.allowed_hosts);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(settings.pool_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            // the allow-list is checked on the URL a client named; a
            // redirect would lead anywhere, so none is ever followed
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let share = (settings.max_in_flight * settings.host_share_percent as usize / 100).max(1);
        Ok(Self {
            plain: plain::client(settings.pool_idle_per_host),
            client,
            allow,
            limit: Arc::new(Semaphore::new(settings.max_in_flight)),
            hosts: Arc::new(HostPermits {
                share,
                pools: Mutex::new(HashMap::new()),
            }),
            grpc: Arc::new(grpc::Channels::new(&settings.grpc_ca_file)?),
            etcd: Arc::default(),
            default_timeout: Duration::from_millis(trans.request_timeout_ms),
            max_timeout: Duration::from_millis(trans.max_request_timeout_ms),
            max_reply_bytes: settings.max_reply_bytes,
        })
    }

    /// Posts `body` to the alert webhook `url`; failures are only logged.
    /// The caller runs the returned future where a drain waits for it.
    pub fn alert(
        &self,
        url: &str,
        body: serde_json::Value,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let request = self
            .client
            .post(url)
            .timeout(self.default_timeout)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body.to_string());
        let url = url.to_owned();
        async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) if r.status().is_redirection() => {
                    tracing::warn!(url = %url, status = r.status().as_u16(), location = ?location(&r), "alert webhook answered a redirect, which dtx does not follow")
                }
                Ok(r) => {
                    tracing::warn!(url = %url, status = r.status().as_u16(), "alert webhook refused the alert")
                }
                Err(e) => tracing::warn!(url = %url, error = %e, "alert webhook unreachable"),
            }
        }
    }

    /// Calls one branch row of `t`.
    pub async fn call_branch(&self, t: &Trans, b: &Branch) -> Outcome {
        // dtm: POST when there is a body, and always for xa
        let post = !b.data.is_empty() || t.kind == TransKind::Xa;
        let body: &[u8] = if t.kind == TransKind::Xa {
            b""
        } else {
            &b.data
        };
        self.call(
            t,
            BranchRequest {
                label: b.op.as_str(),
                url: &b.url,
                branch_id: &b.id,
                op: b.op.as_str(),
                body,
                post,
            },
        )
        .await
    }

    /// Calls the msg check-back (`query_prepared`) of `t`: a GET with
    /// `branch_id=00&op=msg`.
    pub async fn check_back(&self, t: &Trans) -> Outcome {
        self.call(
            t,
            BranchRequest {
                label: "msg",
                url: &t.query_prepared,
                branch_id: "00",
                op: "msg",
                body: b"",
                post: false,
            },
        )
        .await
    }

    /// Calls the resume callback of a workflow (`query_prepared`) with
    /// `branch_id=00`, `op=<workflow name>` and the workflow's input as
    /// body (POST when there is one), as `resume` says.
    pub async fn workflow_callback(&self, t: &Trans, resume: &Resume) -> Outcome {
        // over gRPC the input travels in workflow.WorkflowData (contract §7.2)
        let wrapped;
        let grpc = is_grpc_url(&t.query_prepared);
        let body: &[u8] = if grpc {
            use prost::Message as _;
            wrapped = crate::proto::workflow::WorkflowData {
                data: resume.body.clone(),
            }
            .encode_to_vec();
            &wrapped
        } else {
            &resume.body
        };
        self.call(
            t,
            BranchRequest {
                label: "callback",
                url: &t.query_prepared,
                branch_id: "00",
                op: &resume.op,
                body,
                post: !resume.body.is_empty(),
            },
        )
        .await
    }

    async fn call(&self, t: &Trans, req: BranchRequest<'_>) -> Outcome {
        if req.url.is_empty() {
            return Outcome::Succeeded;
        }
        let started = std::time::Instant::now();
        let traced = otel::branch_call(t, req.branch_id, req.op, req.url);
        telemetry::in_flight(1.0);
        let outcome = self.send(t, &req, traced.headers.as_deref()).await;
        telemetry::in_flight(-1.0);
        traced.ended(&outcome);
        let label = match outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed(_) => "failed",
            Outcome::Ongoing => "ongoing",
            Outcome::Unknown(_) => "unknown",
        };
        telemetry::branch_call(t.kind.as_str(), req.label, label, started.elapsed());
        outcome
    }

    /// The deadline of a call of `t`: its `request_timeout`, clamped, else
    /// the default.
    fn timeout_of(&self, t: &Trans) -> Duration {
        if t.opts.request_timeout > 0 {
            Duration::from_secs(t.opts.request_timeout as u64).min(self.max_timeout)
        } else {
            self.default_timeout
        }
    }

    /// A permit of `host`'s share, then one of the replica's: a call
    /// waiting on a busy host holds none of the replica's permits. The
    /// semaphores are never closed.
    async fn permits(&self, host: &str) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let host_permit = self.hosts.pool(host).acquire_owned().await.ok()?;
        let permit = Arc::clone(&self.limit).acquire_owned().await.ok()?;
        Some((host_permit, permit))
    }

    /// A gRPC call to one live endpoint of an `etcd://` target; the etcd
    /// hosts and the endpoint must both be on the allow-list.
    async fn send_etcd(
        &self,
        t: &Trans,
        req: &BranchRequest<'_>,
        timeout: Duration,
        trace: Option<&TraceContext>,
    ) -> Outcome {
        let target = match EtcdTarget::parse(req.url) {
            Ok(target) => target,
            Err(e) => return Outcome::Unknown(e),
        };
        let refused = |what: &str| {
            Outcome::Unknown(format!(
                "{what} of {} is not on the allow-list (branch.allowed_hosts)",
                req.url
            ))
        };
        if !target
            .etcd
            .iter()
            .all(|h| self.allow.allows(&format!("{h}{}", target.path)))
        {
            return refused("the etcd host");
        }
        let endpoint = match self.etcd.pick(&target).await {
            Ok(endpoint) => endpoint,
            Err(e) => return Outcome::Unknown(e),
        };
        if !self.allow.allows(&format!("{endpoint}{}", target.path)) {
            return refused(&format!("endpoint {endpoint}"));
        }
        let Some(_permits) = self.permits(&endpoint).await else {
            return Outcome::Unknown("branch call limiter closed".into());
        };
        let target = GrpcTarget {
            tls: false,
            authority: endpoint,
            path: target.path,
        };
        let body = req.body.to_vec();
        self.grpc
            .call(t, &target, (req.branch_id, req.op), body, timeout, trace)
            .await
    }

    async fn send(
        &self,
        t: &Trans,
        req: &BranchRequest<'_>,
        trace: Option<&TraceContext>,
    ) -> Outcome {
        let timeout = self.timeout_of(t);
        // the gRPC and etcd calls are boxed: inline, their state would make
        // every HTTP call's future (and each pass's) kilobytes larger
        if req.url.starts_with("etcd://") {
            return Box::pin(self.send_etcd(t, req, timeout, trace)).await;
        }
        if !self.allow.allows(req.url) {
            return Outcome::Unknown(format!(
                "{} is not on the allow-list (branch.allowed_hosts)",
                req.url
            ));
        }
        if let Some(target) = GrpcTarget::of(req.url) {
            let Some(_permits) = self.permits(&target.authority).await else {
                return Outcome::Unknown("branch call limiter closed".into());
            };
            let body = req.body.to_vec();
            let call = self
                .grpc
                .call(t, &target, (req.branch_id, req.op), body, timeout, trace);
            return Box::pin(call).await;
        }
        let query = [
            ("gid", t.gid.as_str()),
            ("trans_type", t.kind.as_str()),
            ("branch_id", req.branch_id),
            ("op", req.op),
        ];
        if t.protocol != "json-rpc" {
            if let Some((uri, host_key)) = plain::target(req.url, &query) {
                let Some(_permits) = self.permits(&host_key).await else {
                    return Outcome::Unknown("branch call limiter closed".into());
                };
                let reply = plain::send(
                    &self.plain,
                    req.post,
                    uri,
                    branch_headers(t, trace),
                    req.body.to_vec(),
                    self.max_reply_bytes,
                    timeout,
                )
                .await;
                return match reply {
                    Ok(reply) => classify_reply(req.url, reply, false),
                    Err(e) => Outcome::Unknown(format!("calling {}: {e}", req.url)),
                };
            }
        }
        let mut url = match url::Url::parse(req.url) {
            Ok(u) => u,
            Err(e) => return Outcome::Unknown(format!("bad url {}: {e}", req.url)),
        };
        // json-rpc transactions call URLs naming a method over JSON-RPC
        let rpc_method = (t.protocol == "json-rpc")
            .then(|| {
                url.query_pairs()
                    .find(|(k, _)| k == "method")
                    .map(|(_, v)| v.into_owned())
            })
            .flatten();
        let body = match &rpc_method {
            Some(method) => match rpc_body(t, req, method) {
                Ok(b) => b.into_bytes(),
                Err(e) => return Outcome::Unknown(e),
            },
            None => {
                url.query_pairs_mut().extend_pairs(query);
                req.body.to_vec()
            }
        };
        let post = req.post || rpc_method.is_some();
        // the url crate lower-cases host names already
        let host = url.host_str().unwrap_or_default();
        let host_key = match url.port_or_known_default() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let method = if post { Method::POST } else { Method::GET };
        let mut builder = self
            .client
            .request(method, url)
            .timeout(timeout)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in branch_headers(t, trace) {
            // validated at creation; a header that still does not parse is skipped
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                builder = builder.header(n, v);
            }
        }
        if post {
            builder = builder.body(body);
        }
        let Some(_permits) = self.permits(&host_key).await else {
            return Outcome::Unknown("branch call limiter closed".into());
        };
        let mut response = match builder.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Unknown(format!("calling {}: {e}", req.url)),
        };
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            let location = location(&response);
            return classify_reply(
                req.url,
                Reply {
                    status,
                    location,
                    body: Vec::new(),
                },
                false,
            );
        }
        let body = match read_prefix(&mut response, self.max_reply_bytes).await {
            Ok(body) => body,
            Err(e) => return Outcome::Unknown(format!("reading reply of {}: {e}", req.url)),
        };
        let reply = Reply {
            status,
            location: None,
            body,
        };
        classify_reply(req.url, reply, rpc_method.is_some())
    }
}

/// A branch's HTTP reply: status, the `Location` of a redirect, and at
/// most the body's first `branch.max_reply_bytes` bytes.
struct Reply {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// The outcome of a branch's reply (a JSON-RPC one when `rpc`); a
/// redirect is never followed.
fn classify_reply(url: &str, reply: Reply, rpc: bool) -> Outcome {
    let status = reply.status;
    if (300..400).contains(&status) {
        let location = reply.location.as_deref().map(truncate);
        tracing::warn!(url = %url, status, location = ?location, "branch answered a redirect, which dtx does not follow");
        return Outcome::Unknown(format!(
            "url:{url} status {status}: redirect to {} not followed",
            location.unwrap_or_default()
        ));
    }
    let body = String::from_utf8_lossy(&reply.body);
    match classify(url, status, &body) {
        Outcome::Succeeded if rpc => classify_rpc(url, &body),
        outcome => outcome,
    }
}

/// The headers every call of `t` carries: its `branch_headers`, and the
/// trace context (which replaces a `traceparent` or `tracestate` among
/// them, so a branch never gets two).
fn branch_headers<'a>(
    t: &'a Trans,
    trace: Option<&'a TraceContext>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let own = t
        .opts
        .branch_headers
        .iter()
        .filter(move |(name, _)| {
            trace.is_none()
                || !(name.eq_ignore_ascii_case("traceparent")
                    || name.eq_ignore_ascii_case("tracestate"))
        })
        .map(|(k, v)| (k.as_str(), v.as_str()));
    let traced = trace.into_iter().flat_map(|tc| {
        [
            ("traceparent", tc.parent.as_str()),
            ("tracestate", tc.state.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
    });
    own.chain(traced)
}

/// The `Location` of a redirect, cut to the reason length.
fn location(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| truncate(&String::from_utf8_lossy(v.as_bytes())).to_owned())
}

/// Reads at most `limit` bytes of a reply body; the rest is never read
/// (the connection is then closed rather than reused).
async fn read_prefix(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await? {
            Some(chunk) => {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => break,
        }
    }
    Ok(body)
}

/// The JSON-RPC request for a branch: the payload (a JSON object) as
/// params, plus gid, trans_type, branch_id and op.
fn rpc_body(t: &Trans, req: &BranchRequest<'_>, method: &str) -> Result<String, String> {
    let mut params = if req.body.trim_ascii().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<serde_json::Value>(req.body) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                return Err(format!(
                    "the payload of a json-rpc branch {} must be a JSON object",
                    req.url
                ))
            }
        }
    };
    for (k, v) in [
        ("gid", t.gid.as_str()),
        ("trans_type", t.kind.as_str()),
        ("branch_id", req.branch_id),
        ("op", req.op),
    ] {
        params.insert(k.into(), serde_json::Value::String(v.into()));
    }
    let id = format!("{:016x}", fastrand::u64(..));
    Ok(
        serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            .to_string(),
    )
}

mod classify;
mod grpc;
mod plain;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
