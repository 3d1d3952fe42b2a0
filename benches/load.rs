//! The dtx load harness: starts its own `redis-server`, dtx replicas (the
//! release binary) and a minimal branch service (this binary, re-run in
//! `branch-service` mode, so each process's CPU is counted apart), drives
//! one workload, checks that every transaction ended right, and prints a
//! table.
//!
//! ```text
//! cargo bench --bench load -- <workload> [--conc N] [--secs S] [--rate R] [--aof] [--count N]
//! workloads: w0 w1 w2 w3 w4 w5 w6 fanout redis dtmrs all
//! cargo bench --bench load -- pairs [--pairs 3] [--w0] [--base BIN]   (dtmrs, or another dtx build, and dtx alternating)
//! cargo bench --bench load -- growth [--count 1000000]   (see load/growth.rs)
//! cargo bench --bench load -- cluster [--masters 1,2,3] [--shards 16]   (see load/cluster.rs)
//! cargo bench --bench load -- spread
//! ```

#[path = "load/cluster.rs"]
mod cluster;
#[path = "load/growth.rs"]
mod growth;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use testkit::{cpu_us, dtx_command, free_port, DtxProcess, Persistence, Process, RedisServer};

/// A process under measurement: its name in the CPU table, its pid, and
/// the handle that stops it when dropped.
struct Proc {
    name: &'static str,
    pid: u32,
    _handle: Box<dyn Send>,
}

impl Proc {
    fn other(name: &'static str, child: std::process::Child) -> Self {
        Self {
            name,
            pid: child.id(),
            _handle: Box::new(Process(child)),
        }
    }
}

/// The harness's own Redis: AOF `everysec` with `--aof`, else none.
fn start_redis(aof: bool) -> RedisServer {
    RedisServer::start_with(if aof {
        Persistence::AofEverySec
    } else {
        Persistence::None
    })
}

/// A dtx replica with its default settings and `extra` on top.
fn start_dtx(redis: &RedisServer, extra: &[(&str, &str)]) -> (Proc, String) {
    start_dtx_at(&redis.url(), extra)
}

/// [`start_dtx`] on the Redis (or cluster) at `url`.
fn start_dtx_at(url: &str, extra: &[(&str, &str)]) -> (Proc, String) {
    start_dtx_bin(env!("CARGO_BIN_EXE_dtx"), url, extra)
}

/// [`start_dtx_at`] with another dtx binary (`pairs --base`).
fn start_dtx_bin(bin: &str, url: &str, extra: &[(&str, &str)]) -> (Proc, String) {
    let port = free_port();
    let mut cmd = dtx_command(bin.as_ref(), url, port);
    cmd.envs(extra.iter().copied());
    let dtx = DtxProcess::spawn(cmd, port);
    let base = dtx.base.clone();
    (
        Proc {
            name: "dtx",
            pid: dtx.pid(),
            _handle: Box::new(dtx),
        },
        base,
    )
}

fn wait_port(port: u16) {
    testkit::wait_port(port, "a benchmarked process");
}

/// The peer coordinator `dtmrs` (crates.io, `cargo install dtmrs --features
/// redis`), when installed: `$DTMRS_BIN`, else `dtmrs` on PATH.
fn dtmrs_bin() -> Option<String> {
    if let Ok(p) = std::env::var("DTMRS_BIN") {
        return Some(p);
    }
    let found = Command::new("sh")
        .args(["-c", "command -v dtmrs"])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    (!path.is_empty()).then_some(path)
}

fn start_dtmrs(bin: &str, redis: &RedisServer) -> (Proc, String) {
    let port = free_port();
    let grpc = free_port();
    let child = Command::new(bin)
        .env("DTMRS_DB", format!("{}/0", redis.url()))
        .env("DTMRS_ADDR", format!("127.0.0.1:{port}"))
        .env("DTMRS_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("dtmrs starts");
    wait_port(port);
    (
        Proc::other("dtmrs", child),
        format!("http://127.0.0.1:{port}/api/dtmsvr"),
    )
}

/// An OTLP/HTTP collector that counts the spans it is sent and keeps
/// nothing, as a child process of this binary (`--otel`: its CPU is
/// counted apart).
struct Sink {
    proc: Proc,
    base: String,
}

impl Sink {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["otlp-sink", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port);
        Self {
            proc: Proc::other("otlp", child),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn spans(&self) -> u64 {
        let reply = reqwest::get(format!("{}/spans", self.base)).await.unwrap();
        reply.text().await.unwrap().trim().parse().unwrap_or(0)
    }
}

async fn otlp_sink(port: u16) {
    use prost::Message as _;
    let spans = Arc::new(AtomicU64::new(0));
    let count = spans.clone();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
                let n = ExportTraceServiceRequest::decode(body.as_ref())
                    .map(|r| {
                        r.resource_spans
                            .iter()
                            .flat_map(|r| &r.scope_spans)
                            .map(|s| s.spans.len() as u64)
                            .sum()
                    })
                    .unwrap_or(0);
                count.fetch_add(n, Ordering::Relaxed);
                async { "" }
            }),
        )
        .route(
            "/spans",
            axum::routing::get(move || {
                let n = spans.load(Ordering::Relaxed);
                async move { n.to_string() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}

/// The branch service, as a child process of this binary: HTTP on
/// `base`, the same over gRPC (`busi.Busi`) on `grpc`.
struct Branches {
    proc: Proc,
    base: String,
    grpc: String,
}

impl Branches {
    fn start(notify_port: u16, port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(free_port);
        let grpc_port = free_port();
        let exe = std::env::current_exe().unwrap();
        let child = Command::new(exe)
            .args([
                "branch-service",
                &port.to_string(),
                &notify_port.to_string(),
                &grpc_port.to_string(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port);
        wait_port(grpc_port);
        Self {
            proc: Proc::other("branches", child),
            base: format!("http://127.0.0.1:{port}"),
            grpc: format!("127.0.0.1:{grpc_port}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    async fn stats(&self, http: &reqwest::Client) -> HashMap<String, u64> {
        http.get(self.url("stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

mod busi {
    #![allow(clippy::all, unreachable_pub, missing_docs)]
    tonic::include_proto!("busi");
}

/// The gRPC side of the branch service: every method answers OK at once
/// and is counted by name; `TransIn` sends the gid (`dtm-gid`) to the
/// harness, like `n=1` over HTTP.
#[derive(Clone)]
struct GrpcBusi {
    counts: Arc<Mutex<HashMap<String, u64>>>,
    sock: Arc<UdpSocket>,
}

impl GrpcBusi {
    fn answer<T>(
        &self,
        method: &str,
        r: &tonic::Request<T>,
        notify: bool,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(method.to_owned())
            .or_default() += 1;
        if notify {
            if let Some(gid) = r.metadata().get("dtm-gid") {
                let _ = self.sock.send(gid.as_bytes());
            }
        }
        Ok(tonic::Response::new(()))
    }
}

#[tonic::async_trait]
impl busi::busi_server::Busi for GrpcBusi {
    async fn trans_out(
        &self,
        r: tonic::Request<busi::BusiReq>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        self.answer("TransOut", &r, false)
    }
    async fn trans_out_revert(
        &self,
        r: tonic::Request<busi::BusiReq>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        self.answer("TransOutRevert", &r, false)
    }
    async fn trans_in(
        &self,
        r: tonic::Request<busi::BusiReq>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        self.answer("TransIn", &r, true)
    }
    async fn trans_in_revert(
        &self,
        r: tonic::Request<busi::BusiReq>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        self.answer("TransInRevert", &r, false)
    }
    async fn query_prepared(
        &self,
        r: tonic::Request<busi::BusiReq>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        self.answer("QueryPrepared", &r, false)
    }
}

/// Set by `POST /release` of the branch service: calls of `hold` answer.
static RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Wakes the held calls.
static HELD: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Branch-service mode: answers every call at once; paths starting with
/// `fail` answer FAILURE; calls of `hold` wait until `POST /release`; a
/// call with `n=1` in its query sends the gid to the harness over UDP (the
/// harness's "finished" signal). The gRPC side listens on `grpc_port`.
async fn branch_service(port: u16, notify: u16, grpc_port: u16) {
    use axum::extract::{Path, RawQuery, State};
    use axum::routing::{any, get};
    let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    sock.connect(("127.0.0.1", notify)).unwrap();
    let grpc = GrpcBusi {
        counts: counts.clone(),
        sock: sock.clone(),
    };
    let grpc_listener = tokio::net::TcpListener::bind(("127.0.0.1", grpc_port))
        .await
        .unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(busi::busi_server::BusiServer::new(grpc))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            ),
    );
    type S = (Arc<Mutex<HashMap<String, u64>>>, Arc<UdpSocket>);
    async fn handle(
        State((counts, sock)): State<S>,
        Path(path): Path<String>,
        RawQuery(q): RawQuery,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        *counts.lock().unwrap().entry(path.clone()).or_default() += 1;
        if path == "hold" {
            // held until the harness posts /release (growth: memory in flight)
            loop {
                let released = HELD.notified();
                if RELEASED.load(Ordering::Acquire) {
                    break;
                }
                released.await;
            }
        }
        let q = q.unwrap_or_default();
        if q.contains("n=1") {
            if let Some(gid) = q.split('&').find_map(|kv| kv.strip_prefix("gid=")) {
                let _ = sock.send(gid.as_bytes());
            }
        }
        if path.starts_with("fail") {
            (
                axum::http::StatusCode::CONFLICT,
                "{\"dtm_result\":\"FAILURE\"}",
            )
                .into_response()
        } else {
            "{\"dtm_result\":\"SUCCESS\"}".into_response()
        }
    }
    let app = axum::Router::new()
        .route(
            "/stats",
            get(|State((counts, _)): State<S>| async move {
                axum::Json(counts.lock().unwrap().clone())
            }),
        )
        .route(
            "/release",
            axum::routing::post(|| async {
                RELEASED.store(true, Ordering::Release);
                HELD.notify_waiters();
                ""
            }),
        )
        .route("/{*path}", any(handle))
        .with_state((counts, sock));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}

/// Completion signals from the branch service, by gid.
#[derive(Clone, Default)]
struct Waiters(Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<Instant>>>>);

impl Waiters {
    fn listen(&self) -> u16 {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let map = self.0.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = sock.recv(&mut buf) {
                let gid = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Some(tx) = map.lock().unwrap().remove(&gid) {
                    let _ = tx.send(Instant::now());
                }
            }
        });
        port
    }

    fn expect(&self, gid: &str) -> tokio::sync::oneshot::Receiver<Instant> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.lock().unwrap().insert(gid.to_owned(), tx);
        rx
    }
}

/// Latencies in microseconds.
#[derive(Default)]
struct Lat(Vec<u32>);

impl Lat {
    fn pct(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i] as f64 / 1000.0
    }
}

/// What a workload does per transaction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// 2-step saga, empty URLs, wait_result (dtm's own benchmark).
    W0,
    /// 2-step saga with real branches, no wait_result.
    W1,
    /// W1 over gRPC: submitted to dtx's gRPC API, both branches gRPC.
    W1Grpc,
    /// 2-step saga whose second action fails.
    W2,
    /// msg, prepare + submit, one branch.
    W3,
    /// tcc, prepare, register two branches, submit.
    W4,
    /// W1 with this many steps, every action on the path `s`.
    Steps(usize),
}

/// One transaction of `kind`; returns when it is known finished.
async fn one(
    kind: Kind,
    http: &reqwest::Client,
    dtx: &str,
    b: &str,
    gid: &str,
    waiters: &Waiters,
) -> Result<(), String> {
    let post = |route: &'static str, body: Value| {
        let req = http.post(format!("{dtx}/{route}")).json(&body);
        async move {
            let r = req.send().await.map_err(|e| e.to_string())?;
            if r.status() != 200 {
                return Err(format!("{route}: {}", r.status()));
            }
            Ok(())
        }
    };
    let saga = |a2: &str, notify_on: &str| {
        let url = |p: &str| {
            if p == notify_on {
                format!("{b}/{p}?n=1")
            } else {
                format!("{b}/{p}")
            }
        };
        json!({"gid": gid, "trans_type": "saga",
               "steps": [{"action": url("a1"), "compensate": url("c1")},
                         {"action": url(a2), "compensate": url("c2")}],
               "payloads": ["{\"amount\":30}", "{\"amount\":30}"]})
    };
    let wait = |rx: tokio::sync::oneshot::Receiver<Instant>| async move {
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| "no completion within 30 s".to_owned())?
            .map_err(|_| "completion lost".to_owned())?;
        Ok::<(), String>(())
    };
    match kind {
        Kind::W0 => {
            post(
                "submit",
                json!({"gid": gid, "trans_type": "saga", "wait_result": true,
                "steps": [{"action": "", "compensate": ""}, {"action": "", "compensate": ""}],
                "payloads": ["{\"amount\":30}", "{\"amount\":30}"]}),
            )
            .await
        }
        Kind::W1 => {
            let rx = waiters.expect(gid);
            post("submit", saga("a2", "a2")).await?;
            wait(rx).await
        }
        Kind::W1Grpc => {
            // dtx: its gRPC API's URL; b: the branch service's gRPC host:port
            use dtx::grpc::pb;
            let rx = waiters.expect(gid);
            let url = |m: &str| format!("{b}/busi.Busi/{m}");
            let payload = {
                use prost::Message as _;
                busi::BusiReq {
                    amount: 30,
                    user_id: "u1".into(),
                }
                .encode_to_vec()
            };
            let request = pb::DtmRequest {
                gid: gid.to_owned(),
                trans_type: "saga".into(),
                steps: json!([
                    {"action": url("TransOut"), "compensate": url("TransOutRevert")},
                    {"action": url("TransIn"), "compensate": url("TransInRevert")},
                ])
                .to_string(),
                bin_payloads: vec![payload.clone(), payload],
                ..Default::default()
            };
            grpc_client(dtx)
                .submit(request)
                .await
                .map_err(|e| format!("submit: {e}"))?;
            wait(rx).await
        }
        Kind::Steps(n) => {
            let rx = waiters.expect(gid);
            let steps: Vec<Value> = (0..n)
                .map(|i| {
                    let notify = if i + 1 == n { "?n=1" } else { "" };
                    json!({"action": format!("{b}/s{notify}"), "compensate": format!("{b}/c")})
                })
                .collect();
            let payloads = vec!["{\"amount\":30}"; n];
            post(
                "submit",
                json!({"gid": gid, "trans_type": "saga", "steps": steps, "payloads": payloads}),
            )
            .await?;
            wait(rx).await
        }
        Kind::W2 => {
            let rx = waiters.expect(gid);
            post("submit", saga("fail2", "c1")).await?;
            wait(rx).await
        }
        Kind::W3 => {
            let rx = waiters.expect(gid);
            let body = json!({"gid": gid, "trans_type": "msg",
                "steps": [{"action": format!("{b}/m1?n=1")}], "payloads": ["{\"amount\":30}"],
                "query_prepared": format!("{b}/qp")});
            post("prepare", body.clone()).await?;
            post("submit", body).await?;
            wait(rx).await
        }
        Kind::W4 => {
            let rx = waiters.expect(gid);
            post("prepare", json!({"gid": gid, "trans_type": "tcc"})).await?;
            for (id, notify) in [("01", "?n=1"), ("02", "")] {
                post(
                    "registerBranch",
                    json!({"gid": gid, "trans_type": "tcc", "branch_id": id,
                    "data": "{\"amount\":30}", "confirm": format!("{b}/confirm{id}{notify}"),
                    "cancel": format!("{b}/cancel{id}")}),
                )
                .await?;
                // the client calls try itself
                http.post(format!("{b}/try{id}?gid={gid}&op=try"))
                    .body("{}")
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
            }
            post("submit", json!({"gid": gid, "trans_type": "tcc"})).await?;
            wait(rx).await
        }
    }
}

/// One gRPC channel per dtx replica, shared by every worker (HTTP/2
/// multiplexes their calls, as one client process would).
fn grpc_client(url: &str) -> dtx::grpc::pb::dtm_client::DtmClient<tonic::transport::Channel> {
    static CHANNELS: std::sync::LazyLock<Mutex<HashMap<String, tonic::transport::Channel>>> =
        std::sync::LazyLock::new(Mutex::default);
    let channel = CHANNELS
        .lock()
        .unwrap()
        .entry(url.to_owned())
        .or_insert_with(|| {
            tonic::transport::Endpoint::from_shared(url.to_owned())
                .unwrap()
                .tcp_nodelay(true)
                .connect_lazy()
        })
        .clone();
    dtx::grpc::pb::dtm_client::DtmClient::new(channel)
}

struct Run {
    name: String,
    done: u64,
    errors: u64,
    secs: f64,
    lat: Lat,
}

/// Closed loop: `conc` workers, each running one transaction after the
/// other for `secs`; `targets` are the dtx base URLs shared round-robin.
async fn closed(
    kind: Kind,
    conc: usize,
    secs: f64,
    targets: &[String],
    b: &str,
    waiters: &Waiters,
    tag: &str,
) -> Run {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(conc * 2)
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let lats = Arc::new(Mutex::new(Lat::default()));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (http, done, errors, lats, waiters, first_error) = (
            http.clone(),
            done.clone(),
            errors.clone(),
            lats.clone(),
            waiters.clone(),
            first_error.clone(),
        );
        let dtx = targets[w % targets.len()].clone();
        let b = b.to_owned();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            let mut i = 0u64;
            while Instant::now() < end {
                let gid = format!("{tag}-{w}-{i}");
                i += 1;
                let t0 = Instant::now();
                match one(kind, &http, &dtx, &b, &gid, &waiters).await {
                    Ok(()) => {
                        local.push(t0.elapsed().as_micros() as u32);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
            }
            lats.lock().unwrap().0.extend(local);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    if let Some(e) = first_error.lock().unwrap().take() {
        eprintln!("first error: {e}");
    }
    let lat = std::mem::take(&mut *lats.lock().unwrap());
    Run {
        name: String::new(),
        done: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
        lat,
    }
}

/// Open loop: one transaction every 1/rate s for `secs`, each timed from
/// when it was due to start (so a stall is not hidden).
async fn open(
    kind: Kind,
    rate: f64,
    secs: f64,
    targets: &[String],
    b: &str,
    waiters: &Waiters,
    tag: &str,
) -> Run {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap();
    let lats = Arc::new(Mutex::new(Lat::default()));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let n = (rate * secs) as u64;
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (http, lats, errors, waiters) =
            (http.clone(), lats.clone(), errors.clone(), waiters.clone());
        let dtx = targets[i as usize % targets.len()].clone();
        let b = b.to_owned();
        let gid = format!("{tag}-{i}");
        tasks.push(tokio::spawn(async move {
            match one(kind, &http, &dtx, &b, &gid, &waiters).await {
                Ok(()) => lats
                    .lock()
                    .unwrap()
                    .0
                    .push(due.elapsed().as_micros() as u32),
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let lat = std::mem::take(&mut *lats.lock().unwrap());
    Run {
        name: String::new(),
        done: lat.0.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
        lat,
    }
}

/// Per-process CPU before a run.
struct Cpu(Vec<(&'static str, u32, u64)>);

impl Cpu {
    fn take(procs: &[(&'static str, u32)]) -> Self {
        Cpu(procs.iter().map(|(n, p)| (*n, *p, cpu_us(*p))).collect())
    }

    /// CPU µs per transaction of each process since `self`.
    fn per_tx(&self, n: u64) -> Vec<(&'static str, f64)> {
        let mut out: Vec<(&'static str, f64)> = Vec::new();
        for (name, pid, before) in &self.0 {
            let used = cpu_us(*pid).saturating_sub(*before) as f64 / n.max(1) as f64;
            match out.iter_mut().find(|(n2, _)| n2 == name) {
                Some(e) => e.1 += used,
                None => out.push((name, used)),
            }
        }
        out
    }
}

fn print(run: &mut Run, cpu: &[(&'static str, f64)], scripts: Option<f64>, mem: Option<f64>) {
    let tps = run.done as f64 / run.secs;
    let cpu_s: Vec<String> = cpu.iter().map(|(n, v)| format!("{n} {v:.0}")).collect();
    println!(
        "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
        run.name,
        tps,
        run.lat.pct(0.50),
        run.lat.pct(0.99),
        run.lat.pct(0.999),
        cpu_s.join(", "),
        scripts
            .map(|s| format!("{s:.2}"))
            .unwrap_or_else(|| "-".into()),
        mem.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into()),
        run.errors,
    );
    let line = json!({"run": run.name, "tps": tps, "p50_ms": run.lat.pct(0.5), "p99_ms": run.lat.pct(0.99),
        "p999_ms": run.lat.pct(0.999), "cpu_us_per_tx": cpu.iter().map(|(n, v)| (n.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "scripts_per_tx": scripts, "redis_bytes_per_tx": mem, "errors": run.errors, "done": run.done});
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-results.jsonl");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
}

fn header() {
    println!(
        "| run | tx/s | p50 ms | p99 ms | p999 ms | CPU µs/tx | scripts/tx | Redis B/tx | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
}

#[derive(Clone)]
struct Opts {
    conc: Vec<usize>,
    secs: f64,
    rate: Option<f64>,
    aof: bool,
    count: u64,
    otel: bool,
    /// `cluster`: the cluster sizes to run.
    masters: Vec<usize>,
    /// `cluster`: `redis.shards`.
    shards: u32,
    /// `pairs`: how many alternating pairs.
    pairs: usize,
    /// `pairs`: W0 instead of W1.
    w0: bool,
    /// `pairs`: another dtx binary to run against instead of dtmrs.
    base: Option<String>,
}

/// Checks the branch calls of a run: each listed path was called exactly
/// `n` times, and no other path was called.
fn check_calls(stats: &HashMap<String, u64>, want: &[(&str, u64)]) -> Result<(), String> {
    for (path, n) in want {
        let got = stats.get(*path).copied().unwrap_or(0);
        if got != *n {
            return Err(format!("{path} called {got} times, expected {n}"));
        }
    }
    for (path, n) in stats {
        if !want.iter().any(|(p, _)| p == path) && *n > 0 {
            return Err(format!("{path} called {n} times, expected never"));
        }
    }
    Ok(())
}

/// Every transaction whose gid starts with `tag` is in `status` (read
/// straight from the harness's own Redis; the harness may SCAN it).
fn check_statuses(redis: &RedisServer, tag: &str, n: u64, status: &str) -> Result<(), String> {
    let mut c = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("dtx:*:t:{tag}-*"))
        .query(&mut c)
        .unwrap();
    if keys.len() as u64 != n {
        return Err(format!(
            "{} transactions stored, {n} acknowledged",
            keys.len()
        ));
    }
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("HGET").arg(k).arg("status");
    }
    let statuses: Vec<String> = pipe.query(&mut c).unwrap();
    let wrong = statuses.iter().filter(|s| *s != status).count();
    if wrong > 0 {
        return Err(format!("{wrong} transactions are not {status}"));
    }
    Ok(())
}

async fn workload(name: &str, kind: Kind, replicas: usize, o: &Opts) {
    workload_on(name, kind, replicas, o, None).await;
}

/// What one run of a workload measured: tx/s, and the coordinator's own
/// CPU µs per transaction (dtx's, or the peer's).
#[derive(Clone, Copy)]
struct Measured {
    tps: f64,
    cpu: f64,
}

/// What a run is measured against instead of this build's dtx.
#[derive(Clone, Copy)]
enum Peer<'a> {
    /// The peer coordinator `dtmrs`, this binary.
    Dtmrs(&'a str),
    /// Another build of dtx, this binary.
    Dtx(&'a str),
}

/// Runs a workload against dtx, or against a peer; one [`Measured`] per
/// concurrency.
async fn workload_on(
    name: &str,
    kind: Kind,
    replicas: usize,
    o: &Opts,
    peer: Option<Peer<'_>>,
) -> Vec<Measured> {
    let mut measured = Vec::new();
    // an open-loop run has no concurrency setting: run it once
    let concs = if o.rate.is_some() {
        vec![0]
    } else {
        o.conc.clone()
    };
    for conc in concs {
        let redis = start_redis(o.aof);
        let waiters = Waiters::default();
        let notify = waiters.listen();
        let b = Branches::start(notify, None);
        // --otel: dtx exports its spans to a sink of the harness's
        let sink = (o.otel && peer.is_none()).then(Sink::start);
        let endpoint = sink.as_ref().map(|s| s.base.clone()).unwrap_or_default();
        let mut dtxs = Vec::new();
        let mut grpc_targets = Vec::new();
        for _ in 0..replicas {
            let grpc_port = free_port().to_string();
            let env = [
                ("DTX_GRPC_PORT", grpc_port.as_str()),
                ("DTX_OTEL_ENDPOINT", endpoint.as_str()),
            ];
            dtxs.push(match peer {
                Some(Peer::Dtmrs(bin)) => start_dtmrs(bin, &redis),
                Some(Peer::Dtx(bin)) => start_dtx_bin(bin, &redis.url(), &env),
                None => start_dtx(&redis, &env),
            });
            grpc_targets.push(format!("http://127.0.0.1:{grpc_port}"));
        }
        // a gRPC workload submits over gRPC and calls the gRPC branches
        let (targets, branches): (Vec<String>, &str) = if kind == Kind::W1Grpc {
            (grpc_targets, &b.grpc)
        } else {
            (dtxs.iter().map(|(_, u)| u.clone()).collect(), &b.base)
        };
        // warm up connections and code paths
        closed(
            kind,
            conc.min(8),
            0.5,
            &targets,
            branches,
            &waiters,
            &format!("warm{conc}"),
        )
        .await;
        let mem0 = redis.info("memory", "used_memory");
        let scripts0 = redis.script_calls();
        let b_stats0 = b.stats(&reqwest::Client::new()).await;
        let mut procs: Vec<(&'static str, u32)> = vec![
            ("redis", redis.pid()),
            (b.proc.name, b.proc.pid),
            ("loadgen", std::process::id()),
        ];
        for (p, _) in &dtxs {
            procs.push((p.name, p.pid));
        }
        if let Some(s) = &sink {
            procs.push((s.proc.name, s.proc.pid));
        }
        let spans0 = match &sink {
            Some(s) => s.spans().await,
            None => 0,
        };
        let cpu = Cpu::take(&procs);
        let tag = format!("{name}c{conc}");
        let mut run = match o.rate {
            Some(rate) => open(kind, rate, o.secs, &targets, branches, &waiters, &tag).await,
            None => closed(kind, conc, o.secs, &targets, branches, &waiters, &tag).await,
        };
        let cpu = cpu.per_tx(run.done);
        measured.push(Measured {
            tps: run.done as f64 / run.secs,
            cpu: cpu
                .iter()
                .filter(|(n, _)| *n == "dtx" || *n == "dtmrs")
                .map(|(_, v)| v)
                .sum(),
        });
        // let the last final records land before reading Redis
        tokio::time::sleep(Duration::from_millis(300)).await;
        let scripts = (redis.script_calls() - scripts0) as f64 / run.done.max(1) as f64;
        let mem = redis.info("memory", "used_memory").saturating_sub(mem0) as f64
            / run.done.max(1) as f64;
        run.name = match o.rate {
            Some(rate) => format!("{name} open {rate:.0}/s x{replicas}"),
            None => format!("{name} c{conc} x{replicas}"),
        };
        print(&mut run, &cpu, Some(scripts), Some(mem));
        if let Some(s) = &sink {
            // the batch thread sends every 5 s; what arrived so far
            tokio::time::sleep(Duration::from_millis(5500)).await;
            let spans = s.spans().await - spans0;
            eprintln!(
                "  otel: {spans} spans exported, {:.1} per transaction",
                spans as f64 / run.done.max(1) as f64
            );
        }
        // correctness: every acknowledged transaction final, exact branch calls
        let n = run.done;
        let stats = b.stats(&reqwest::Client::new()).await;
        let delta: HashMap<String, u64> = stats
            .iter()
            .map(|(k, v)| (k.clone(), v - b_stats0.get(k).copied().unwrap_or(0)))
            .collect();
        let want: Vec<(&str, u64)> = match kind {
            Kind::W0 => vec![],
            Kind::W1 => vec![("a1", n), ("a2", n)],
            Kind::W1Grpc => vec![("TransOut", n), ("TransIn", n)],
            Kind::W2 => vec![("a1", n), ("fail2", n), ("c2", n), ("c1", n)],
            Kind::W3 => vec![("m1", n)],
            Kind::W4 => vec![
                ("try01", n),
                ("try02", n),
                ("confirm01", n),
                ("confirm02", n),
            ],
            Kind::Steps(steps) => vec![("s", n * steps as u64)],
        };
        let status = if kind == Kind::W2 {
            "failed"
        } else {
            "succeed"
        };
        let check = if run.errors > 0 {
            Err(format!("{} errors", run.errors))
        } else if let Some(Peer::Dtmrs(_)) = peer {
            // the peer's keys are its own: check the branch calls only
            check_calls(&delta, &want)
        } else {
            check_calls(&delta, &want).and_then(|()| check_statuses(&redis, &tag, n, status))
        };
        match check {
            Ok(()) => eprintln!("  check: {n} transactions {status}, branch calls exact"),
            Err(e) => eprintln!("  CHECK FAILED: {e}"),
        }
    }
    measured
}

/// dtx against a peer in one sitting: `--pairs` pairs of runs (the peer,
/// then dtx, each on fresh processes) of W1, or W0 with `--w0`, at each
/// `--conc`; prints each pair's ratio and the median. The peer is dtmrs,
/// or with `--base BIN` another build of dtx.
async fn pairs(o: &Opts, peer: Peer<'_>) {
    let peer_name = match peer {
        Peer::Dtmrs(_) => "dtmrs",
        Peer::Dtx(_) => "base",
    };
    let (kind, name) = if o.w0 {
        (Kind::W0, "w0")
    } else {
        (Kind::W1, "w1")
    };
    for &conc in &o.conc {
        let one = Opts {
            conc: vec![conc],
            ..o.clone()
        };
        let (mut ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
        for pair in 0..o.pairs {
            let theirs = workload_on(
                &format!("{name}-{peer_name}-p{pair}"),
                kind,
                1,
                &one,
                Some(peer),
            )
            .await;
            let own = workload_on(&format!("{name}-p{pair}"), kind, 1, &one, None).await;
            let (theirs, own) = (theirs[0], own[0]);
            let ratio = own.tps / theirs.tps;
            eprintln!(
                "  pair {pair}: {peer_name} {:.0} tx/s ({:.0} µs/tx), dtx {:.0} tx/s ({:.0} µs/tx): {ratio:.2}x",
                theirs.tps, theirs.cpu, own.tps, own.cpu
            );
            ratios.push(ratio);
            cpu_ratios.push(theirs.cpu / own.cpu);
        }
        ratios.sort_by(f64::total_cmp);
        cpu_ratios.sort_by(f64::total_cmp);
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{name} c{conc} dtx / {peer_name} over {} alternating pairs: tx/s {} (median {:.2}x); {peer_name} CPU / dtx CPU per transaction, median {:.2}x",
            o.pairs,
            shown.join(", "),
            ratios[ratios.len() / 2],
            cpu_ratios[cpu_ratios.len() / 2]
        );
    }
}

/// Baseline (a): the same branch calls, made by the harness itself.
async fn fanout(o: &Opts) {
    for &conc in &o.conc {
        let waiters = Waiters::default();
        let notify = waiters.listen();
        let b = Branches::start(notify, None);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(conc * 2)
            .build()
            .unwrap();
        let procs = vec![(b.proc.name, b.proc.pid), ("loadgen", std::process::id())];
        let cpu = Cpu::take(&procs);
        let done = Arc::new(AtomicU64::new(0));
        let lats = Arc::new(Mutex::new(Lat::default()));
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(o.secs);
        let mut tasks = Vec::new();
        for w in 0..conc {
            let (http, done, lats, base) =
                (http.clone(), done.clone(), lats.clone(), b.base.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                let mut local = Vec::new();
                while Instant::now() < end {
                    let t0 = Instant::now();
                    for step in ["a1", "a2"] {
                        let _ = http
                            .post(format!(
                                "{base}/{step}?gid=f{w}-{i}&trans_type=saga&branch_id=01&op=action"
                            ))
                            .body("{\"amount\":30}")
                            .send()
                            .await;
                    }
                    i += 1;
                    local.push(t0.elapsed().as_micros() as u32);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                lats.lock().unwrap().0.extend(local);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut run = Run {
            name: format!("fanout c{conc}"),
            done: done.load(Ordering::Relaxed),
            errors: 0,
            secs: start.elapsed().as_secs_f64(),
            lat: std::mem::take(&mut *lats.lock().unwrap()),
        };
        let cpu = cpu.per_tx(run.done);
        print(&mut run, &cpu, None, None);
    }
}

/// Stores one finished 2-step saga the way dtx does: its `create_trans`
/// and its final `record`, with W1's arguments.
pub(crate) async fn store_saga(store: &dtx::store::Store, gid: String, now: u64) {
    use dtx::domain::{
        build_new, BranchInput, BranchStatus, GlobalStatus, Limits, NewTransInput, TransKind,
        TransOptions,
    };
    use dtx::store::{Held, Record, Schedule, Stamp};
    let url = |p: &str| format!("http://127.0.0.1:40000/{p}");
    let t = build_new(
        NewTransInput {
            gid,
            kind: TransKind::Saga,
            steps: vec![
                BranchInput {
                    action: url("a1"),
                    compensate: url("c1"),
                },
                BranchInput {
                    action: url("a2"),
                    compensate: url("c2"),
                },
            ],
            payloads: vec!["{\"amount\":30}".into(), "{\"amount\":30}".into()],
            custom_data: String::new(),
            query_prepared: String::new(),
            protocol: String::new(),
            opts: TransOptions::default(),
            topics: Default::default(),
        },
        GlobalStatus::Submitted,
        now,
        &Limits {
            max_gid_len: 128,
            max_branches: 2000,
            max_payload_bytes: 2 << 20,
        },
    )
    .unwrap();
    store.create_trans(&t, 1, Some(now + 5000)).await.unwrap();
    let rec = Record {
        status: Some(GlobalStatus::Succeed),
        fields: vec![("attempt", "0".into()), ("finish_ms", now.to_string())],
        branches: vec![
            (
                "01:action".into(),
                BranchStatus::Prepared,
                BranchStatus::Succeed,
            ),
            (
                "02:action".into(),
                BranchStatus::Prepared,
                BranchStatus::Succeed,
            ),
        ],
        schedule: Schedule::Finish,
    };
    store
        .record(
            &Held {
                gid: &t.gid,
                create_ms: now,
                epoch: 1,
                status: GlobalStatus::Submitted,
            },
            Stamp {
                owner: "bench",
                now_ms: now,
            },
            &rec,
        )
        .await
        .unwrap();
}

/// A store on the harness's Redis with dtx's default settings.
pub(crate) async fn bench_store(redis: &RedisServer) -> dtx::store::Store {
    let mut settings = dtx::Settings::load(None, |_| None).unwrap();
    settings.redis.url = redis.url();
    dtx::store::Store::connect(&settings.redis, 86_400)
        .await
        .unwrap()
}

/// Baseline (b): dtx's create and final-record scripts, pipelined on one
/// multiplexed connection as dtx issues them, with no HTTP at all.
async fn redis_ceiling(o: &Opts) {
    let redis = start_redis(o.aof);
    let store = bench_store(&redis).await;
    let conc = o.conc.iter().copied().max().unwrap_or(100);
    let procs = vec![("redis", redis.pid()), ("loadgen", std::process::id())];
    let cpu = Cpu::take(&procs);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.secs);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (store, done, counter) = (store.clone(), done.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let now = 1_800_000_000_000 + i as u64;
                store_saga(&store, format!("ceil-{i}"), now).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut run = Run {
        name: format!("redis ceiling c{conc}"),
        done: done.load(Ordering::Relaxed),
        errors: 0,
        secs: start.elapsed().as_secs_f64(),
        lat: Lat::default(),
    };
    let cpu = cpu.per_tx(run.done);
    print(&mut run, &cpu, Some(2.0), None);
}

/// W5: `count` sagas left due while the branch service is down; then it
/// comes back and every one is made due at once: how fast do the replicas
/// drain them?
/// p99 of `script`'s latency in dtx's histogram between two renderings of
/// `/api/metrics`, in ms (the upper bound of the bucket it falls in).
fn script_p99(before: &str, after: &str, script: &str) -> f64 {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let prefix = "dtx_redis_script_duration_seconds_bucket{";
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(&format!("script=\"{script}\"")))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
                Some((le, n))
            })
            .collect()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let delta: Vec<(f64, f64)> = b1
        .iter()
        .map(|(le, n)| {
            let was = b0.iter().find(|(l, _)| l == le).map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = delta.last().map_or(0.0, |(_, n)| *n);
    delta
        .iter()
        .find(|(_, n)| *n >= total * 0.99)
        .map_or(f64::NAN, |(le, _)| le * 1000.0)
}

/// W1 c100 with and without continuous large reads beside it: the `query`
/// of a 1,000-step saga (about 900 KB of JSON) and `all?limit=100`, from 4
/// readers. Reports the hot path's script latency p99 (`create_trans`,
/// `record`) in both.
async fn reads_beside_load(o: &Opts) {
    for readers in [0usize, 4] {
        let redis = start_redis(false);
        let waiters = Waiters::default();
        let notify = waiters.listen();
        let b = Branches::start(notify, None);
        let (dtx, base) = start_dtx(&redis, &[]);
        let http = reqwest::Client::new();
        let steps: Vec<Value> = (0..1000)
            .map(|_| json!({"action": "", "compensate": ""}))
            .collect();
        let payloads: Vec<String> = (0..1000)
            .map(|i| format!("{{\"pad\":\"{}\"}}", "x".repeat(800 + i % 7)))
            .collect();
        let big = json!({"gid": "big", "trans_type": "saga", "wait_result": true, "steps": steps, "payloads": payloads});
        let r = http
            .post(format!("{base}/submit"))
            .json(&big)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "the big saga: {}",
            r.text().await.unwrap_or_default()
        );
        let targets = vec![base.clone()];
        closed(Kind::W1, 8, 0.5, &targets, &b.base, &waiters, "warm").await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let read_bytes = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for r in 0..readers {
            let (http, base, stop, read_bytes) =
                (http.clone(), base.clone(), stop.clone(), read_bytes.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let url = if (i + r) % 2 == 0 {
                        format!("{base}/query?gid=big")
                    } else {
                        format!("{base}/all?limit=100")
                    };
                    i += 1;
                    if let Ok(resp) = http.get(url).send().await {
                        let n = resp.bytes().await.map(|b| b.len()).unwrap_or(0);
                        read_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }));
        }
        let metrics = |http: reqwest::Client, url: String| async move {
            http.get(url).send().await.unwrap().text().await.unwrap()
        };
        let root = base.trim_end_matches("/api/dtmsvr").to_owned();
        let m0 = metrics(http.clone(), format!("{root}/api/metrics")).await;
        let tag = format!("reads{readers}");
        let mut run = closed(Kind::W1, 100, o.secs, &targets, &b.base, &waiters, &tag).await;
        let m1 = metrics(http.clone(), format!("{root}/api/metrics")).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        run.name = format!("w1 c100 beside {readers} large readers");
        print(&mut run, &[], None, None);
        eprintln!(
            "  script p99: create_trans {:.1} ms, record {:.1} ms; read {:.0} MB/s",
            script_p99(&m0, &m1, "create_trans"),
            script_p99(&m0, &m1, "record"),
            read_bytes.load(Ordering::Relaxed) as f64 / o.secs / 1e6
        );
        drop(dtx);
        drop(b);
    }
}

async fn recovery(o: &Opts, replicas: usize) {
    let redis = start_redis(o.aof);
    let waiters = Waiters::default();
    let notify = waiters.listen();
    let mut dtxs = Vec::new();
    let env = [
        ("DTX_RETRY_BASE_MS", "600000"),
        ("DTX_RETRY_MAX_MS", "600000"),
    ];
    for _ in 0..replicas {
        // --base: another dtx build drains instead
        dtxs.push(match &o.base {
            Some(bin) => start_dtx_bin(bin, &redis.url(), &env),
            None => start_dtx(&redis, &env),
        });
    }
    let port = free_port(); // nothing listens yet: every first call fails
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let n = o.count;
    let t0 = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let (http, sent, dtx, base) = (
            http.clone(),
            sent.clone(),
            dtxs[w as usize % replicas].1.clone(),
            base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                let gid = format!("w5-{i}");
                let body = json!({"gid": gid, "trans_type": "saga",
                    "steps": [{"action": format!("{base}/a1"), "compensate": format!("{base}/c1")},
                              {"action": format!("{base}/a2?n=1"), "compensate": format!("{base}/c2")}],
                    "payloads": ["{\"amount\":30}", "{\"amount\":30}"]});
                if http.post(format!("{dtx}/submit")).json(&body).send().await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                i += 64;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "  W5: {} sagas submitted in {:.1} s while branches were down",
        sent.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
    // let every first attempt fail and be rescheduled
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = Branches::start(notify, Some(port));
    let mut procs: Vec<(&'static str, u32)> =
        vec![("redis", redis.pid()), (b.proc.name, b.proc.pid)];
    for (p, _) in &dtxs {
        procs.push((p.name, p.pid));
    }
    let cpu = Cpu::take(&procs);
    let start = Instant::now();
    // make everything due now (retries were pushed 10 minutes out)
    let mut remaining = true;
    while remaining {
        let r: Value = http
            .get(format!("{}/resetCronTime?timeout=0&limit=10000", dtxs[0].1))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        remaining = r["has_remaining"].as_bool().unwrap_or(false);
    }
    // wait until every saga finished
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let stats = b.stats(&http).await;
        let a2 = stats.get("a2").copied().unwrap_or(0);
        if a2 >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu.per_tx(n);
    let mut run = Run {
        name: format!("w5 drain {n} x{replicas}"),
        done: n,
        errors: 0,
        secs,
        lat: Lat::default(),
    };
    print(&mut run, &cpu, None, None);
    let stats = b.stats(&http).await;
    match check_calls(&stats, &[("a1", n), ("a2", n)])
        .and_then(|()| check_statuses(&redis, "w5", n, "succeed"))
    {
        Ok(()) => eprintln!("  check: {n} transactions succeed, branch calls exact"),
        Err(e) => eprintln!("  CHECK FAILED: {e}"),
    }
}

fn parse_opts(args: &[String]) -> Opts {
    let mut o = Opts {
        conc: vec![10, 100],
        secs: 10.0,
        rate: None,
        aof: false,
        count: 100_000,
        otel: false,
        masters: vec![1, 2, 3],
        shards: 16,
        pairs: 3,
        w0: false,
        base: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--conc" => o.conc = val().split(',').filter_map(|v| v.parse().ok()).collect(),
            "--secs" => o.secs = val().parse().unwrap_or(10.0),
            "--rate" => o.rate = val().parse().ok(),
            "--aof" => o.aof = true,
            "--otel" => o.otel = true,
            "--count" => o.count = val().parse().unwrap_or(100_000),
            "--masters" => o.masters = val().split(',').filter_map(|v| v.parse().ok()).collect(),
            "--shards" => o.shards = val().parse().unwrap_or(16),
            "--pairs" => o.pairs = val().parse().unwrap_or(3),
            "--w0" => o.w0 = true,
            "--base" => o.base = Some(val()),
            _ => {}
        }
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.first().map(String::as_str) == Some("otlp-sink") {
        rt.block_on(otlp_sink(args[1].parse().unwrap()));
        return;
    }
    if args.first().map(String::as_str) == Some("branch-service") {
        let port = args[1].parse().unwrap();
        let notify = args[2].parse().unwrap();
        let grpc_port = args[3].parse().unwrap();
        rt.block_on(branch_service(port, notify, grpc_port));
        return;
    }
    let which = args.first().cloned().unwrap_or_else(|| "help".into());
    let o = parse_opts(&args[1.min(args.len())..]);
    rt.block_on(async {
        if which != "cluster" && which != "spread" {
            header();
        }
        let all = which == "all";
        if all || which == "fanout" {
            fanout(&o).await;
        }
        if all || which == "redis" {
            redis_ceiling(&o).await;
        }
        if all || which == "w0" {
            workload("w0", Kind::W0, 1, &o).await;
        }
        if all || which == "w1" {
            workload("w1", Kind::W1, 1, &o).await;
        }
        if all || which == "w1-grpc" {
            workload("w1-grpc", Kind::W1Grpc, 1, &o).await;
        }
        if all || which == "w2" {
            workload("w2", Kind::W2, 1, &o).await;
        }
        if all || which == "w3" {
            workload("w3", Kind::W3, 1, &o).await;
        }
        if all || which == "w4" {
            workload("w4", Kind::W4, 1, &o).await;
        }
        if all || which == "w6" {
            workload("w6", Kind::W1, 2, &o).await;
        }
        if all || which == "reads" {
            reads_beside_load(&o).await;
        }
        if all || which == "w5" {
            recovery(&o, 1).await;
        }
        if all || which == "dtmrs" {
            match dtmrs_bin() {
                Some(bin) => {
                    workload_on("w0-dtmrs", Kind::W0, 1, &o, Some(Peer::Dtmrs(&bin))).await;
                    workload_on("w1-dtmrs", Kind::W1, 1, &o, Some(Peer::Dtmrs(&bin))).await;
                }
                None => eprintln!("dtmrs is not installed (cargo install dtmrs --features redis): peer baseline skipped"),
            }
        }
        if which == "pairs" {
            match (&o.base, dtmrs_bin()) {
                (Some(base), _) => pairs(&o, Peer::Dtx(base)).await,
                (None, Some(bin)) => pairs(&o, Peer::Dtmrs(&bin)).await,
                (None, None) => {
                    eprintln!("dtmrs is not installed (cargo install dtmrs --features redis)")
                }
            }
        }
        if which == "growth" {
            growth::steps(&o).await;
        }
        if which == "growth" || which == "growth-memory" {
            growth::in_flight().await;
            growth::retained(o.count).await;
        }
        if which == "cluster" {
            cluster::scaling(&o).await;
        }
        if which == "spread" {
            cluster::spread().await;
        }
        if which == "help" {
            eprintln!("usage: cargo bench --bench load -- <w0|w1|w1-grpc|w2|w3|w4|w5|w6|reads|fanout|redis|dtmrs|pairs|growth|growth-memory|all|cluster|spread> [--conc 10,100] [--secs 10] [--rate R] [--aof] [--count N] [--otel] [--masters 1,2,3] [--shards 16] [--pairs 3] [--w0] [--base BIN]");
        }
    });
}
