//! The transaction model and every decision about it, with no I/O: the
//! types, the status transition table, the retry policy and the planner
//! that says what to do next.
//!
//! Nothing here reads the clock, talks to Redis or opens a socket; callers
//! pass the time in, so every rule is unit-tested.

mod allow;
mod build;
mod decide;
mod model;
mod plan;
mod retry;
mod target;
mod transition;

pub use allow::AllowList;
#[cfg(test)]
pub(crate) use build::TEST_LIMITS;
pub use build::{
    build_new, build_registered, build_registered_with, validate_branch_id, validate_gid,
    validate_url, BranchInput, Limits, NewTrans, NewTransInput, ValidationError, MAX_RETRY_LIMIT,
    MAX_SECONDS, MAX_STEPS,
};
pub use decide::{decide, Command, Decision, Refusal, Then};
pub use model::{
    Branch, BranchStatus, GlobalStatus, Op, SagaCustom, TraceContext, Trans, TransKind,
    TransOptions,
};
pub use plan::{
    after_check_back, deadline, plan, plan_shaped, retry_at, settle, unfinished, AfterCheckBack,
    Outcome, Plan, Resume, Settled, Shape, Unfinished,
};
pub use retry::{Policy, RetryPolicy};
pub use target::{is_grpc_url, plain_http, EtcdTarget, GrpcTarget};
pub use transition::{mermaid, next, Event, InvalidTransition};
