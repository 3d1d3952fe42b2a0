//! Trace context and span export (W3C Trace Context, OTLP).
//!
//! A request's `traceparent` and `tracestate` go with the transaction it
//! creates or submits and out again on every branch call, check-back and
//! call-back of it, so a business service's spans join its caller's trace.
//! That needs no setting. With `otel.endpoint` set, dtx adds spans of its own
//! and exports them over OTLP/HTTP: one per API call (a child of the
//! caller's span), one per pass (a child of the span the transaction was
//! stored under), one per branch call (whose id is the branch's parent) and
//! one per Redis script run inside either. Without an endpoint no span is
//! ever built: what is left is a header lookup per request.
//!
//! The current span travels as the [`Context`] of the future running it
//! ([`in_context`]); every function here reads or extends that one.

use std::borrow::Cow;
use std::future::Future;
use std::sync::OnceLock;

use futures_util::future::Either;
use opentelemetry::context::{Context, FutureExt as _};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::OtelSettings;
use crate::domain::{Outcome, TraceContext, Trans};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Longest `tracestate` kept, bytes: W3C asks that at least 512 be
/// propagated; a longer one is dropped (the `traceparent` is kept).
pub const MAX_TRACESTATE: usize = 512;

/// Longest a stopping replica waits for its last spans to be sent.
pub const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The process's tracer, when spans are exported.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The running export; [`Exporter::shutdown`] sends what is queued.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Flushes the queued spans and stops the export thread, waiting at
    /// most [`SHUTDOWN_WAIT`] (blocking: run it off the runtime's workers).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_WAIT) {
            tracing::warn!(error = %e, "span export did not shut down cleanly");
        }
    }
}

/// Starts exporting spans to `settings.endpoint`; `None` when it is empty.
/// Spans are batched on a thread of their own (a bounded queue: when the
/// collector cannot keep up, spans are dropped, never transactions slowed).
pub fn install(settings: &OtelSettings) -> Result<Option<Exporter>, String> {
    if settings.endpoint.is_empty() {
        return Ok(None);
    }
    let endpoint = traces_url(&settings.endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("otel.endpoint: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    TRACER
        .set(provider.tracer("dtx"))
        .map_err(|_| "span export is already installed".to_owned())?;
    Ok(Some(Exporter { provider }))
}

/// The OTLP/HTTP traces URL of a collector's base URL.
fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// The context a request brings: a valid `traceparent` (and its
/// `tracestate`) as the remote parent; `None` when absent or invalid (W3C:
/// an invalid one is ignored).
fn remote(headers: &Carrier) -> Option<Context> {
    if headers.parent.is_empty() {
        return None;
    }
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), headers);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The stored context of `t` as a remote parent.
fn stored_parent(t: &Trans) -> Option<Context> {
    let trace = t.trace.as_ref()?;
    remote(&Carrier::from(trace))
}

/// The context an API call runs in: with export on, a span of its own
/// named `<method> <route>` (a child of the request's trace context, or a
/// new trace); else the request's trace context, if it brought a valid one.
pub fn api_call(headers: &http::HeaderMap, method: &str, route: &str) -> Option<Context> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let sent = Carrier {
        parent: header(TRACEPARENT).to_owned(),
        state: Some(header(TRACESTATE))
            .filter(|s| s.len() <= MAX_TRACESTATE)
            .unwrap_or_default()
            .to_owned(),
    };
    let parent = remote(&sent);
    let Some(tracer) = tracer() else {
        return parent;
    };
    let parent = parent.unwrap_or_default();
    let span = tracer
        .span_builder(format!("{method} {route}"))
        .with_kind(SpanKind::Server)
        .start_with_context(tracer, &parent);
    Some(parent.with_span(span))
}

/// Notes the status code an API call answered on its span.
pub fn answered(cx: &Context, code: u16) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
    if code >= 500 {
        span.set_status(Status::error(format!("status {code}")));
    }
}

/// A future run in a trace context, or as it is.
pub type InContext<F> = Either<opentelemetry::context::WithContext<F>, F>;

/// Runs `work` in `cx` (the current context while it is polled), or as it
/// is without one.
pub fn in_context<F: Future>(cx: Option<Context>, work: F) -> InContext<F> {
    match cx {
        Some(cx) => Either::Left(work.with_context(cx)),
        None => Either::Right(work),
    }
}

/// The trace context to store with a transaction created or submitted
/// now: the current span's (dtx's API call span, or the request's own
/// context when spans are not exported).
pub fn current() -> Option<TraceContext> {
    let cx = Context::current();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    (!carrier.parent.is_empty()).then_some(TraceContext {
        parent: carrier.parent,
        state: carrier.state,
    })
}

/// The context a pass over `t` runs in: a span of its own under the
/// stored context, when spans are exported.
pub fn pass(t: &Trans) -> Option<Context> {
    let tracer = tracer()?;
    let parent = stored_parent(t).unwrap_or_default();
    let span = tracer
        .span_builder(format!("pass {}", t.kind.as_str()))
        .with_kind(SpanKind::Internal)
        .with_attributes([
            KeyValue::new("dtx.gid", t.gid.clone()),
            KeyValue::new("dtx.trans_type", t.kind.as_str()),
            KeyValue::new("dtx.status", t.status.as_str()),
        ])
        .start_with_context(tracer, &parent);
    Some(parent.with_span(span))
}

/// Notes how a pass left its transaction.
pub fn pass_ended(cx: &Context, status: &str, end: &str) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("dtx.final_status", status.to_owned()));
    span.set_attribute(KeyValue::new("dtx.pass_end", end.to_owned()));
}

/// One branch call being made: its span, if exported, and the trace
/// context the branch is sent.
pub struct BranchCall<'a> {
    cx: Option<Context>,
    /// `traceparent` / `tracestate` for the request, if any.
    /// (the stored context, borrowed, when no span is exported).
    pub headers: Option<Cow<'a, TraceContext>>,
}

/// Starts the branch call of `t` to `url` (`op` of `branch_id`): a client
/// span under the current pass whose id the branch gets as its parent; with
/// export off, the branch gets the stored context as it is.
pub fn branch_call<'a>(t: &'a Trans, branch_id: &str, op: &str, url: &str) -> BranchCall<'a> {
    let Some(tracer) = tracer() else {
        return BranchCall {
            cx: None,
            headers: t.trace.as_ref().map(Cow::Borrowed),
        };
    };
    let parent = Context::current();
    let span = tracer
        .span_builder(format!("branch {op}"))
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("dtx.gid", t.gid.clone()),
            KeyValue::new("dtx.branch_id", branch_id.to_owned()),
            KeyValue::new("dtx.op", op.to_owned()),
            KeyValue::new("url.full", url.to_owned()),
        ])
        .start_with_context(tracer, &parent);
    let cx = parent.with_span(span);
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    BranchCall {
        cx: Some(cx),
        headers: Some(Cow::Owned(TraceContext {
            parent: carrier.parent,
            state: carrier.state,
        })),
    }
}

impl BranchCall<'_> {
    /// Ends the span with the call's outcome.
    pub fn ended(self, outcome: &Outcome) {
        let Some(cx) = self.cx else { return };
        let span = cx.span();
        let (label, error) = match outcome {
            Outcome::Succeeded => ("succeeded", None),
            Outcome::Ongoing => ("ongoing", None),
            Outcome::Failed(e) => ("failed", Some(e)),
            Outcome::Unknown(e) => ("unknown", Some(e)),
        };
        span.set_attribute(KeyValue::new("dtx.outcome", label));
        if let Some(e) = error {
            span.set_status(Status::error(e.clone()));
        }
        span.end();
    }
}

/// A span for one run of `script`, when it runs inside one of dtx's spans
/// (API call or pass); claim-loop scripts are not traced.
pub fn script(script: &'static str) -> Option<opentelemetry_sdk::trace::Span> {
    let tracer = tracer()?;
    let parent = Context::current();
    if !parent.has_active_span() {
        return None;
    }
    Some(
        tracer
            .span_builder(format!("script {script}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("db.system.name", "redis"),
                KeyValue::new("dtx.script", script),
            ])
            .start_with_context(tracer, &parent),
    )
}

/// Ends a script span, failed or not.
pub fn script_ended(span: Option<opentelemetry_sdk::trace::Span>, ok: bool) {
    if let Some(mut span) = span {
        if !ok {
            span.set_status(Status::error("script failed"));
        }
        span.end();
    }
}

/// The two trace headers, as a propagator reads and writes them.
#[derive(Default)]
struct Carrier {
    parent: String,
    state: String,
}

impl From<&TraceContext> for Carrier {
    fn from(t: &TraceContext) -> Self {
        Self {
            parent: t.parent.clone(),
            state: t.state.clone(),
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(&self.parent),
            TRACESTATE if !self.state.is_empty() => Some(&self.state),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.parent = value,
            TRACESTATE => self.state = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_valid_traceparent_and_its_tracestate_are_kept_as_sent() {
        let h = headers(&[(TRACEPARENT, PARENT), (TRACESTATE, "congo=t61rcWkgMzE")]);
        let cx = api_call(&h, "POST", "/submit").expect("a context");
        let _guard = cx.attach();
        let kept = current().expect("stored");
        assert_eq!(kept.parent, PARENT);
        assert_eq!(kept.state, "congo=t61rcWkgMzE");
    }

    #[test]
    fn a_tracestate_over_the_bound_is_dropped_and_its_traceparent_kept() {
        let long = format!("k={}", "v".repeat(MAX_TRACESTATE));
        let h = headers(&[(TRACEPARENT, PARENT), (TRACESTATE, &long)]);
        let cx = api_call(&h, "POST", "/submit").expect("a context");
        let _guard = cx.attach();
        let kept = current().expect("stored");
        assert_eq!((kept.parent.as_str(), kept.state.as_str()), (PARENT, ""));
    }

    #[test]
    fn an_invalid_or_missing_traceparent_is_ignored() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        ] {
            let h = headers(&[(TRACEPARENT, bad)]);
            assert!(api_call(&h, "GET", "x").is_none(), "{bad:?} taken");
        }
        assert!(api_call(&headers(&[]), "GET", "x").is_none());
        assert!(current().is_none());
    }

    #[test]
    fn the_stored_context_goes_to_branches_as_it_is_without_export() {
        let trace = TraceContext {
            parent: PARENT.into(),
            state: "a=1".into(),
        };
        let input = crate::domain::NewTransInput {
            gid: "g".into(),
            kind: crate::domain::TransKind::Saga,
            steps: Vec::new(),
            payloads: Vec::new(),
            custom_data: String::new(),
            query_prepared: String::new(),
            protocol: String::new(),
            opts: Default::default(),
            topics: Default::default(),
        };
        let status = crate::domain::GlobalStatus::Submitted;
        let mut t =
            crate::domain::build_new(input, status, 1, &crate::domain::TEST_LIMITS).unwrap();
        t.trace = Some(trace.clone());
        let call = branch_call(&t, "01", "action", "http://svc/a");
        assert_eq!(call.headers.as_deref(), Some(&trace));
        call.ended(&Outcome::Succeeded);
    }

    #[test]
    fn the_collector_url_gets_the_traces_path_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
