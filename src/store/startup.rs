//! Connecting: the checks a replica makes before it serves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::RedisError;

use super::conn::{ClusterPool, ClusterReads, Conn, ReadPool, SentinelReads};
use super::scripts::Scripts;
use super::sentinel::Follower;
use super::{Keys, StartError, Store};
use crate::config::{redact_url, RedisSettings, RedisTarget as Target};

impl Store {
    /// Connects (to one server or a cluster, as `redis.url` says), checks
    /// that Redis cannot evict (every master of a cluster) and that a
    /// cluster serves every slot, loads every script (on every node) and
    /// checks the shard count; every failure is a [`StartError`].
    pub async fn connect(
        settings: &RedisSettings,
        finished_ttl_s: u64,
    ) -> Result<Self, StartError> {
        let url = redact_url(&settings.url);
        let start_err = |error: String| StartError::Connect {
            url: url.clone(),
            error,
        };
        let connect_err = |e: RedisError| start_err(e.to_string());
        let target = Target::parse(&settings.url).map_err(start_err)?;
        let certs = super::tls::certificates(settings).map_err(start_err)?;
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let response_timeout = Duration::from_millis(settings.response_timeout_ms);
        let (mut conn, reads, policies) = match &target {
            Target::Single(one) => {
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(one.as_str(), certs),
                    None => redis::Client::open(one.as_str()),
                }
                .map_err(connect_err)?;
                // the read pool's connections carry the same certificates
                let node = client.get_connection_info().clone();
                let mut conn = Conn::Managed(
                    ConnectionManager::new_with_config(client, hot_config(settings))
                        .await
                        .map_err(connect_err)?,
                );
                let info: String = redis::cmd("INFO")
                    .arg("memory")
                    .query_async(&mut conn)
                    .await
                    .map_err(connect_err)?;
                let reads = ReadPool::Single(single_read_pool(node, settings).map_err(start_err)?);
                (conn, reads, vec![(url.clone(), eviction_policy(&info))])
            }
            Target::Sentinel(target) => {
                let follower = Arc::new(
                    Follower::connect(target, certs, timeouts(settings))
                        .await
                        .map_err(connect_err)?,
                );
                let master = follower.master();
                let mut conn = Conn::Sentinel(Arc::clone(&follower));
                let info: String = redis::cmd("INFO")
                    .arg("memory")
                    .query_async(&mut conn)
                    .await
                    .map_err(connect_err)?;
                let for_master = settings.clone();
                let make = move |info: redis::ConnectionInfo| single_read_pool(info, &for_master);
                let first = make(master.info.clone()).map_err(start_err)?;
                let reads = ReadPool::Sentinel(Arc::new(SentinelReads {
                    follower,
                    pool: Mutex::new((master.generation, first)),
                    make: Box::new(make),
                }));
                let node = format!("{} (master {:?})", master.info.addr(), target.master);
                (conn, reads, vec![(node, eviction_policy(&info))])
            }
            Target::Cluster(seeds) => {
                let mut builder = ClusterClient::builder(seeds.clone())
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout)
                    .retries(8)
                    .min_retry_wait(20)
                    .max_retry_wait(500);
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(connect_err)?;
                let cluster = client.get_async_connection().await.map_err(connect_err)?;
                let mut conn = Conn::Cluster(cluster, response_timeout);
                check_cluster(&mut conn, &url, settings.shards).await?;
                let policies = master_policies(&mut conn).await.map_err(connect_err)?;
                let reads = cluster_read_pool(client, settings).map_err(start_err)?;
                (conn, ReadPool::Cluster(reads, response_timeout), policies)
            }
        };
        if let Some((node, policy)) = policies.into_iter().find(|(_, p)| p != "noeviction") {
            return Err(StartError::Eviction { url: node, policy });
        }
        let scripts = Scripts::new();
        for lua in scripts.all() {
            // on a cluster SCRIPT LOAD goes to every node
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

/// The hot path's connection on one server: it reconnects by itself,
/// twice at most per command, waiting at most 500 ms in between.
fn hot_config(settings: &RedisSettings) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(settings.response_timeout_ms)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

/// A plain connection with the settings' timeouts: the read pool's, and
/// the hot path's behind Sentinel (no reconnecting of its own: the
/// follower asks the sentinels instead).
fn timeouts(settings: &RedisSettings) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(settings.response_timeout_ms)))
}

/// `maxmemory_policy` of an `INFO memory` reply.
fn eviction_policy(info: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix("maxmemory_policy:"))
        .unwrap_or("noeviction")
        .trim()
        .to_owned()
}

/// Every slot must be served: a cluster whose state is not `ok` would
/// refuse the transactions of the slots it lacks. Fewer shards than
/// masters leaves masters without transactions: worth a warning.
async fn check_cluster(conn: &mut Conn, url: &str, shards: u32) -> Result<(), StartError> {
    let problem = |problem: String| StartError::Cluster {
        url: url.to_owned(),
        problem,
    };
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(conn)
        .await
        .map_err(|e| problem(format!("did not answer CLUSTER INFO ({e})")))?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let (state, assigned) = (field("cluster_state"), field("cluster_slots_assigned"));
    if state != "ok" || assigned != "16384" {
        return Err(problem(format!(
            "is not serving every slot (cluster_state {state}, {assigned} of 16384 slots assigned)"
        )));
    }
    let masters: u32 = field("cluster_size").parse().unwrap_or(0);
    tracing::info!(masters, shards, "connected to a Redis Cluster");
    if shards < masters {
        tracing::warn!(
            masters,
            shards,
            "redis.shards is below the cluster's master count: some masters hold no transactions"
        );
    }
    Ok(())
}

/// The eviction policy of every master of the cluster, by address.
async fn master_policies(conn: &mut Conn) -> Result<Vec<(String, String)>, RedisError> {
    let Conn::Cluster(cluster, _) = conn else {
        unreachable!("master_policies is asked of cluster connections only");
    };
    let mut info = redis::cmd("INFO");
    info.arg("memory");
    let replies = cluster
        .route_command(
            info,
            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
        )
        .await?;
    let by_node: HashMap<String, String> = redis::from_redis_value(replies)?;
    Ok(by_node
        .into_iter()
        .map(|(node, info)| (node, eviction_policy(&info)))
        .collect())
}

/// The large reads' pool on one server: `read_pool_size` connections,
/// opened when first needed, with the hot path's timeouts; a caller waits
/// at most the response timeout for one to come free.
fn single_read_pool(
    url: impl redis::IntoConnectionInfo,
    settings: &RedisSettings,
) -> Result<deadpool_redis::Pool, String> {
    let manager = deadpool_redis::Manager::new_with_config(url, timeouts(settings))
        .map_err(|e| e.to_string())?;
    deadpool_redis::Pool::builder(manager)
        .max_size(settings.read_pool_size)
        .wait_timeout(Some(Duration::from_millis(settings.response_timeout_ms)))
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())
}

/// The large reads' pool on a cluster: the same size and wait bound, of
/// connections of the hot path's cluster client (its timeouts and
/// certificates; each reply is bounded by the response timeout where the
/// store uses it).
fn cluster_read_pool(
    client: ClusterClient,
    settings: &RedisSettings,
) -> Result<ClusterPool, String> {
    ClusterPool::builder(ClusterReads(client))
        .max_size(settings.read_pool_size)
        .wait_timeout(Some(Duration::from_millis(settings.response_timeout_ms)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())
}
