//! All of Redis: the only code that knows key names and scripts. One
//! wrapper per Lua file (same name), every reply decoded into a typed
//! outcome.
//!
//! The hot path's commands (the scripts that create, move and record
//! transactions) go over one shared multiplexed connection
//! (`ConnectionManager`), which pipelines concurrent calls and reconnects
//! by itself after Redis restarts or the connection drops. Large reads
//! (a query, a listing, the console's lists, KV scans, claims) take a
//! connection of a small pool of their own (`redis.read_pool_size`,
//! deadpool-redis), so a big reply never holds up the scripts queued
//! behind it on the shared connection.

pub mod codec;
mod conn;
mod error;
pub mod keys;
mod list;
mod reads;
pub mod scripts;
mod sentinel;
mod startup;
mod tls;
mod types;

use std::sync::Arc;

use redis::Value;

use conn::{Conn, ReadConn, ReadPool};

pub use error::{LimitKind, StartError, StoreError};
pub use keys::{Keys, TransKeys};
use scripts::Scripts;
pub use types::{
    Claim, Created, Cursor, Held, KvEntry, Leased, ListFilter, Move, Record, Schedule, Stamp,
};

/// The Redis store of one deployment.
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    reads: ReadPool,
    keys: Keys,
    scripts: Arc<Scripts>,
    finished_ttl_ms: u64,
    /// Replicas that confirm an acknowledged create or submit, and how
    /// long they may take, ms.
    min_replicas_ack: u32,
    ack_timeout_ms: u64,
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
        self.eval_on(&mut self.conn.clone(), inv).await
    }

    /// [`Store::eval`] on `conn`.
    async fn eval_on(
        &self,
        conn: &mut Conn,
        inv: &scripts::Invocation<'_>,
    ) -> Result<Value, StoreError> {
        let started = std::time::Instant::now();
        let span = crate::otel::script(inv.of.label);
        let reply = inv.redis().invoke_async(conn).await;
        crate::otel::script_ended(span, reply.is_ok());
        crate::telemetry::script(inv.of.label, reply.is_ok(), started.elapsed());
        Ok(reply?)
    }

    /// With `redis.min_replicas_ack` set, waits (`WAIT`) until that many
    /// replicas have every write sent so far on the hot path's connection
    /// to the master of `key` (on a cluster: its slot's master), the
    /// caller's among them; fewer within `redis.ack_timeout_ms` is
    /// [`StoreError::NotReplicated`].
    async fn confirm(&self, key: &str) -> Result<(), StoreError> {
        if self.min_replicas_ack == 0 {
            return Ok(());
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.min_replicas_ack).arg(self.ack_timeout_ms);
        let reply = self.conn.clone().on_master_of(key, &wait).await?;
        let acked: u64 =
            redis::from_redis_value(reply).map_err(|e| codec::DecodeError(format!("WAIT: {e}")))?;
        if acked < u64::from(self.min_replicas_ack) {
            return Err(StoreError::NotReplicated {
                acked,
                wanted: self.min_replicas_ack,
            });
        }
        Ok(())
    }

    /// A connection of the large reads' pool.
    async fn read_conn(&self) -> Result<ReadConn, StoreError> {
        self.reads.get().await
    }

    /// `each` for every one of `shards`, concurrently on one connection of
    /// the read pool (the calls are pipelined, never on the hot path's
    /// connection); one result per shard, in the order of `shards`.
    async fn on_each_shard<T, F, Fut>(
        &self,
        shards: &[u32],
        each: F,
    ) -> Result<Vec<Result<T, StoreError>>, StoreError>
    where
        F: Fn(Conn, u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        let pooled = self.read_conn().await?;
        let calls = shards.iter().map(|&shard| each(pooled.conn.clone(), shard));
        Ok(futures_util::future::join_all(calls).await)
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
