//! The engine: what every part of a replica shares (store, caller,
//! policy, clock, owner id) and the counters and signals the claim loop,
//! the passes and the drain coordinate through. It imports neither the
//! scheduler nor the driver; both build on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

use crate::caller::Caller;
use crate::clock::Clock;
use crate::config::{AlertSettings, SchedulerSettings};
use crate::domain::Policy;
use crate::store::{Stamp, Store};

pub mod share;

use share::Looks;

/// Everything a replica needs to drive transactions; shared by the API
/// handlers and the claim loop.
pub struct Engine {
    /// The store.
    pub store: Store,
    /// The branch caller.
    pub caller: Caller,
    /// Planner defaults.
    pub policy: Policy,
    /// Now.
    pub clock: Arc<Clock>,
    /// This replica's id (written as lease owner).
    pub owner: String,
    /// Lease length, ms.
    pub lease_ms: u64,
    /// Alert webhook.
    pub alert: AlertSettings,
    /// What the claim loop, the passes and the drain coordinate through.
    pub(crate) run: RunState,
}

/// The state of running work: the scheduler's settings, the passes under
/// way, the claim loop's wake-up, and the shutdown signals. Only the
/// scheduler and the passes touch it, through [`Engine`]'s methods.
pub(crate) struct RunState {
    pub(crate) settings: SchedulerSettings,
    pub(crate) wake: Notify,
    /// When the sleeping claim loop wakes, ms (`u64::MAX`: not asleep
    /// yet); a due time noted before it wakes it early.
    pub(crate) earliest: AtomicU64,
    /// This replica's shares and its schedule of looks at the shards.
    pub(crate) looks: Mutex<Looks>,
    /// Looks at a shard made so far (tests read it).
    pub(crate) looks_made: AtomicU64,
    pub(crate) active: AtomicUsize,
    /// Woken each time the last running pass ends.
    pub(crate) idle: Notify,
    /// Waiters for the end of a pass of a gid (repeated `wait_result`
    /// submits), woken by the pass; dead entries are dropped as it grows.
    pub(crate) waiters: Mutex<HashMap<String, Weak<Notify>>>,
    pub(crate) tracker: TaskTracker,
    pub(crate) stop_claiming: CancellationToken,
    pub(crate) hard_stop: CancellationToken,
}

/// Decrements the active count when a pass ends, however it ends.
pub(crate) struct ActiveGuard<'a>(pub(crate) &'a Engine);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if self.0.run.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.run.idle.notify_waiters();
        }
    }
}

impl Engine {
    /// An engine for this replica.
    pub fn new(
        store: Store,
        caller: Caller,
        policy: Policy,
        clock: Arc<Clock>,
        settings: SchedulerSettings,
        alert: AlertSettings,
    ) -> Self {
        let owner = format!("{:016x}", fastrand::u64(..));
        let looks = Looks::new(
            &owner,
            store.keys().shards(),
            settings.recheck_ms,
            clock.now_ms(),
        );
        Self {
            store,
            caller,
            policy,
            clock,
            owner,
            lease_ms: settings.lease_ms,
            alert,
            run: RunState {
                settings,
                wake: Notify::new(),
                earliest: AtomicU64::new(u64::MAX),
                looks: Mutex::new(looks),
                looks_made: AtomicU64::new(0),
                active: AtomicUsize::new(0),
                idle: Notify::new(),
                waiters: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                stop_claiming: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
            },
        }
    }

    /// Now, ms.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// This replica writing at `now_ms`.
    pub fn stamp(&self, now_ms: u64) -> Stamp<'_> {
        Stamp {
            owner: &self.owner,
            now_ms,
        }
    }

    /// Whether this replica is shutting down (readiness is then 503).
    pub fn draining(&self) -> bool {
        self.run.stop_claiming.is_cancelled()
    }

    /// Whether passes must hand their leases back now.
    pub fn stopping(&self) -> bool {
        self.run.hard_stop.is_cancelled()
    }

    /// Completes when passes must hand their leases back.
    pub fn hard_stop(&self) -> WaitForCancellationFuture<'_> {
        self.run.hard_stop.cancelled()
    }

    /// Transactions being driven by this replica now.
    pub fn active(&self) -> usize {
        self.run.active.load(Ordering::Relaxed)
    }

    /// Completes once no pass runs (tests wait on it instead of sleeping).
    pub async fn settled(&self) {
        loop {
            let idle = self.run.idle.notified();
            if self.active() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// A signal woken when a pass of `gid` on this replica ends; hold it
    /// while waiting.
    pub fn watch(&self, gid: &str) -> Arc<Notify> {
        let mut waiters = self.run.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = waiters.get(gid).and_then(Weak::upgrade) {
            return n;
        }
        if waiters.len() >= 1024 {
            waiters.retain(|_, w| w.strong_count() > 0);
        }
        let n = Arc::new(Notify::new());
        waiters.insert(gid.to_owned(), Arc::downgrade(&n));
        n
    }

    /// Wakes whoever waits for a pass of `gid` to end.
    pub(crate) fn pass_ended(&self, gid: &str) {
        let waiters = self.run.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = waiters.get(gid).and_then(Weak::upgrade) {
            n.notify_waiters();
        }
    }

    /// Tells the claim loop that `gid` is due at `at_ms`: it looks at the
    /// gid's shard then, whoever owns it.
    pub fn note_due(&self, gid: &str, at_ms: u64) {
        let shard = self.store.keys().shard_of(gid);
        self.looks().note(shard, at_ms);
        self.wake_by(at_ms);
    }

    /// Tells the claim loop that something in any shard may be due at
    /// `at_ms`.
    pub fn note_due_everywhere(&self, at_ms: u64) {
        self.looks().note_all(at_ms);
        self.wake_by(at_ms);
    }

    /// Wakes the claim loop if it sleeps past `at_ms`. The loop sets its
    /// wake time under the looks' lock, and a note is written there before
    /// this runs, so no note falls between the two.
    fn wake_by(&self, at_ms: u64) {
        if at_ms < self.run.earliest.fetch_min(at_ms, Ordering::Relaxed) {
            self.run.wake.notify_one();
        }
    }

    pub(crate) fn looks(&self) -> std::sync::MutexGuard<'_, Looks> {
        self.run.looks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shards this replica owns and how many replicas it sees alive.
    pub fn claim_share(&self) -> (Vec<u32>, usize) {
        let looks = self.looks();
        (looks.mine(), looks.live())
    }

    /// How many looks at a shard's due set this replica has made.
    pub fn claim_looks(&self) -> u64 {
        self.run.looks_made.load(Ordering::Relaxed)
    }

    /// Runs `work` (an alert, say) in a task the drain waits for.
    pub fn spawn_background(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.run.tracker.spawn(work);
    }
}
