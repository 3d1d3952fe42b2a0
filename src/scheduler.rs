//! Time and work sharing: the fast path after submit, the claim loop,
//! leases and the drain on shutdown.
//!
//! The replica that creates or takes over a transaction drives it at once.
//! Every replica also claims due transactions from every shard in batches:
//! those whose lease ran out (their replica died) and those whose retry
//! time came. The loop sleeps until the earliest due time it knows of,
//! wakes early when a local pass schedules something sooner, and looks at
//! every shard at least every `recheck_ms`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::domain::Trans;
use crate::drive::{drive, DriveEnd, DriveReport};
use crate::store::StoreError;
use crate::{otel, telemetry};

use crate::engine::ActiveGuard;
pub use crate::engine::Engine;

/// What one look at every shard did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickOutcome {
    /// Transactions claimed and started.
    pub claimed: usize,
    /// Whether some shard had more due than one batch.
    pub more: bool,
}

impl Engine {
    /// Drives `t`, leased at `epoch` until `lease_until`, in its own task
    /// (so a client that disconnects does not stop it).
    pub fn spawn_drive(
        self: &Arc<Self>,
        t: Trans,
        epoch: u64,
        lease_until: u64,
    ) -> JoinHandle<DriveReport> {
        self.run.active.fetch_add(1, Ordering::Relaxed);
        let engine = Arc::clone(self);
        self.run.tracker.spawn(async move {
            let _guard = ActiveGuard(&engine);
            engine.pass(t, epoch, lease_until).await
        })
    }

    async fn pass(self: &Arc<Self>, t: Trans, epoch: u64, lease_until: u64) -> DriveReport {
        let cx = otel::pass(&t);
        let report = otel::in_context(cx.clone(), drive(self, t, epoch, lease_until)).await;
        if let Some(cx) = &cx {
            otel::pass_ended(cx, report.trans.status.as_str(), report.end.label());
        }
        self.pass_ended(&report.trans.gid);
        let ok = !matches!(report.end, DriveEnd::StoreFailed(_) | DriveEnd::LeaseLost);
        telemetry::pass_ended(report.trans.kind.as_str(), ok);
        debug!(gid = %report.trans.gid, end = ?report.end, status = %report.trans.status, "pass ended");
        report
    }

    /// Drives the claimed `gid` as the sweep read it (`loaded`), in its own
    /// task. One that cannot be decoded is set aside (listed in the console's attention
    /// list, counted in `dtx_trans_set_aside_total`); one that cannot be
    /// read now is claimed again when its lease ends.
    fn spawn_claimed(
        self: &Arc<Self>,
        gid: String,
        epoch: u64,
        lease_until: u64,
        loaded: Result<Option<Trans>, StoreError>,
    ) {
        self.run.active.fetch_add(1, Ordering::Relaxed);
        let engine = Arc::clone(self);
        self.run.tracker.spawn(async move {
            let _guard = ActiveGuard(&engine);
            match loaded {
                Ok(Some(t)) => {
                    engine.pass(t, epoch, lease_until).await;
                }
                Ok(None) => debug!(gid = %gid, "claimed transaction expired meanwhile"),
                Err(StoreError::Decode(e)) => {
                    let why = e.to_string();
                    warn!(gid = %gid, error = %why, "transaction cannot be decoded; setting it aside");
                    match engine
                        .store
                        .set_aside(&gid, epoch, engine.now_ms(), &why)
                        .await
                    {
                        Ok(true) => telemetry::set_aside(),
                        Ok(false) => debug!(gid = %gid, "claimed again meanwhile; not set aside"),
                        Err(e) => warn!(gid = %gid, error = %e, "setting aside failed; tried again when its lease ends"),
                    }
                }
                Err(e) => {
                    warn!(gid = %gid, error = %e, "reading a claimed transaction failed; it is claimed again when its lease ends")
                }
            }
        });
    }

    /// Looks at every shard once and starts a pass for every transaction
    /// it claims.
    pub async fn tick_once(self: &Arc<Self>) -> TickOutcome {
        let capacity = self.run.settings.max_active.saturating_sub(self.active());
        if capacity == 0 {
            return TickOutcome {
                claimed: 0,
                more: true,
            };
        }
        // share the room between the shards, so one look cannot overshoot it
        let shards = self.store.keys().shards() as usize;
        let batch = self.run.settings.claim_batch.min(capacity.div_ceil(shards));
        let now = self.now_ms();
        let lease_until = now + self.lease_ms;
        self.run.earliest.store(u64::MAX, Ordering::Relaxed);
        let mut outcome = TickOutcome {
            claimed: 0,
            more: false,
        };
        let claims = match self
            .store
            .claim_every_shard(now, lease_until, &self.owner, batch)
            .await
        {
            Ok(claims) => claims,
            Err(e) => {
                warn!(error = %e, "claiming due transactions failed: no connection");
                return outcome;
            }
        };
        let mut leased = Vec::new();
        for (shard, claim) in claims.into_iter().enumerate() {
            match claim {
                Ok(claim) => {
                    outcome.claimed += claim.leased.len();
                    telemetry::lease("claimed", claim.leased.len() as u64);
                    outcome.more |= claim.leased.len() >= batch;
                    leased.extend(claim.leased);
                    if let Some(next) = claim.next_due {
                        self.run.earliest.fetch_min(next, Ordering::Relaxed);
                    }
                }
                Err(e) => warn!(shard, error = %e, "claiming due transactions failed"),
            }
        }
        if leased.is_empty() {
            return outcome;
        }
        // every claimed transaction read in one go, on one connection
        let gids: Vec<String> = leased.iter().map(|(gid, _)| gid.clone()).collect();
        match self.store.load_many(&gids).await {
            Ok(loaded) => {
                for ((gid, epoch), loaded) in leased.into_iter().zip(loaded) {
                    debug!(gid = %gid, epoch, "claimed");
                    self.spawn_claimed(gid, epoch, lease_until, loaded);
                }
            }
            Err(e) => {
                warn!(error = %e, claimed = gids.len(), "reading the claimed transactions failed; they are claimed again when their leases end")
            }
        }
        outcome
    }

    /// The claim loop; returns once [`Engine::drain`] has begun.
    pub async fn run_claim_loop(self: Arc<Self>) {
        let recheck = self.run.settings.recheck_ms;
        while !self.run.stop_claiming.is_cancelled() {
            let outcome = self.tick_once().await;
            if outcome.more {
                if self.active() >= self.run.settings.max_active {
                    // full: wait a little for passes to end
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        _ = self.run.stop_claiming.cancelled() => break,
                    }
                }
                continue;
            }
            let now = self.now_ms();
            let earliest = self.run.earliest.load(Ordering::Relaxed);
            let wait = earliest.saturating_sub(now).min(recheck);
            tokio::select! {
                _ = self.clock.sleep_until(now + wait) => {}
                _ = self.run.wake.notified() => {}
                _ = self.run.stop_claiming.cancelled() => break,
            }
        }
    }

    /// Housekeeping until [`Engine::drain`] begins: drops creation-index
    /// entries of transactions whose retention ran out, so the index does
    /// not grow without bound. Every replica may run it; the script makes
    /// concurrent runs harmless.
    pub async fn run_maintenance(self: Arc<Self>) {
        const BATCH: usize = 1000;
        let retention = self.store.finished_ttl_ms();
        while !self.run.stop_claiming.is_cancelled() {
            let cutoff = self.now_ms().saturating_sub(retention);
            let mut full = false;
            let now = self.now_ms();
            for shard in 0..self.store.keys().shards() {
                match self.store.prune_created(shard, cutoff, BATCH).await {
                    Ok(n) => full |= n >= BATCH,
                    Err(e) => debug!(shard, error = %e, "pruning the creation index failed"),
                }
                if let Ok((due, oldest)) = self.store.due_stats(shard, now).await {
                    let age = oldest.map(|o| now.saturating_sub(o)).unwrap_or(0);
                    telemetry::backlog(shard, due, Duration::from_millis(age));
                }
            }
            telemetry::active(self.active());
            let pause = if full { 10 } else { 1000 };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
                _ = self.run.stop_claiming.cancelled() => break,
            }
        }
    }

    /// First step of a graceful stop: claim nothing more; readiness turns
    /// 503. The API keeps serving until [`Engine::drain`].
    pub fn begin_drain(&self) {
        self.run.stop_claiming.cancel();
    }

    /// Graceful stop: claim nothing more, let passes in flight finish for up
    /// to `drain_timeout_ms`, then make the rest hand their leases back (due
    /// now) so another replica resumes them at once.
    pub async fn drain(&self) {
        self.run.stop_claiming.cancel();
        self.run.tracker.close();
        let deadline = Duration::from_millis(self.run.settings.drain_timeout_ms);
        if tokio::time::timeout(deadline, self.run.tracker.wait())
            .await
            .is_err()
        {
            info!(
                active = self.active(),
                "drain deadline reached; handing leases back"
            );
            self.run.hard_stop.cancel();
            if tokio::time::timeout(Duration::from_secs(5), self.run.tracker.wait())
                .await
                .is_err()
            {
                warn!(
                    active = self.active(),
                    "some passes did not hand their leases back; they run out by themselves"
                );
            }
        }
    }
}
