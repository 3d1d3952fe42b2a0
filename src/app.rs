//! Building and running one dtx replica; `main` and the tests start the
//! same [`Application`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::info;

use crate::caller::Caller;
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::{Policy, RetryPolicy};
use crate::engine::Engine;
use crate::http::{router, Api, AppState};
use crate::store::{StartError, Store};

/// Why a replica could not start; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Redis is unusable.
    #[error(transparent)]
    Store(#[from] StartError),
    /// The HTTP port cannot be bound.
    #[error(
        "cannot listen on {addr}: {error}. Free the port or set DTX_HTTP_PORT / DTX_GRPC_PORT"
    )]
    Bind {
        /// Address.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The HTTP client cannot be built.
    #[error("grpc.register: {0}")]
    Register(String),
    #[error("cannot build the branch HTTP client: {0}")]
    Client(String),
}

/// A replica, bound and connected, not yet serving.
pub struct Application {
    listener: TcpListener,
    grpc_listener: TcpListener,
    grpc: crate::grpc::Grpc,
    register: Option<(String, String)>,
    engine: Arc<Engine>,
    state: AppState,
    max_body_bytes: usize,
    drain_delay_ms: u64,
    header_read_timeout: Duration,
    drain_timeout: Duration,
}

impl Application {
    /// Connects to Redis (checking it, loading scripts) and binds the port.
    pub async fn build(settings: &Settings) -> Result<Self, AppError> {
        Self::build_with_clock(settings, Arc::new(Clock::system())).await
    }

    /// [`Application::build`] with a given clock (tests shift it).
    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<Clock>,
    ) -> Result<Self, AppError> {
        let metrics = crate::telemetry::install();
        let store = Store::connect(&settings.redis, settings.store.finished_ttl_s).await?;
        let caller = Caller::new(&settings.branch, &settings.trans)
            .map_err(|e| AppError::Client(e.to_string()))?;
        let policy = Policy {
            retry: RetryPolicy {
                base_ms: settings.retry.base_ms,
                max_ms: settings.retry.max_ms,
                jitter: settings.retry.jitter,
            },
            timeout_to_fail_s: settings.trans.timeout_to_fail_s,
        };
        let engine = Arc::new(Engine::new(
            store,
            caller,
            policy,
            clock,
            settings.scheduler.clone(),
            settings.alert.clone(),
        ));
        let addr = format!("{}:{}", settings.http.host, settings.http.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|error| AppError::Bind { addr, error })?;
        let grpc_addr = format!("{}:{}", settings.http.host, settings.grpc.port);
        let grpc_listener =
            TcpListener::bind(&grpc_addr)
                .await
                .map_err(|error| AppError::Bind {
                    addr: grpc_addr,
                    error,
                })?;
        let state = Arc::new(Api {
            engine: Arc::clone(&engine),
            service: crate::service::Service {
                engine: Arc::clone(&engine),
                limits: crate::domain::Limits {
                    max_gid_len: settings.store.max_gid_len,
                    max_branches: settings.trans.max_branches,
                    max_payload_bytes: settings.trans.max_payload_bytes,
                },
                max_topic_subscribers: settings.trans.max_topic_subscribers,
                allow: Arc::new(crate::domain::AllowList::parse(
                    &settings.branch.allowed_hosts,
                )),
            },
            metrics,
            auth: crate::http::Auth::new(&settings.auth),
            origins: crate::http::AllowedOrigins::parse(&settings.http.allowed_origins),
        });
        let register = if settings.grpc.register.is_empty() {
            None
        } else {
            crate::domain::EtcdTarget::parse_service(&settings.grpc.register)
                .map_err(AppError::Register)?;
            let port = grpc_listener.local_addr().map(|a| a.port()).unwrap_or(0);
            let advertise = advertised(&settings.grpc.advertise, &settings.http.host, port);
            Some((settings.grpc.register.clone(), advertise))
        };
        let grpc = crate::grpc::Grpc {
            service: state.service.clone(),
            auth: state.auth.clone(),
            max_message_bytes: settings.http.max_body_bytes,
        };
        Ok(Self {
            listener,
            grpc_listener,
            grpc,
            register,
            engine,
            state,
            max_body_bytes: settings.http.max_body_bytes,
            drain_delay_ms: settings.http.drain_delay_ms,
            header_read_timeout: Duration::from_millis(settings.http.header_read_timeout_ms),
            drain_timeout: Duration::from_millis(settings.scheduler.drain_timeout_ms),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The bound gRPC port.
    pub fn grpc_port(&self) -> u16 {
        self.grpc_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    /// The replica's engine (tests drive its scheduler directly).
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    /// Serves until `shutdown` completes, then stops taking requests and
    /// claims, lets work in flight finish, and hands back the leases of
    /// what did not finish in time.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let engine = self.engine;
        info!(
            port = self.listener.local_addr()?.port(),
            grpc_port = self.grpc_listener.local_addr()?.port(),
            replica = %engine.owner,
            "dtx is serving"
        );
        let claims = tokio::spawn(Arc::clone(&engine).run_claim_loop());
        let maintenance = tokio::spawn(Arc::clone(&engine).run_maintenance());
        let stop = tokio_util::sync::CancellationToken::new();
        let server_stop = stop.clone();
        let app = router(self.state, self.max_body_bytes);
        // requests in flight get as long as the work they wait on
        let server = tokio::spawn(crate::http::serve::serve(
            self.listener,
            app,
            self.header_read_timeout,
            server_stop,
            self.drain_timeout,
        ));
        let draining = tokio_util::sync::CancellationToken::new();
        let grpc = tokio::spawn(crate::grpc::serve(
            self.grpc_listener,
            self.grpc,
            draining.clone(),
            stop.clone(),
            self.drain_timeout,
        ));
        let registration = match &self.register {
            Some((url, advertise)) => crate::discovery::Registration::start(url, advertise.clone())
                .map_err(|e| tracing::warn!(error = %e, "not registered in etcd"))
                .ok(),
            None => None,
        };
        shutdown.await;
        // readiness turns 503 (gRPC health NOT_SERVING) now, and the etcd
        // entry goes: keep serving while balancers and clients notice
        engine.begin_drain();
        draining.cancel();
        if let Some(r) = registration {
            r.revoke().await;
        }
        info!(
            delay_ms = self.drain_delay_ms,
            "stopping: readiness is off, claims stopped"
        );
        tokio::time::sleep(Duration::from_millis(self.drain_delay_ms)).await;
        info!("closing the port; draining work in flight");
        stop.cancel();
        engine.drain().await;
        let served = server.await;
        if let Ok(Err(e)) = grpc.await {
            tracing::warn!(error = %e, "the gRPC server stopped with an error");
        }
        let _ = claims.await;
        let _ = maintenance.await;
        info!("stopped");
        served.map_err(std::io::Error::other)
    }
}

/// The `host:port` this replica registers: `grpc.advertise` when set, else
/// `http.host` (this machine's host name when that listens everywhere)
/// with the bound gRPC port.
fn advertised(advertise: &str, host: &str, port: u16) -> String {
    if !advertise.is_empty() {
        return advertise.to_owned();
    }
    let host = match host {
        "" | "0.0.0.0" | "::" | "[::]" => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into()),
        h => h.to_owned(),
    };
    format!("{host}:{port}")
}
