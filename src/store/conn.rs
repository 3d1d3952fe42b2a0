//! The Redis deployments dtx runs on, one server or a Redis Cluster, and
//! the connection types the store uses on either.
//!
//! `redis.url` names one server or a cluster by its seed nodes
//! ([`crate::config::RedisTarget`]). On a cluster every script still touches
//! one slot (the keys of a transaction share its shard's hash tag), so the
//! cluster connection routes it to that slot's master and follows MOVED
//! and ASK by itself during resharding and after a failover.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed::{Manager, Metrics, RecycleResult};
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::sentinel::Follower;
use super::StoreError;

/// A connection of the store: the hot path's (one shared multiplexed
/// connection to one server, reconnecting by itself, or one cluster
/// connection), or a clone of a read-pool connection.
#[derive(Clone)]
pub(crate) enum Conn {
    /// The hot path's on one server.
    Managed(ConnectionManager),
    /// A read-pool connection to one server.
    Multiplexed(MultiplexedConnection),
    /// A cluster connection (hot path or read pool), each reply bounded by
    /// the response timeout.
    Cluster(ClusterConnection, Duration),
    /// The hot path's to the master Redis Sentinel names.
    Sentinel(Arc<Follower>),
    /// A read-pool connection to the master of that generation; an error
    /// that a moved master causes makes the follower ask the sentinels.
    SentinelRead(MultiplexedConnection, Arc<Follower>, u64),
}

impl Conn {
    /// Sends `cmd`, which names no key, to the master serving `key`'s
    /// slot (on one server: to the server).
    pub(crate) async fn on_master_of(&mut self, key: &str, cmd: &Cmd) -> Result<Value, StoreError> {
        match self {
            Conn::Cluster(c, timeout) => {
                let route =
                    SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                let sent = c.route_command(cmd.clone(), RoutingInfo::SingleNode(route));
                Ok(bounded(*timeout, sent).await?)
            }
            other => Ok(cmd.query_async(other).await?),
        }
    }
}

/// `fut`, or a timeout error after `timeout`.
async fn bounded<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(reply) => reply,
        Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut).into()),
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c, timeout) => {
                let timeout = *timeout;
                Box::pin(bounded(timeout, c.req_packed_command(cmd)))
            }
            Conn::Sentinel(follower) => Box::pin(async move {
                let (generation, mut c) = follower.conn();
                watched(follower, generation, c.req_packed_command(cmd).await).await
            }),
            Conn::SentinelRead(c, follower, generation) => Box::pin(async move {
                watched(follower, *generation, c.req_packed_command(cmd).await).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c, timeout) => {
                let timeout = *timeout;
                Box::pin(bounded(
                    timeout,
                    c.req_packed_commands(pipeline, offset, count),
                ))
            }
            Conn::Sentinel(follower) => Box::pin(async move {
                let (generation, mut c) = follower.conn();
                let reply = c.req_packed_commands(pipeline, offset, count).await;
                watched(follower, generation, reply).await
            }),
            Conn::SentinelRead(c, follower, generation) => Box::pin(async move {
                let reply = c.req_packed_commands(pipeline, offset, count).await;
                watched(follower, *generation, reply).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c, _) => c.get_db(),
            Conn::Sentinel(follower) => follower.conn().1.get_db(),
            Conn::SentinelRead(c, _, _) => c.get_db(),
        }
    }
}

/// `reply` of a connection to `generation`'s master behind Sentinel,
/// after its error (if any) has made the follower look for the master.
async fn watched<T>(
    follower: &Follower,
    generation: u64,
    reply: Result<T, RedisError>,
) -> Result<T, RedisError> {
    if let Err(e) = &reply {
        follower.after_error(generation, e).await;
    }
    reply
}

/// The large reads' pool: of one-server, cluster or Sentinel-followed
/// connections.
#[derive(Clone)]
pub(crate) enum ReadPool {
    /// Connections to one server.
    Single(deadpool_redis::Pool),
    /// Cluster connections, each reply bounded by the response timeout.
    Cluster(ClusterPool, Duration),
    /// Connections to the master Redis Sentinel names.
    Sentinel(Arc<SentinelReads>),
}

/// The read pool behind Sentinel: a one-server pool to the follower's
/// master, made anew when the follower moves to another.
pub(crate) struct SentinelReads {
    /// The hot path's follower, which finds the master.
    pub follower: Arc<Follower>,
    /// The pool of the master of that generation.
    pub pool: Mutex<(u64, deadpool_redis::Pool)>,
    /// Makes the pool of a new master.
    pub make:
        Box<dyn Fn(redis::ConnectionInfo) -> Result<deadpool_redis::Pool, String> + Send + Sync>,
}

/// deadpool's manager of cluster connections made by dtx's own
/// [`ClusterClient`], with the hot path's timeouts and certificates
/// (deadpool-redis's cluster manager builds its client from URLs alone,
/// so it could not trust a private CA nor show a client certificate).
pub(crate) struct ClusterReads(pub ClusterClient);

/// The cluster read pool.
pub(crate) type ClusterPool = deadpool::managed::Pool<ClusterReads>;

impl Manager for ClusterReads {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<ClusterConnection, RedisError> {
        self.0.get_async_connection().await
    }

    /// A connection goes back into use only after a `PING` answered.
    async fn recycle(
        &self,
        conn: &mut ClusterConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        redis::cmd("PING").query_async::<()>(conn).await?;
        Ok(())
    }
}

/// A connection checked out of the [`ReadPool`]: `conn` is used (and may
/// be cloned to run several reads at once on it); the connection goes
/// back to the pool when this is dropped.
pub(crate) struct ReadConn {
    _held: Box<dyn Send + Sync>,
    /// The connection.
    pub conn: Conn,
}

impl ReadPool {
    /// A free connection, waiting at most the pool's wait timeout.
    pub(crate) async fn get(&self) -> Result<ReadConn, StoreError> {
        match self {
            ReadPool::Single(pool) => {
                let held = pool.get().await.map_err(pool_error)?;
                let conn = Conn::Multiplexed((*held).clone());
                Ok(ReadConn {
                    _held: Box::new(held),
                    conn,
                })
            }
            ReadPool::Sentinel(reads) => {
                let master = reads.follower.master();
                let pool = {
                    let mut current = reads.pool.lock().expect("poisoned");
                    if current.0 != master.generation {
                        let fresh = (reads.make)(master.info).map_err(StoreError::Unavailable)?;
                        *current = (master.generation, fresh);
                    }
                    current.1.clone()
                };
                let held = pool.get().await.map_err(pool_error)?;
                let conn =
                    Conn::SentinelRead((*held).clone(), reads.follower.clone(), master.generation);
                Ok(ReadConn {
                    _held: Box::new(held),
                    conn,
                })
            }
            ReadPool::Cluster(pool, timeout) => {
                let held = pool.get().await.map_err(pool_error)?;
                let conn = Conn::Cluster((*held).clone(), *timeout);
                Ok(ReadConn {
                    _held: Box::new(held),
                    conn,
                })
            }
        }
    }
}

fn pool_error(e: deadpool::managed::PoolError<RedisError>) -> StoreError {
    use deadpool::managed::PoolError;
    match e {
        PoolError::Backend(e) => e.into(),
        PoolError::Timeout(_) => {
            StoreError::Timeout("no connection of the read pool came free".into())
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}
