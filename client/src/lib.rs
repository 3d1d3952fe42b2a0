//! Client SDK for dtx and any dtm server, over dtm's HTTP API, and over
//! its gRPC API for sagas, msgs, TCC, XA and workflows ([`grpc`]).
//!
//! # Layout
//! In the order a transaction travels:
//! - [`client`]: [`Dtm`], the coordinator's HTTP API, and [`TransOptions`].
//! - [`saga`], [`msg`], [`tcc`], [`xa`]: one module per
//!   transaction type, each a builder or scope that ends in submit or abort;
//!   [`xa`] also has the branch side on MySQL/MariaDB and PostgreSQL;
//!   [`workflow`] runs recorded steps in the client and replays them on
//!   resume.
//! - [`axum`]: branch-handler helpers: [`axum::BranchParams`] from the
//!   query, replies with the contract's status codes.
//! - [`barrier`]: the sub-transaction barrier for PostgreSQL and
//!   MySQL/MariaDB (sqlx), with its DDL; [`redis_barrier`]: the same on
//!   Redis, Cluster-safe.
//! - [`grpc`]: the same over dtm's gRPC API ([`grpc::DtmGrpc`]), and the
//!   gRPC branch side: the barrier from metadata, the reply status.
//! - [`error`]: [`Error`], with FAILURE, ONGOING and DUPLICATED as variants.
//!
//! ```no_run
//! # async fn f() -> dtx_client::Result<()> {
//! use dtx_client::{Dtm, Saga};
//! let dtm = Dtm::new("http://localhost:36789/api/dtmsvr");
//! let gid = dtm.new_gid().await?;
//! Saga::new(&dtm, &gid)
//!     .add("http://svc/out", "http://svc/out-revert", &serde_json::json!({"amount": 30}))
//!     .wait_result()
//!     .submit()
//!     .await?;
//! # Ok(()) }
//! ```

pub mod axum;
pub mod barrier;
pub mod client;
pub mod error;
pub mod grpc;
pub mod msg;
pub mod redis_barrier;
pub mod saga;
mod scope;
pub mod tcc;
pub mod workflow;
pub mod xa;

pub use barrier::BranchBarrier;
pub use client::{Dtm, TransOptions};
pub use error::{Error, Result};
pub use msg::{BarrierDb, DbConn, Msg};
pub use saga::Saga;
pub use tcc::{tcc_global_transaction, tcc_global_transaction_with, Tcc};
pub use workflow::{Workflow, WorkflowCtx};
pub use xa::{xa_global_transaction, xa_global_transaction_with, Xa, XaMysql, XaPostgres};
