//! dtx behind Redis Sentinel (`redis+sentinel://`): it follows the master
//! through a failover under load; with `redis.min_replicas_ack = 1`
//! nothing acknowledged is lost, and without it the loss is counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{
    check_each_ended_once, prefix, test_settings, Branches, LoadOutcome, RedisSentinel, SagaLoad,
    TestApp,
};

/// Sagas under load while the primary is SIGKILLed, the sentinels promote
/// the replica, and the old primary comes back (as a replica); returns
/// how they ended and how long the promotion took.
async fn failover_under_load(min_replicas_ack: u32) -> (LoadOutcome, Duration) {
    let mut set = RedisSentinel::start();
    let mut settings = test_settings(&set.url(), &prefix());
    settings.redis.min_replicas_ack = min_replicas_ack;
    settings.redis.ack_timeout_ms = 500;
    let app = Arc::new(TestApp::spawn_with(settings).await);
    let b = Branches::start().await;
    let load = SagaLoad::start(&app, &b, 8);
    tokio::time::sleep(Duration::from_millis(800)).await;

    let old = set.primary.port;
    set.primary.kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    while set.master_port().is_none_or(|p| p == old) {
        assert!(Instant::now() < deadline, "the sentinels promoted no one");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted = killed.elapsed();
    assert_eq!(set.master_port(), Some(set.replica.port));
    // back, the old primary is made the new one's replica by the sentinels
    set.primary.revive();
    let deadline = Instant::now() + Duration::from_secs(30);
    let acked_at_promotion = load.acknowledged();
    while set.replica.info("replication", "connected_slaves") < 1
        || load.acknowledged() < acked_at_promotion + 200
    {
        assert!(
            Instant::now() < deadline,
            "dtx did not go on acknowledging on the new master"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = load.stop().await;
    let outcome = check_each_ended_once(&app, &b, &sent, 30).await;
    (outcome, promoted)
}

fn report(min_replicas_ack: u32, outcome: &LoadOutcome, promoted: Duration) {
    eprintln!(
        "min_replicas_ack {min_replicas_ack}: sent {}, acknowledged {}, lost {}, \
         gone after calls {}, actions called again {}, promoted after {promoted:?}",
        outcome.sent,
        outcome.acknowledged,
        outcome.lost.len(),
        outcome.gone_after_calls.len(),
        outcome.repeated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtx_follows_a_sentinel_failover_and_loses_nothing_acknowledged_with_min_replicas_ack() {
    let (outcome, promoted) = failover_under_load(1).await;
    assert!(
        outcome.lost.is_empty(),
        "acknowledged and lost: {:?}",
        outcome.lost
    );
    report(1, &outcome, promoted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtx_follows_a_sentinel_failover_without_min_replicas_ack_and_counts_what_is_lost() {
    let (outcome, promoted) = failover_under_load(0).await;
    report(0, &outcome, promoted);
}
