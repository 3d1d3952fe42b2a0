//! etcd, as go-zero uses it (contract §7.3): a service registers
//! `<key>/<lease id>` → `host:port` on a lease with a 10 s TTL kept alive;
//! a client resolves every live endpoint under `<key>/` and follows
//! changes. [`Resolver`] does the client side for `etcd://` branch
//! targets, [`Registration`] the service side for this replica's gRPC API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions, WatchOptions};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::domain::EtcdTarget;

/// TTL of a registration's lease, s (go-zero's).
const LEASE_TTL_S: i64 = 10;

/// How long a call waits for a new target's first resolution.
const FIRST_RESOLUTION: Duration = Duration::from_secs(3);

/// Services watched at most; beyond, new targets are refused.
const MAX_SERVICES: usize = 256;

async fn connect(t: &EtcdTarget) -> Result<Client, etcd_client::Error> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5));
    if let Some((user, password)) = &t.credentials {
        options = options.with_user(user.clone(), password.clone());
    }
    Client::connect(&t.etcd, Some(options)).await
}

/// The live endpoints of one service, kept current by a watch.
#[derive(Default)]
struct Watched {
    endpoints: RwLock<Vec<String>>,
    next: AtomicUsize,
    /// Set once the first look at etcd ended, found or not.
    looked: tokio::sync::OnceCell<()>,
    looked_signal: Notify,
    last_error: Mutex<String>,
}

impl Watched {
    fn set(&self, kvs: &[etcd_client::KeyValue]) {
        let mut found: Vec<String> = kvs
            .iter()
            .filter_map(|kv| kv.value_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        found.sort();
        found.dedup();
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = found;
    }

    fn looked(&self) {
        if self.looked.set(()).is_ok() {
            self.looked_signal.notify_waiters();
        }
    }
}

/// Resolves `etcd://` targets to live endpoints, round robin; one watch
/// per service, stopped when the resolver is dropped.
#[derive(Default)]
pub struct Resolver {
    services: Mutex<HashMap<String, Followed>>,
}

/// A watched service and the task that follows it.
type Followed = (Arc<Watched>, JoinHandle<()>);

impl Drop for Resolver {
    fn drop(&mut self) {
        let services = self.services.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, (_, task)) in services.drain() {
            task.abort();
        }
    }
}

impl Resolver {
    /// The next live endpoint (`host:port`) of `target`'s service. While
    /// etcd is unreachable the endpoints known last keep being used; with
    /// none known the call is an error (retried, never a failure).
    pub async fn pick(&self, target: &EtcdTarget) -> Result<String, String> {
        let watched = self.watched(target)?;
        if watched.looked.get().is_none() {
            let signal = watched.looked_signal.notified();
            tokio::pin!(signal);
            // registered before the second look, so no wake-up is missed
            signal.as_mut().enable();
            if watched.looked.get().is_none() {
                let _ = tokio::time::timeout(FIRST_RESOLUTION, signal).await;
            }
        }
        let endpoints = watched.endpoints.read().unwrap_or_else(|e| e.into_inner());
        if endpoints.is_empty() {
            let why = watched.last_error.lock().unwrap_or_else(|e| e.into_inner());
            return Err(format!(
                "no live endpoint of {} in etcd {}{}",
                target.key,
                target.etcd.join(","),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            ));
        }
        let i = watched.next.fetch_add(1, Ordering::Relaxed) % endpoints.len();
        Ok(endpoints[i].clone())
    }

    fn watched(&self, target: &EtcdTarget) -> Result<Arc<Watched>, String> {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let key = target.watch_key();
        if let Some((w, _)) = services.get(&key) {
            return Ok(Arc::clone(w));
        }
        if services.len() >= MAX_SERVICES {
            return Err(format!(
                "more than {MAX_SERVICES} etcd services named by branches; {} is not watched",
                target.service()
            ));
        }
        let w = Arc::new(Watched::default());
        let task = tokio::spawn(follow_forever(target.clone(), Arc::clone(&w)));
        services.insert(key, (Arc::clone(&w), task));
        Ok(w)
    }
}

/// Reads the service's endpoints and follows every change; reconnects
/// after a second when etcd goes away, keeping what it knew.
async fn follow_forever(target: EtcdTarget, w: Arc<Watched>) {
    let prefix = format!("{}/", target.key);
    loop {
        if let Err(e) = follow(&target, &prefix, &w).await {
            warn!(service = %target.service(), error = %e, "etcd watch interrupted; keeping the endpoints known");
            *w.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e.to_string();
        }
        w.looked();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow(t: &EtcdTarget, prefix: &str, w: &Watched) -> Result<(), etcd_client::Error> {
    let mut client = connect(t).await?;
    let all = || Some(GetOptions::new().with_prefix());
    let got = client.get(prefix, all()).await?;
    w.set(got.kvs());
    w.last_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    w.looked();
    let revision = got.header().map(|h| h.revision()).unwrap_or(0);
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = client.watch(prefix, Some(options)).await?;
    while let Some(change) = stream.message().await? {
        if !change.events().is_empty() {
            // read the whole list again: exact whatever the events were
            let got = client.get(prefix, all()).await?;
            w.set(got.kvs());
        }
    }
    Ok(())
}

/// This replica's gRPC endpoint, registered in etcd until revoked.
pub struct Registration {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Registration {
    /// Registers `advertise` (`host:port`) under `url`'s key
    /// (`etcd://host:port/key`), keeps the lease alive, and registers again
    /// after etcd comes back.
    pub fn start(url: &str, advertise: String) -> Result<Self, String> {
        let target = EtcdTarget::parse_service(url)?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(register_forever(target, advertise, stop.clone()));
        Ok(Self { stop, task })
    }

    /// Revokes the lease (the entry disappears at once) and stops.
    pub async fn revoke(self) {
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .is_err()
        {
            warn!("etcd did not confirm the revocation; the entry expires with its lease");
        }
    }
}

async fn register_forever(target: EtcdTarget, advertise: String, stop: CancellationToken) {
    loop {
        let run = register_once(&target, &advertise, &stop);
        match run.await {
            Ok(()) => return,
            Err(e) => {
                warn!(key = %target.key, error = %e, "etcd registration interrupted; registering again");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn register_once(
    t: &EtcdTarget,
    advertise: &str,
    stop: &CancellationToken,
) -> Result<(), etcd_client::Error> {
    let mut client = connect(t).await?;
    let lease = client.lease_grant(LEASE_TTL_S, None).await?.id();
    let key = format!("{}/{lease}", t.key);
    client
        .put(
            key.as_str(),
            advertise,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    info!(key = %key, endpoint = %advertise, "registered in etcd");
    let (mut keeper, mut acks) = client.lease_keep_alive(lease).await?;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                client.lease_revoke(lease).await?;
                info!(key = %key, "etcd registration revoked");
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_secs((LEASE_TTL_S / 3) as u64)) => {
                keeper.keep_alive().await?;
                match acks.message().await? {
                    Some(ack) if ack.ttl() > 0 => {}
                    _ => return Err(etcd_client::Error::LeaseKeepAliveError("lease expired".into())),
                }
            }
        }
    }
}
