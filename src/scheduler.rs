//! Time and work sharing: the fast path after submit, the claim loop,
//! leases and the drain on shutdown.
//!
//! The replica that creates or takes over a transaction drives it at once.
//! Every replica also claims due transactions in batches: those whose lease
//! ran out (their replica died) and those whose retry time came. The
//! replicas share the shards ([`crate::engine::share`]): each looks at its
//! own at their known due time and at least every `recheck_ms`, at the
//! others' far more rarely, and heartbeats every `recheck_ms`. The loop
//! sleeps until its next look or heartbeat, and wakes early when a local
//! pass schedules something sooner.

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
    /// it claims (tests drive the scheduler with it, on a manual clock).
    pub async fn tick_once(self: &Arc<Self>) -> TickOutcome {
        let every: Vec<u32> = (0..self.store.keys().shards()).collect();
        self.claim_from(&every).await
    }

    /// Looks at the shards whose look is due now (see
    /// [`crate::engine::share`]).
    async fn tick_planned(self: &Arc<Self>) -> TickOutcome {
        let plan = self.looks().plan(self.now_ms());
        if plan.is_empty() {
            return TickOutcome {
                claimed: 0,
                more: false,
            };
        }
        self.claim_from(&plan).await
    }

    /// Looks at `shards` once and starts a pass for every transaction it
    /// claims.
    async fn claim_from(self: &Arc<Self>, shards: &[u32]) -> TickOutcome {
        let capacity = self.run.settings.max_active.saturating_sub(self.active());
        if capacity == 0 {
            return TickOutcome {
                claimed: 0,
                more: true,
            };
        }
        // share the room between the shards, so one look cannot overshoot it
        let batch = self
            .run
            .settings
            .claim_batch
            .min(capacity.div_ceil(shards.len().max(1)));
        let now = self.now_ms();
        let lease_until = now + self.lease_ms;
        let mut outcome = TickOutcome {
            claimed: 0,
            more: false,
        };
        self.looks().begin(shards);
        let claims = match self
            .store
            .claim_shards(shards, now, lease_until, &self.owner, batch)
            .await
        {
            Ok(claims) => claims,
            Err(e) => {
                warn!(error = %e, "claiming due transactions failed: no connection");
                let mut looks = self.looks();
                for &shard in shards {
                    looks.looked(shard, now, None, false);
                }
                return outcome;
            }
        };
        self.run
            .looks_made
            .fetch_add(shards.len() as u64, Ordering::Relaxed);
        telemetry::claim_looks(shards.len());
        let mut leased = Vec::new();
        {
            let mut looks = self.looks();
            for (&shard, claim) in shards.iter().zip(claims) {
                match claim {
                    Ok(claim) => {
                        let full = claim.leased.len() >= batch;
                        outcome.claimed += claim.leased.len();
                        telemetry::lease("claimed", claim.leased.len() as u64);
                        outcome.more |= full;
                        looks.looked(shard, now, claim.next_due, full);
                        leased.extend(claim.leased);
                    }
                    Err(e) => {
                        looks.looked(shard, now, None, false);
                        warn!(shard, error = %e, "claiming due transactions failed")
                    }
                }
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

    /// How long this replica's entry in the replica set lasts without a
    /// new heartbeat, ms: at least a lease, and three heartbeats.
    fn heartbeat_ttl_ms(&self) -> u64 {
        self.lease_ms
            .max(self.run.settings.recheck_ms.saturating_mul(3))
    }

    /// One heartbeat: stays in the replica set and takes the shares of the
    /// set read back. A failed one keeps the last set (the other replicas
    /// forget this one once its entry lapses, and look at every shard
    /// anyway, more rarely).
    async fn beat(&self, now: u64) {
        let alive_until = now.saturating_add(self.heartbeat_ttl_ms());
        match self
            .store
            .heartbeat(&self.owner, now, Some(alive_until))
            .await
        {
            Ok(live) => {
                let mut looks = self.looks();
                if looks.set_live(live, now) {
                    info!(
                        replicas = looks.live(),
                        shards = looks.mine().len(),
                        "replica set changed; shares recomputed"
                    );
                }
                telemetry::claim_share(looks.mine().len(), looks.live());
            }
            Err(e) => warn!(error = %e, "heartbeat failed; keeping the last replica set"),
        }
    }

    /// The claim loop; returns once [`Engine::drain`] has begun, after
    /// taking this replica out of the replica set (its shards pass to the
    /// others at their next heartbeat).
    pub async fn run_claim_loop(self: Arc<Self>) {
        let recheck = self.run.settings.recheck_ms;
        let mut next_beat = 0;
        while !self.run.stop_claiming.is_cancelled() {
            let now = self.now_ms();
            if now >= next_beat {
                self.beat(now).await;
                next_beat = now.saturating_add(recheck);
            }
            let outcome = self.tick_planned().await;
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
            let wake = {
                let looks = self.looks();
                let wake = looks.wake_at().min(next_beat);
                self.run.earliest.store(wake, Ordering::Relaxed);
                wake
            };
            tokio::select! {
                _ = self.clock.sleep_until(wake) => {}
                _ = self.run.wake.notified() => {}
                _ = self.run.stop_claiming.cancelled() => break,
            }
        }
        if let Err(e) = self.store.heartbeat(&self.owner, self.now_ms(), None).await {
            debug!(error = %e, "leaving the replica set failed; the entry lapses by itself");
        }
    }

    /// Housekeeping until [`Engine::drain`] begins, on the shards this
    /// replica owns: drops creation-index entries of transactions whose
    /// retention ran out, so the index does not grow without bound, and
    /// reports the due backlog (0 for the shards of others, whose owners
    /// report them). Ownership only spreads the work: the script makes
    /// concurrent runs harmless.
    pub async fn run_maintenance(self: Arc<Self>) {
        const BATCH: usize = 1000;
        let retention = self.store.finished_ttl_ms();
        // the shards whose backlog this replica last reported (all at
        // first, so every other shard's gauges start at 0)
        let mut reported = vec![true; self.store.keys().shards() as usize];
        while !self.run.stop_claiming.is_cancelled() {
            let cutoff = self.now_ms().saturating_sub(retention);
            let mut full = false;
            let now = self.now_ms();
            let mine = self.looks().mine();
            let mut owned = vec![false; reported.len()];
            for &shard in &mine {
                owned[shard as usize] = true;
            }
            // a shard that went to another replica reads 0 here, once
            for (shard, was) in reported.iter().enumerate() {
                if *was && !owned[shard] {
                    telemetry::backlog(shard as u32, 0, Duration::ZERO);
                }
            }
            reported = owned;
            match self.store.prune_shards(&mine, cutoff, BATCH).await {
                Ok(pruned) => {
                    for (&shard, result) in mine.iter().zip(pruned) {
                        match result {
                            Ok(n) => full |= n >= BATCH,
                            Err(e) => {
                                debug!(shard, error = %e, "pruning the creation index failed")
                            }
                        }
                    }
                }
                Err(e) => debug!(error = %e, "pruning the creation index failed"),
            }
            match self.store.due_stats(&mine, now).await {
                Ok(stats) => {
                    for (&shard, stat) in mine.iter().zip(stats) {
                        if let Ok((due, oldest)) = stat {
                            let age = oldest.map(|o| now.saturating_sub(o)).unwrap_or(0);
                            telemetry::backlog(shard, due, Duration::from_millis(age));
                        }
                    }
                }
                Err(e) => debug!(error = %e, "reading the due backlog failed"),
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
