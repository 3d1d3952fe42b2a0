//! All of Redis: the only code that knows key names and scripts. One
//! wrapper per Lua file (same name), every reply decoded into a typed
//! outcome.
//!
//! Commands go over one shared multiplexed connection
//! (`ConnectionManager`), which pipelines concurrent calls and reconnects
//! by itself after Redis restarts or the connection drops.

pub mod codec;
mod error;
pub mod keys;
mod list;
mod reads;
pub mod scripts;
mod startup;
mod types;

use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::Value;

pub use error::{LimitKind, StartError, StoreError};
pub use keys::{Keys, TransKeys};
use scripts::Scripts;
pub use types::{
    Claim, Created, Cursor, Held, KvEntry, Leased, ListFilter, Move, Record, Schedule, Stamp,
};

/// The Redis store of one deployment.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    keys: Keys,
    scripts: Arc<Scripts>,
    finished_ttl_ms: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Runs one script by SHA (reloading it if Redis lost it), recording
    /// its count and latency under the script's label.
    async fn eval(&self, inv: &scripts::Invocation<'_>) -> Result<Value, StoreError> {
        let started = std::time::Instant::now();
        let span = crate::otel::script(inv.of.label);
        let mut conn = self.conn.clone();
        let reply = inv.redis().invoke_async(&mut conn).await;
        crate::otel::script_ended(span, reply.is_ok());
        crate::telemetry::script(inv.of.label, reply.is_ok(), started.elapsed());
        Ok(reply?)
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// How long finished transactions are kept, ms.
    pub fn finished_ttl_ms(&self) -> u64 {
        self.finished_ttl_ms
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}
