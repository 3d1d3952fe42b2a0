//! Connecting: the checks a replica makes before it serves.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisError;

use super::scripts::Scripts;
use super::{Keys, StartError, Store};
use crate::config::{redact_url, RedisSettings};

impl Store {
    /// Connects, checks that Redis cannot evict, loads every script and
    /// checks the shard count; every failure is a [`StartError`].
    pub async fn connect(
        settings: &RedisSettings,
        finished_ttl_s: u64,
    ) -> Result<Self, StartError> {
        let url = redact_url(&settings.url);
        let connect_err = |e: RedisError| StartError::Connect {
            url: url.clone(),
            error: e.to_string(),
        };
        let client = redis::Client::open(settings.url.as_str()).map_err(connect_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
            .set_response_timeout(Some(Duration::from_millis(settings.response_timeout_ms)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(connect_err)?;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .map_err(connect_err)?;
        let policy = info
            .lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
            .unwrap_or("noeviction")
            .trim()
            .to_owned();
        if policy != "noeviction" {
            return Err(StartError::Eviction { url, policy });
        }
        let scripts = Scripts::new();
        for lua in scripts.all() {
            lua.script()
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(|e| StartError::Script {
                    name: lua.name,
                    error: e.to_string(),
                })?;
        }
        let keys = Keys::new(&settings.key_prefix, settings.shards);
        let meta = keys.meta();
        let (_, stored): (i64, u32) = redis::pipe()
            .cmd("HSETNX")
            .arg(&meta)
            .arg("shards")
            .arg(settings.shards)
            .cmd("HGET")
            .arg(&meta)
            .arg("shards")
            .query_async(&mut conn)
            .await
            .map_err(connect_err)?;
        if stored != settings.shards {
            return Err(StartError::Shards {
                prefix: settings.key_prefix.clone(),
                stored,
                configured: settings.shards,
            });
        }
        let reads = read_pool(settings).map_err(|error| StartError::Connect {
            url: url.clone(),
            error,
        })?;
        Ok(Self {
            conn,
            reads,
            keys,
            scripts: Arc::new(scripts),
            finished_ttl_ms: finished_ttl_s * 1000,
            min_replicas_ack: settings.min_replicas_ack,
            ack_timeout_ms: settings.ack_timeout_ms,
        })
    }
}

/// The large reads' pool: `read_pool_size` connections, opened when first
/// needed, with the hot path's timeouts; a caller waits at most the
/// response timeout for one to come free.
fn read_pool(settings: &RedisSettings) -> Result<deadpool_redis::Pool, String> {
    let timeouts = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(settings.response_timeout_ms)));
    let manager = deadpool_redis::Manager::new_with_config(settings.url.as_str(), timeouts)
        .map_err(|e| e.to_string())?;
    deadpool_redis::Pool::builder(manager)
        .max_size(settings.read_pool_size)
        .wait_timeout(Some(Duration::from_millis(settings.response_timeout_ms)))
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())
}
