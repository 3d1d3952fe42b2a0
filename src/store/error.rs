//! What can go wrong talking to Redis, at start and afterwards.

use redis::{ErrorKind, RedisError, ServerErrorKind};

use super::codec::DecodeError;
use crate::domain::{GlobalStatus, TransKind};

/// Why a store call did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached (down, restarting, loading).
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis did not answer in time: a write may or may not have been
    /// applied.
    #[error("redis did not answer in time: {0}")]
    Timeout(String),
    /// The status is not the expected one: someone else advanced it.
    #[error("status is '{actual}', expected '{expected}'")]
    Conflict {
        /// What the caller expected.
        expected: GlobalStatus,
        /// What Redis holds.
        actual: GlobalStatus,
    },
    /// A KV entry is not at the expected version: someone else wrote it.
    #[error("version is {actual}, expected {expected}")]
    VersionConflict {
        /// What the caller expected.
        expected: u64,
        /// What Redis holds.
        actual: u64,
    },
    /// The lease was taken over by another epoch.
    #[error("lease lost: the epoch is now {0}")]
    StaleEpoch(u64),
    /// No such transaction.
    #[error("no such transaction")]
    NotFound,
    /// A branch row is missing or not in its expected status.
    #[error("branch row {0} is missing or not in its expected status")]
    BranchConflict(String),
    /// The transaction is of another kind than the call named.
    #[error("the transaction is a {0} transaction")]
    KindConflict(TransKind),
    /// The change would pass a limit of one transaction.
    #[error("the transaction would hold too many {what:?} (it holds {held})")]
    Limit {
        /// Which limit.
        what: LimitKind,
        /// How many it holds now.
        held: u64,
    },
    /// The write is on the primary, but fewer replicas than
    /// `redis.min_replicas_ack` confirmed it in time.
    #[error("confirmed by {acked} of {wanted} replicas within redis.ack_timeout_ms")]
    NotReplicated {
        /// Replicas that confirmed.
        acked: u64,
        /// Replicas asked for.
        wanted: u32,
    },
    /// A reply of the wrong shape.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Any other Redis error.
    #[error("redis error: {0}")]
    Redis(String),
}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        let down = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || matches!(
                e.kind(),
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                )
            );
        if e.is_timeout() {
            StoreError::Timeout(e.to_string())
        } else if down {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Redis(e.to_string())
        }
    }
}

/// The limit of one transaction a change would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Branch rows (`trans.max_branches`).
    Rows,
    /// Payload bytes (`trans.max_payload_bytes`).
    Bytes,
}

/// Why dtx cannot start on this Redis; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {error}. Start Redis there, set DTX_REDIS_URL, or run with --dev")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// Why.
        error: String,
    },
    /// Redis may evict keys.
    #[error("Redis at {url} runs with maxmemory-policy {policy}, which can evict transactions. Set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf)")]
    Eviction {
        /// The URL, password redacted.
        url: String,
        /// The policy found.
        policy: String,
    },
    /// The Redis Cluster cannot hold every transaction.
    #[error("the Redis Cluster at {url} {problem}. Fix the cluster (redis-cli --cluster check <node>) before starting dtx")]
    Cluster {
        /// The URL, password redacted.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// A script did not load.
    #[error("Redis refused script lua/{name}.lua: {error}. Use Redis 6.2 or newer with scripting enabled")]
    Script {
        /// Script name.
        name: &'static str,
        /// Why.
        error: String,
    },
    /// The shard count differs from the deployment's.
    #[error("this deployment (key prefix {prefix:?}) was created with {stored} shards but redis.shards is {configured}. Set DTX_REDIS_SHARDS={stored}; changing it is a data migration")]
    Shards {
        /// Key prefix.
        prefix: String,
        /// Recorded count.
        stored: u32,
        /// Configured count.
        configured: u32,
    },
}
