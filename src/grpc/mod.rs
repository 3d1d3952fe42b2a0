//! The gRPC API: dtm's service `dtmgimp.Dtm` (contract §7.1) as one more
//! thin adapter over [`crate::service`], with `grpc.health.v1` health
//! (NOT_SERVING while draining, like `/readyz`) and server reflection.
//! Tokens and limits are the HTTP API's.

mod dtm;
mod status;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::warn;

use crate::access::Auth;
use crate::otel;
use crate::service::Service;

/// The generated messages and service of `proto/dtmgimp.proto`.
pub use crate::proto::dtmgimp as pb;

/// What the gRPC server needs.
pub struct Grpc {
    /// The use cases.
    pub service: Service,
    /// Access tokens, as for HTTP.
    pub auth: Auth,
    /// Largest message accepted, bytes (`http.max_body_bytes`).
    pub max_message_bytes: usize,
}

/// Serves the gRPC API on `listener` until `stop` is cancelled; then
/// health turns NOT_SERVING, new connections are refused and calls in
/// flight get up to `drain` to finish.
pub async fn serve(
    listener: TcpListener,
    grpc: Grpc,
    draining: CancellationToken,
    stop: CancellationToken,
    drain: Duration,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    health
        .set_serving::<pb::dtm_server::DtmServer<dtm::DtmApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| warn!(error = %e, "gRPC reflection is off"))
        .ok();
    let auth = Arc::new(grpc.auth);
    let api = pb::dtm_server::DtmServer::new(dtm::DtmApi {
        service: grpc.service,
    })
    .max_decoding_message_size(grpc.max_message_bytes);
    let dtm = tonic::service::interceptor::InterceptedService::new(api, move |req| {
        status::authorize(&auth, req)
    });
    // readiness off: clients that check health stop choosing this replica
    let reporter = health.clone();
    let watch = draining.clone();
    tokio::spawn(async move {
        watch.cancelled().await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        reporter
            .set_not_serving::<pb::dtm_server::DtmServer<dtm::DtmApi>>()
            .await;
    });
    let router = tonic::transport::Server::builder()
        .layer(TraceLayer)
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_service(dtm);
    let closing = stop.clone();
    // small replies must leave at once, not wait for the client's delayed ACK
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let served =
        router.serve_with_incoming_shutdown(incoming, async move { closing.cancelled().await });
    tokio::pin!(served);
    tokio::select! {
        r = &mut served => r,
        _ = async { stop.cancelled().await; tokio::time::sleep(drain).await } => {
            warn!("gRPC calls still running after the drain timeout were cut off");
            Ok(())
        }
    }
}

/// Runs every gRPC call in its trace context ([`otel::api_call`]): the
/// caller's `traceparent` metadata, and with export on a span named after
/// the method.
#[derive(Debug, Clone, Copy)]
struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced(inner)
    }
}

/// A service run by [`TraceLayer`].
#[derive(Debug, Clone)]
struct Traced<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Traced<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = otel::InContext<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // the method's path names the span: a path no service has is
        // answered "unimplemented" at once, and is not worth a name of its own
        let path = req.uri().path();
        let route = if path.len() <= 128 { path } else { "/unknown" };
        let cx = otel::api_call(req.headers(), "gRPC", route);
        otel::in_context(cx, self.0.call(req))
    }
}
