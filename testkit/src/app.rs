//! A dtx replica in this process, and waiting for a transaction's status
//! through any replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use dtx::{Application, Settings};

use crate::{timings, RedisServer};

/// A gid no other test uses.
pub fn gid(name: &str) -> String {
    format!("{name}-{:08x}", fastrand::u32(..))
}

/// Settings for a test replica against `redis_url` under `prefix`: port
/// 0 and the test timings.
pub fn test_settings(redis_url: &str, prefix: &str) -> Settings {
    let mut s = Settings::load(None, |_| None).unwrap();
    s.redis.url = redis_url.to_owned();
    s.redis.key_prefix = prefix.to_owned();
    s.http.host = "127.0.0.1".into();
    s.http.port = 0;
    s.grpc.port = 0;
    timings::TEST.apply(&mut s);
    s
}

/// A unique key prefix.
pub fn prefix() -> String {
    format!("t{}", fastrand::u32(..))
}

/// One dtx replica running in this process.
pub struct TestApp {
    /// `http://127.0.0.1:<port>/api/dtmsvr`
    pub base: String,
    /// `http://127.0.0.1:<grpc port>`, the gRPC API.
    pub grpc: String,
    /// A client to talk to it.
    pub http: reqwest::Client,
    /// Its key prefix.
    pub prefix: String,
    /// Its engine, for what a test drives by hand.
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
        let grpc = format!("http://127.0.0.1:{}", app.grpc_port());
        let engine = app.engine();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://127.0.0.1:{port}/api/dtmsvr"),
            grpc,
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
        self.post_raw_to(&format!("api/dtmsvr/{route}"), body).await
    }

    /// POSTs raw bytes, as JSON, to `path` under the replica's root
    /// (`api/json-rpc`, ...).
    pub async fn post_raw_to(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/{path}", self.root()))
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

    /// The gids `all` lists, every page of `limit` read in turn (each must
    /// answer 200), in the order listed.
    pub async fn all_gids(&self, limit: usize) -> Vec<String> {
        let mut seen = Vec::new();
        let mut position = String::new();
        loop {
            let (status, page) = self
                .get(&format!("all?limit={limit}&position={position}"))
                .await;
            assert_eq!(status, 200, "{page}");
            for t in page["transactions"].as_array().unwrap() {
                seen.push(t["gid"].as_str().unwrap().to_owned());
            }
            position = page["next_position"].as_str().unwrap().to_owned();
            if position.is_empty() {
                return seen;
            }
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn root(&self) -> String {
        self.base.replace("/api/dtmsvr", "")
    }

    /// GETs `path` under the root, which must answer 200.
    async fn get_ok(&self, path: &str) -> reqwest::Response {
        let r = self
            .http
            .get(format!("{}/{path}", self.root()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
        r
    }

    /// The console's attention list (`/api/admin/attention`).
    pub async fn attention(&self) -> Value {
        self.get_ok("api/admin/attention")
            .await
            .json()
            .await
            .unwrap()
    }

    /// The Prometheus page (`/api/metrics`).
    pub async fn metrics(&self) -> String {
        self.get_ok("api/metrics").await.text().await.unwrap()
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
    /// The status of `gid` ("" when unknown or unreachable).
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
