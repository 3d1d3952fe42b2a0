//! dtx: a distributed transaction coordinator that speaks dtm's wire
//! protocol and keeps all its state in Redis.
//!
//! # Layout
//!
//! In the order a transaction travels:
//!
//! - [`http`]: dtm's HTTP API; parses and validates requests, never calls
//!   a branch. [`grpc`]: dtm's gRPC API, the same way. Both check tokens
//!   with [`access`] and call [`service`], the use cases.
//! - [`domain`]: the pure model: types, the status transition table, the
//!   retry policy, validation, and the planner that says what to do next.
//! - [`store`]: the only code that knows Redis keys and Lua scripts; one
//!   wrapper per script in `lua/`.
//! - [`scheduler`]: time and work sharing: the fast path after submit, the
//!   claim loop, leases, drain.
//! - [`drive`]: one pass over one leased transaction: plan, call, record.
//! - [`caller`]: branch calls and the classification of their replies.
//! - [`clock`]: the injected "now".
//! - [`config`]: layered, validated settings.
//! - [`app`]: builds a replica from settings and runs it.
//! - [`dev`]: the private Redis of `--dev`.
//! - [`telemetry`]: Prometheus metric names and recording helpers.
//! - [`otel`]: trace context kept with transactions and sent to branches;
//!   span export over OTLP.

pub mod access;
pub mod app;
pub mod caller;
pub mod clock;
pub mod config;
pub mod dev;
pub mod discovery;
pub mod domain;
pub mod drive;
pub mod engine;
pub mod grpc;
pub mod http;
pub mod otel;
pub mod proto;
pub mod scheduler;
#[cfg(feature = "self-check")]
pub mod self_check;
pub mod service;
pub mod store;
pub mod telemetry;

pub use app::{AppError, Application};
pub use config::Settings;
