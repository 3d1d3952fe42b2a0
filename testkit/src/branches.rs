//! The fake branch service: a real HTTP server on a free port that
//! records every call and answers as the test scripts it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

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
    /// The path, without the leading `/`.
    pub path: String,
    /// The HTTP method.
    pub method: String,
    /// The query parameters.
    pub query: HashMap<String, String>,
    /// The body, as text.
    pub body: String,
    /// The headers, lower-case names.
    pub headers: HashMap<String, String>,
    /// When it arrived.
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
    /// `http://127.0.0.1:<port>`
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

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        let port = self.base.rsplit(':').next().unwrap_or_default();
        port.parse().expect("base ends with the port")
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
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|c| c.query.get("gid").map(String::as_str) == Some(gid))
            .map(|c| c.path.clone())
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
