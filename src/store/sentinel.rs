//! Following the master behind Redis Sentinel (`redis+sentinel://`,
//! `rediss+sentinel://`).
//!
//! redis-rs's sentinel client finds the master (asking the sentinels, then
//! checking that the node it names says it is a master); its connections
//! stay on the address they were opened to. So the store keeps one
//! multiplexed connection to the master it was told of, and whenever a
//! command fails as a moved master would make it fail (refused, dropped,
//! timed out, or `READONLY` from a demoted one) it asks the sentinels
//! again, at most once per [`RECHECK`], and opens a new connection to the
//! master they name, the same one or a new one. It never reconnects to an
//! address on its own: an old primary restarted at once would otherwise
//! take writes (as a master, until the sentinels demote it) that its
//! demotion then throws away. The failed command is not repeated (its
//! write may have been applied): its caller sees the error, as with any
//! Redis outage.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError,
    ServerErrorKind, TlsCertificates, TlsMode,
};

use crate::config::SentinelTarget;

/// Shortest time between two questions to the sentinels.
pub(crate) const RECHECK: Duration = Duration::from_millis(100);

/// The master now, and how to find the next one.
pub(crate) struct Follower {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    config: AsyncConnectionConfig,
    current: RwLock<Master>,
    asked: Mutex<Option<Instant>>,
}

/// One master dtx is connected to.
#[derive(Clone)]
pub(crate) struct Master {
    /// Bumped at each move.
    pub generation: u64,
    /// Its address and login.
    pub info: ConnectionInfo,
    /// The hot path's connection to it.
    pub conn: MultiplexedConnection,
}

impl Follower {
    /// Asks the sentinels for `target`'s master and connects to it; over
    /// TLS to both when `target`'s sentinels are `rediss://`, trusting and
    /// showing `certs` when given.
    pub(crate) async fn connect(
        target: &SentinelTarget,
        certs: Option<TlsCertificates>,
        config: AsyncConnectionConfig,
    ) -> Result<Self, RedisError> {
        let addrs = target
            .sentinels
            .iter()
            .map(|url| Ok(url.as_str().into_connection_info()?.addr().clone()))
            .collect::<Result<Vec<_>, RedisError>>()?;
        let mut builder =
            SentinelClientBuilder::new(addrs, &target.master, SentinelServerType::Master)?
                .set_client_to_redis_db(target.db);
        if let Some(user) = &target.username {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = &target.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if target.is_tls() {
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(certs) = certs {
                builder = builder
                    .set_client_to_redis_certificates(certs.clone())
                    .set_client_to_sentinel_certificates(certs);
            }
        }
        let mut sentinels = builder.build()?;
        let client = sentinels.async_get_client().await?;
        let info = client.get_connection_info().clone();
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Self {
            sentinels: tokio::sync::Mutex::new(sentinels),
            config,
            current: RwLock::new(Master {
                generation: 0,
                info,
                conn,
            }),
            asked: Mutex::new(None),
        })
    }

    /// The master now.
    pub(crate) fn master(&self) -> Master {
        self.current.read().expect("poisoned").clone()
    }

    /// The hot path's connection to the master now, and its generation.
    pub(crate) fn conn(&self) -> (u64, MultiplexedConnection) {
        let current = self.current.read().expect("poisoned");
        (current.generation, current.conn.clone())
    }

    /// After `error` on `generation`'s connection: when it is one a moved
    /// master causes, asks the sentinels (unless someone did within
    /// [`RECHECK`], or already moved on) and connects to the master they
    /// name, the same address or another.
    pub(crate) async fn after_error(&self, generation: u64, error: &RedisError) {
        if !master_may_have_moved(error) {
            return;
        }
        let mut sentinels = self.sentinels.lock().await;
        if self.conn().0 != generation {
            return;
        }
        {
            let mut asked = self.asked.lock().expect("poisoned");
            if asked.is_some_and(|at| at.elapsed() < RECHECK) {
                return;
            }
            *asked = Some(Instant::now());
        }
        let Ok(client) = sentinels.async_get_client().await else {
            return;
        };
        let Ok(conn) = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
        else {
            return;
        };
        let info = client.get_connection_info().clone();
        let mut current = self.current.write().expect("poisoned");
        if info.addr() != current.info.addr() {
            tracing::warn!(
                from = %current.info.addr(),
                to = %info.addr(),
                "Redis Sentinel names a new master: following it"
            );
        }
        *current = Master {
            generation: current.generation + 1,
            info,
            conn,
        };
    }
}

/// Whether `e` is what a master that died, stalled or was demoted makes a
/// command fail with.
fn master_may_have_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}
