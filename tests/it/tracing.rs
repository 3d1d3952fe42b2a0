//! Trace context: a caller's `traceparent` reaches every branch call,
//! check-back and call-back of its transaction; with `otel.endpoint` set,
//! dtx's spans arrive at an OTLP/HTTP collector as one tree per saga.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use serde_json::{json, Value};

use crate::grpc_branches::{transfer, Busi};
use crate::support::{free_port, gid, saga_body, start_dtx, until, Branches, RedisServer, TestApp};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A `traceparent` of [`TRACE`] whose parent span id is `span`.
fn parent(span: &str) -> String {
    format!("00-{TRACE}-{span}-01")
}

/// POSTs `body` to `route` with these headers; the HTTP status.
async fn post_with(base: &str, route: &str, body: &Value, headers: &[(&str, &str)]) -> u16 {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/{route}"))
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().status().as_u16()
}

/// The `(traceparent, tracestate)` of every call to `path` for `g`.
fn trace_headers(b: &Branches, g: &str, path: &str) -> Vec<(Option<String>, Option<String>)> {
    b.calls()
        .into_iter()
        .filter(|c| c.path == path && c.query.get("gid").map(String::as_str) == Some(g))
        .map(|c| {
            (
                c.headers.get("traceparent").cloned(),
                c.headers.get("tracestate").cloned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_callers_trace_context_reaches_every_branch_call_check_back_and_call_back() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let base = app.base.clone();
    let p1 = parent("00f067aa0ba902b7");
    let state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

    // saga: both actions get the submit's traceparent and tracestate; a
    // traceparent among branch_headers gives way to it
    let g = gid("trace-saga");
    let mut body = saga_body(&g, &b);
    body["wait_result"] = json!(true);
    body["branch_headers"] = json!({"traceparent": parent("1111111111111111"), "x-t": "1"});
    let headers = [("traceparent", p1.as_str()), ("tracestate", state)];
    assert_eq!(post_with(&base, "submit", &body, &headers).await, 200);
    for path in ["a1", "a2"] {
        let got = trace_headers(&b, &g, path);
        assert_eq!(got, [(Some(p1.clone()), Some(state.to_owned()))], "{path}");
    }
    let a1 = b.calls().into_iter().find(|c| c.path == "a1").unwrap();
    assert_eq!(a1.headers["x-t"], "1", "the other branch_headers stay");

    // msg: prepared under one context, submitted under another: the
    // actions belong to the submit
    let g = gid("trace-msg");
    let msg = json!({
        "gid": g, "trans_type": "msg", "wait_result": true,
        "steps": [{"action": b.url("m1")}], "payloads": ["{}"],
        "query_prepared": b.url("qp"),
    });
    let p2 = parent("2222222222222222");
    let p3 = parent("3333333333333333");
    assert_eq!(
        post_with(&base, "prepare", &msg, &[("traceparent", &p2)]).await,
        200
    );
    assert_eq!(
        post_with(&base, "submit", &msg, &[("traceparent", &p3)]).await,
        200
    );
    assert_eq!(trace_headers(&b, &g, "m1"), [(Some(p3.clone()), None)]);

    // msg never submitted: its check-back carries the prepare's context
    let g = gid("trace-check-back");
    let mut msg = msg.clone();
    msg["gid"] = json!(g);
    msg["timeout_to_fail"] = json!(1);
    assert_eq!(
        post_with(&base, "prepare", &msg, &[("traceparent", &p2)]).await,
        200
    );
    app.wait_status(&g, "succeed", 8).await;
    assert_eq!(trace_headers(&b, &g, "qp"), [(Some(p2.clone()), None)]);
    assert_eq!(
        trace_headers(&b, &g, "m1"),
        [(Some(p2.clone()), None)],
        "the actions a check-back commits belong to the prepare"
    );

    // workflow left quiet: called back with its prepare's context
    let g = gid("trace-workflow");
    let wf = json!({
        "gid": g, "trans_type": "workflow", "timeout_to_fail": 1,
        "custom_data": "{\"name\":\"transfer\",\"data\":\"\"}",
        "query_prepared": b.url("resume"),
    });
    let p4 = parent("4444444444444444");
    assert_eq!(
        post_with(&base, "prepareWorkflow", &wf, &[("traceparent", &p4)]).await,
        200
    );
    until("the workflow call-back", || {
        !trace_headers(&b, &g, "resume").is_empty()
    })
    .await;
    assert_eq!(trace_headers(&b, &g, "resume")[0], (Some(p4), None));

    // JSON-RPC: the context comes in the HTTP request's headers
    let g = gid("trace-jsonrpc");
    let mut params = saga_body(&g, &b);
    params["wait_result"] = json!(true);
    let rpc = json!({"jsonrpc": "2.0", "id": "1", "method": "submit", "params": params});
    let p5 = parent("5555555555555555");
    let root = base.trim_end_matches("/dtmsvr");
    assert_eq!(
        post_with(root, "json-rpc", &rpc, &[("traceparent", &p5)]).await,
        200
    );
    assert_eq!(trace_headers(&b, &g, "a2"), [(Some(p5), None)]);

    // an invalid traceparent is ignored (W3C), never forwarded
    let g = gid("trace-invalid");
    let mut body = saga_body(&g, &b);
    body["wait_result"] = json!(true);
    let bad = format!("00-{TRACE}-0000000000000000-01");
    assert_eq!(
        post_with(&base, "submit", &body, &[("traceparent", &bad)]).await,
        200
    );
    assert_eq!(trace_headers(&b, &g, "a1"), [(None, None)]);
}

#[tokio::test]
async fn grpc_metadata_carries_the_trace_context_both_ways() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let (busi, addr) = Busi::start().await;
    let g = gid("trace-grpc");
    let p = parent("5555555555555555");
    let mut req = tonic::Request::new(transfer(&g, &addr, 7));
    req.metadata_mut().insert("traceparent", p.parse().unwrap());
    req.metadata_mut()
        .insert("tracestate", "k=v".parse().unwrap());
    crate::grpc::client(&app).await.submit(req).await.unwrap();
    let calls = busi.calls_for(&g);
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(c.meta.get("traceparent"), Some(&p), "{}", c.method);
        assert_eq!(c.meta.get("tracestate").map(String::as_str), Some("k=v"));
    }
}

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    attrs: HashMap<String, String>,
}

/// An OTLP/HTTP collector: keeps every span posted to `/v1/traces`.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    async fn start(port: u16) -> Self {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        let collector = Self::default();
        let spans = collector.spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let spans = spans.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
                    let mut spans = spans.lock().unwrap();
                    for s in req
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .flat_map(|s| &s.spans)
                    {
                        let attrs = s
                            .attributes
                            .iter()
                            .map(|kv| {
                                let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                                    Some(V::StringValue(s)) => s,
                                    Some(V::IntValue(i)) => i.to_string(),
                                    other => format!("{other:?}"),
                                };
                                (kv.key.clone(), v)
                            })
                            .collect();
                        spans.push(Span {
                            name: s.name.clone(),
                            trace: hex(&s.trace_id),
                            id: hex(&s.span_id),
                            parent: hex(&s.parent_span_id),
                            attrs,
                        });
                    }
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        collector
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_spans_make_one_tree_per_saga_under_the_callers_span() {
    let redis = RedisServer::start();
    let b = Branches::start().await;
    let port = free_port();
    let collector = Collector::start(port).await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let grpc_port = free_port().to_string();
    let mut dtx = start_dtx(
        &redis,
        "otel",
        &[
            ("DTX_OTEL_ENDPOINT", &endpoint),
            ("DTX_OTEL_SERVICE_NAME", "dtx-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("DTX_GRPC_PORT", &grpc_port),
        ],
    );
    let caller = "00f067aa0ba902b7";
    let g = gid("otel-saga");
    let mut body = saga_body(&g, &b);
    body["wait_result"] = json!(true);
    let tp = parent(caller);
    let status = post_with(&dtx.base, "submit", &body, &[("traceparent", &tp)]).await;
    assert_eq!(status, 200, "{}", dtx.log());
    // and one over gRPC, to gRPC branches
    let (busi, addr) = Busi::start().await;
    let grpc_caller = "00000000000000aa";
    let grpc_gid = gid("otel-grpc");
    let mut req = tonic::Request::new(transfer(&grpc_gid, &addr, 5));
    let grpc_tp = parent(grpc_caller);
    req.metadata_mut()
        .insert("traceparent", grpc_tp.parse().unwrap());
    let mut client =
        dtx::grpc::pb::dtm_client::DtmClient::connect(format!("http://127.0.0.1:{grpc_port}"))
            .await
            .unwrap();
    client.submit(req).await.unwrap();
    // stopping flushes what is queued
    dtx.sigterm();
    assert!(dtx.wait().success(), "{}", dtx.log());
    let spans = collector.spans();
    let find = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let api = find("POST /api/dtmsvr/submit");
    assert_eq!(api.len(), 1, "{spans:#?}");
    let api = api[0];
    assert_eq!(api.trace, TRACE, "the caller's trace");
    assert_eq!(api.parent, caller, "a child of the caller's span");
    assert_eq!(api.attrs["http.response.status_code"], "200");
    let passes = find("pass saga");
    assert_eq!(passes.len(), 2, "{spans:#?}");
    let by_gid = |g: &str| {
        *passes
            .iter()
            .find(|s| s.attrs["dtx.gid"] == g)
            .expect("a pass of each saga")
    };
    let pass = by_gid(&g);
    assert_eq!(pass.trace, TRACE);
    assert_eq!(pass.parent, api.id, "the pass runs under the submit");
    assert_eq!(pass.attrs["dtx.gid"], g);
    assert_eq!(pass.attrs["dtx.final_status"], "succeed");
    let branches: Vec<&Span> = find("branch action")
        .into_iter()
        .filter(|s| s.attrs["dtx.gid"] == g)
        .collect();
    assert_eq!(branches.len(), 2, "{spans:#?}");
    let mut ids = Vec::new();
    for (span, (id, path)) in branches.iter().zip([("01", "a1"), ("02", "a2")]) {
        assert_eq!(span.parent, pass.id, "branch calls run under the pass");
        assert_eq!(span.attrs["dtx.gid"], g);
        assert_eq!(span.attrs["dtx.op"], "action");
        assert_eq!(span.attrs["dtx.branch_id"], id);
        assert_eq!(span.attrs["dtx.outcome"], "succeeded");
        assert_eq!(span.attrs["url.full"], b.url(path));
        ids.push(span.id.clone());
    }
    // each branch's parent is its own call's span
    for (path, id) in ["a1", "a2"].iter().zip(&ids) {
        assert_eq!(
            trace_headers(&b, &g, path),
            [(Some(parent(id)), None)],
            "{path}"
        );
    }
    // scripts run under the span that ran them: the create under the API
    // call, the records under the pass
    let scripts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("script "))
        .collect();
    assert!(
        scripts
            .iter()
            .any(|s| s.parent == api.id && s.attrs["dtx.script"] == "create_trans"),
        "{scripts:#?}"
    );
    assert!(
        scripts
            .iter()
            .any(|s| s.parent == pass.id && s.attrs["dtx.script"] == "record"),
        "{scripts:#?}"
    );
    // over gRPC: the call's span is a child of the metadata's parent, the
    // pass of the call, and each gRPC branch gets its call's span
    let call = find("gRPC /dtmgimp.Dtm/Submit");
    assert_eq!(call.len(), 1, "{spans:#?}");
    assert_eq!(call[0].parent, grpc_caller);
    let grpc_pass = by_gid(&grpc_gid);
    assert_eq!(grpc_pass.parent, call[0].id);
    let grpc_branches: Vec<String> = find("branch action")
        .into_iter()
        .filter(|s| s.attrs["dtx.gid"] == grpc_gid && s.parent == grpc_pass.id)
        .map(|s| parent(&s.id))
        .collect();
    let sent: Vec<String> = busi
        .calls_for(&grpc_gid)
        .iter()
        .map(|c| c.meta["traceparent"].clone())
        .collect();
    assert_eq!(sent, grpc_branches);
    assert!(
        spans.iter().all(|s| s.trace == TRACE),
        "nothing of these sagas starts a trace of its own: {spans:#?}"
    );
}
