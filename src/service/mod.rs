//! The use cases of dtx, one method each, shared by every transport: the
//! HTTP and JSON-RPC adapters in `http` parse their input into the typed
//! inputs here, call one method, and map its [`ServiceError`] to their own
//! replies. Nothing here knows about HTTP.

mod error;
mod ops;
mod reads;
mod topics;
mod trans;

use std::sync::Arc;

pub use error::{ServiceError, ServiceResult};
pub use ops::RegisterBranch;
pub use reads::MAX_PAGE;
pub use topics::{check_name, TOPICS};
pub use trans::{new_gid, Abort, WorkflowOutcome};

use crate::domain::{AllowList, Limits};
use crate::engine::Engine;

/// The use cases, over one replica's engine.
#[derive(Clone)]
pub struct Service {
    /// The replica's engine (store, caller, scheduler).
    pub engine: Arc<Engine>,
    /// What one transaction may hold.
    pub limits: Limits,
    /// Most subscribers of one topic (`trans.max_topic_subscribers`).
    pub max_topic_subscribers: usize,
    /// Hosts branch URLs may name.
    pub allow: Arc<AllowList>,
}

impl Service {
    /// Refuses a URL whose host is not on the allow-list.
    pub fn check_allowed(&self, url: &str) -> ServiceResult {
        if self.allow.allows(url) {
            Ok(())
        } else {
            Err(ServiceError::Invalid(format!(
                "url {url:?} names a host that is not allowed (branch.allowed_hosts)"
            )))
        }
    }
}
