//! Test support: a private `redis-server` per test, dtx replicas (in
//! process or as real processes), and a fake branch service that records
//! every call and answers as each test scripts it.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

use dtx::{Application, Settings};

pub use testkit::{cpu_us, free_port, peak_rss_kib, RedisServer};

/// Starts the dtx binary on `redis` under key prefix `prefix`, with short
/// test timings and then `env` on top; returns it once it listens, with
/// its port.
pub fn spawn_dtx(redis: &RedisServer, prefix: &str, env: &[(&str, &str)]) -> (Child, u16) {
    let port = free_port();
    let child = testkit::dtx_command(env!("CARGO_BIN_EXE_dtx").as_ref(), &redis.url(), port)
        .env("DTX_REDIS_KEY_PREFIX", prefix)
        .env("DTX_REDIS_SHARDS", "4")
        .env("DTX_SCHEDULER_LEASE_MS", "1500")
        .env("DTX_SCHEDULER_RECHECK_MS", "200")
        .env("DTX_RETRY_BASE_MS", "100")
        .env("DTX_RETRY_MAX_MS", "1000")
        .envs(env.iter().copied())
        .spawn()
        .expect("the dtx binary starts");
    testkit::wait_port(port, "dtx");
    (child, port)
}

/// Settings for a test replica against `redis_url`: port 0, a unique key
/// prefix, and short timings.
pub fn test_settings(redis_url: &str, prefix: &str) -> Settings {
    let mut s = Settings::load(None, |_| None).unwrap();
    s.redis.url = redis_url.to_owned();
    s.redis.key_prefix = prefix.to_owned();
    s.redis.shards = 4;
    s.http.host = "127.0.0.1".into();
    s.http.port = 0;
    s.retry.base_ms = 100;
    s.retry.max_ms = 1000;
    s.scheduler.recheck_ms = 100;
    s.scheduler.lease_ms = 2000;
    s.scheduler.drain_timeout_ms = 3000;
    s.http.drain_delay_ms = 0;
    s.trans.request_timeout_ms = 3000;
    s
}

/// A unique key prefix.
pub fn prefix() -> String {
    format!("t{}", fastrand::u32(..))
}

/// One dtx replica running in this process.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub prefix: String,
    pub engine: Arc<dtx::engine::Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// Starts a replica on `redis` with default test settings.
    pub async fn spawn(redis: &RedisServer) -> Self {
        Self::spawn_with(test_settings(&redis.url(), &prefix())).await
    }

    /// Starts a replica with these settings.
    pub async fn spawn_with(settings: Settings) -> Self {
        let app = Application::build(&settings).await.expect("replica starts");
        let port = app.port();
        let engine = app.engine();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://127.0.0.1:{port}/api/dtmsvr"),
            http: reqwest::Client::new(),
            prefix: settings.redis.key_prefix.clone(),
            engine,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops it gracefully and waits.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// POSTs `body` to `route`; returns the status and JSON reply.
    pub async fn post(&self, route: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/{route}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POSTs raw bytes to `route`.
    pub async fn post_raw(&self, route: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/{route}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GETs `route?query`.
    pub async fn get(&self, route_and_query: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/{route_and_query}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The console's attention list (`/api/admin/attention`).
    pub async fn attention(&self) -> Value {
        let root = self.base.replace("/api/dtmsvr", "");
        let r = self
            .http
            .get(format!("{root}/api/admin/attention"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.json().await.unwrap()
    }

    /// The Prometheus page (`/api/metrics`).
    pub async fn metrics(&self) -> String {
        let root = self.base.replace("/api/dtmsvr", "");
        let r = self
            .http
            .get(format!("{root}/api/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.unwrap()
    }

    /// The `query` reply for `gid`.
    pub async fn query(&self, gid: &str) -> Value {
        let (status, body) = self.get(&format!("query?gid={gid}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The stored status of `gid` ("" when unknown).
    pub async fn status(&self, gid: &str) -> String {
        self.query(gid).await["transaction"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The branch statuses of `gid`, in storage order.
    pub async fn branch_statuses(&self, gid: &str) -> Vec<String> {
        self.query(gid).await["branches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["status"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until `gid` reaches `status`, or panics after `secs`.
    pub async fn wait_status(&self, gid: &str, status: &str, secs: u64) {
        wait_status_at(self, gid, status, secs).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Anything that can read a transaction's status.
pub trait StatusSource {
    fn status_of(&self, gid: &str) -> impl std::future::Future<Output = String>;
}

impl StatusSource for TestApp {
    async fn status_of(&self, gid: &str) -> String {
        self.status(gid).await
    }
}

/// Waits until `gid` reaches `status` as `src` sees it.
pub async fn wait_status_at(src: &impl StatusSource, gid: &str, status: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = src.status_of(gid).await;
        if last == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{gid} is {last:?}, not {status:?}, after {secs} s");
}

/// A dtx process, killed when dropped.
pub struct Replica {
    pub child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

impl Replica {
    pub fn start(redis: &RedisServer, prefix: &str) -> Self {
        Self::start_with(redis, prefix, &[])
    }

    pub fn start_with(redis: &RedisServer, prefix: &str, env: &[(&str, &str)]) -> Self {
        let (child, port) = spawn_dtx(redis, prefix, env);
        Self {
            child,
            base: format!("http://127.0.0.1:{port}/api/dtmsvr"),
            http: reqwest::Client::new(),
        }
    }

    pub async fn post(&self, route: &str, body: &Value) -> u16 {
        self.http
            .post(format!("{}/{route}", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status();
    }

    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }
}

impl StatusSource for Replica {
    async fn status_of(&self, gid: &str) -> String {
        let r = self
            .http
            .get(format!("{}/query?gid={gid}", self.base))
            .send()
            .await;
        match r {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["transaction"]["status"].as_str().map(str::to_owned)),
            Err(_) => None,
        }
        .unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A gid no other test uses.
pub fn gid(name: &str) -> String {
    format!("{name}-{:08x}", fastrand::u32(..))
}

/// How the fake branch service answers one call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 `{"dtm_result":"SUCCESS"}`.
    Success,
    /// 409 `{"dtm_result":"FAILURE"}`.
    Failure,
    /// 425 `{"dtm_result":"ONGOING"}`.
    Ongoing,
    /// 500 with a plain message.
    Error,
    /// This status and body.
    Raw(u16, String),
    /// Wait this long, then succeed.
    Slow(u64),
    /// Wait this long, then answer this status and body.
    Delayed(u64, u16, String),
    /// This 3xx status with this `Location`.
    Redirect(u16, String),
    /// This status and a body of this many spaces, streamed in chunks.
    Stream(u16, usize),
}

/// One call the fake branch service received.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub method: String,
    pub query: HashMap<String, String>,
    pub body: String,
    pub headers: HashMap<String, String>,
    pub at: Instant,
}

#[derive(Default)]
struct BranchState {
    calls: Vec<Call>,
    script: HashMap<String, VecDeque<Reply>>,
    defaults: HashMap<String, Reply>,
}

/// A real HTTP server standing for the branch services of a test.
#[derive(Clone)]
pub struct Branches {
    pub base: String,
    state: Arc<Mutex<BranchState>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Branches {
    /// Starts it on a free port.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(BranchState::default()));
        let app = Router::new()
            .route("/{*path}", any(handle))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            state,
            task: Arc::new(task),
        }
    }

    /// The URL of `path` (e.g. "a1").
    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// Queues replies for the next calls to `path`; after them, the
    /// default (success unless set).
    pub fn script(&self, path: &str, replies: &[Reply]) {
        let mut s = self.state.lock().unwrap();
        s.script
            .entry(path.to_owned())
            .or_default()
            .extend(replies.iter().cloned());
    }

    /// Sets the reply of `path` once its queue is empty.
    pub fn set_default(&self, path: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .defaults
            .insert(path.to_owned(), reply);
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Paths called for `gid`, in arrival order.
    pub fn paths_for(&self, gid: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.query.get("gid").map(String::as_str) == Some(gid))
            .map(|c| c.path)
            .collect()
    }

    /// Stops serving (calls then fail to connect).
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

async fn handle(
    State(state): State<Arc<Mutex<BranchState>>>,
    Path(path): Path<String>,
    method: Method,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let reply = {
        let mut s = state.lock().unwrap();
        s.calls.push(Call {
            path: path.clone(),
            method: method.to_string(),
            query,
            body: String::from_utf8_lossy(&body).into_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                .collect(),
            at: Instant::now(),
        });
        match s.script.get_mut(&path).and_then(VecDeque::pop_front) {
            Some(r) => r,
            None => s.defaults.get(&path).cloned().unwrap_or(Reply::Success),
        }
    };
    let (status, body) = match reply {
        Reply::Redirect(status, to) => {
            return (
                StatusCode::from_u16(status).unwrap(),
                [(axum::http::header::LOCATION, to)],
                "",
            )
                .into_response();
        }
        Reply::Stream(status, bytes) => {
            const CHUNK: usize = 64 * 1024;
            let chunks = (0..bytes.div_ceil(CHUNK)).map(move |i| {
                let n = CHUNK.min(bytes - i * CHUNK);
                Ok::<_, std::io::Error>(Bytes::from(vec![b' '; n]))
            });
            let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
            return (StatusCode::from_u16(status).unwrap(), body).into_response();
        }
        Reply::Success => (200, json!({"dtm_result": "SUCCESS"}).to_string()),
        Reply::Failure => (
            409,
            json!({"dtm_result": "FAILURE", "message": "refused by the test"}).to_string(),
        ),
        Reply::Ongoing => (425, json!({"dtm_result": "ONGOING"}).to_string()),
        Reply::Error => (500, "internal trouble".to_owned()),
        Reply::Raw(status, body) => (status, body),
        Reply::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (200, json!({"dtm_result": "SUCCESS"}).to_string())
        }
        Reply::Delayed(ms, status, body) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (status, body)
        }
    };
    (StatusCode::from_u16(status).unwrap(), body).into_response()
}

/// A 2-step saga body on `b`'s paths `a1`, `c1`, `a2`, `c2`.
pub fn saga_body(gid: &str, b: &Branches) -> Value {
    json!({
        "gid": gid,
        "trans_type": "saga",
        "steps": [
            {"action": b.url("a1"), "compensate": b.url("c1")},
            {"action": b.url("a2"), "compensate": b.url("c2")},
        ],
        "payloads": ["{\"amount\":30}", "{\"amount\":30}"],
    })
}
