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
pub use types::{Claim, Created, Cursor, KvEntry, Leased, ListFilter, Record, Schedule};

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
    /// its count and latency under `name`.
    async fn eval(
        &self,
        name: &'static str,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<Value, StoreError> {
        let started = std::time::Instant::now();
        let mut conn = self.conn.clone();
        let reply = inv.invoke_async(&mut conn).await;
        crate::telemetry::script(name, reply.is_ok(), started.elapsed());
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
