//! The scheduler, driven by hand: a manual clock and `tick_once`, no claim
//! loop and no sleeping. Each test moves time to just before and just at
//! the moment something becomes due, and looks at what was claimed.

use std::sync::Arc;

use dtx::clock::Clock;
use dtx::domain::{BranchInput, NewTransInput, TransKind, TransOptions};
use dtx::engine::Engine;
use dtx::service::Service;
use dtx::Application;

use crate::support::{gid, prefix, test_settings, Branches, RedisServer, Reply};

/// Far from the real now, so nothing real interferes.
const START_MS: u64 = 1_900_000_000_000;

struct Stage {
    engine: Arc<Engine>,
    service: Service,
    clock: Arc<Clock>,
    // the replica is built, never run: nothing claims but the test
    _app: Application,
}

async fn stage(redis: &RedisServer) -> Stage {
    stage_with(redis, |_| {}).await
}

async fn stage_with(redis: &RedisServer, tune: impl FnOnce(&mut dtx::Settings)) -> Stage {
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.retry.jitter = 0.0;
    settings.retry.base_ms = 1000;
    tune(&mut settings);
    let clock = Arc::new(Clock::manual(START_MS));
    let app = Application::build_with_clock(&settings, Arc::clone(&clock))
        .await
        .unwrap();
    let engine = app.engine();
    let service = Service {
        engine: Arc::clone(&engine),
        limits: dtx::domain::Limits {
            max_gid_len: 128,
            max_branches: 2000,
            max_payload_bytes: 2 << 20,
        },
        max_topic_subscribers: 100,
        allow: Arc::new(dtx::domain::AllowList::default()),
    };
    Stage {
        engine,
        service,
        clock,
        _app: app,
    }
}

pub(crate) fn input(
    gid: &str,
    kind: TransKind,
    steps: &[(&str, &str)],
    query_prepared: &str,
) -> NewTransInput {
    NewTransInput {
        gid: gid.to_owned(),
        kind,
        steps: steps
            .iter()
            .map(|(a, c)| BranchInput {
                action: (*a).to_owned(),
                compensate: (*c).to_owned(),
            })
            .collect(),
        payloads: vec![b"{}".to_vec(); steps.len()],
        custom_data: String::new(),
        query_prepared: query_prepared.to_owned(),
        protocol: String::new(),
        opts: TransOptions::default(),
        topics: Default::default(),
    }
}

async fn status(s: &Stage, gid: &str) -> String {
    s.engine
        .store
        .load(gid)
        .await
        .unwrap()
        .map(|t| t.status.as_str().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_prepared_msg_is_checked_back_exactly_when_its_timeout_passes() {
    let redis = RedisServer::start();
    let s = stage(&redis).await;
    let b = Branches::start().await;
    let g = gid("timed-msg");
    let mut msg = input(&g, TransKind::Msg, &[(&b.url("step"), "")], &b.url("qp"));
    msg.opts.timeout_to_fail = 10;
    s.service.prepare(msg).await.unwrap();
    assert_eq!(s.engine.tick_once().await.claimed, 0);
    s.clock.shift(9_999);
    assert_eq!(s.engine.tick_once().await.claimed, 0, "one ms early");
    assert!(b.calls().is_empty());
    s.clock.shift(1);
    assert_eq!(s.engine.tick_once().await.claimed, 1);
    s.engine.settled().await;
    assert_eq!(b.paths_for(&g), ["qp", "step"]);
    assert_eq!(status(&s, &g).await, "succeed");
}

#[tokio::test]
async fn an_unknown_outcome_is_retried_after_its_backoff_and_not_before() {
    let redis = RedisServer::start();
    let s = stage(&redis).await;
    let b = Branches::start().await;
    b.script("a1", &[Reply::Error]);
    let g = gid("backoff");
    let saga = input(
        &g,
        TransKind::Saga,
        &[(&b.url("a1"), &b.url("c1")), (&b.url("a2"), &b.url("c2"))],
        "",
    );
    s.service.submit(saga).await.unwrap();
    s.engine.settled().await;
    assert_eq!(b.paths_for(&g), ["a1"]);
    assert_eq!(s.engine.tick_once().await.claimed, 0);
    // retry.base_ms is 1000, without jitter
    s.clock.shift(999);
    assert_eq!(s.engine.tick_once().await.claimed, 0, "one ms early");
    s.clock.shift(1);
    assert_eq!(s.engine.tick_once().await.claimed, 1);
    s.engine.settled().await;
    assert_eq!(b.paths_for(&g), ["a1", "a1", "a2"]);
    assert_eq!(status(&s, &g).await, "succeed");
}

#[tokio::test]
async fn a_live_lease_is_left_alone_and_an_expired_one_taken_over() {
    let redis = RedisServer::start();
    let s = stage(&redis).await;
    let b = Branches::start().await;
    let g = gid("lease");
    let mut msg = input(&g, TransKind::Msg, &[(&b.url("step"), "")], &b.url("qp"));
    msg.opts.timeout_to_fail = 1;
    s.service.prepare(msg).await.unwrap();
    // another replica claims it, and dies holding the lease
    s.clock.shift(1_000);
    let store = &s.engine.store;
    let shard = store.keys().shard_of(&g);
    let lease_ms = s.engine.lease_ms;
    let now = s.engine.now_ms();
    let claim = store
        .claim_due(shard, now, now + lease_ms, "dead-replica", 10)
        .await
        .unwrap();
    assert_eq!(claim.leased.len(), 1);
    s.clock.shift(lease_ms as i64 - 1);
    assert_eq!(s.engine.tick_once().await.claimed, 0, "the lease is live");
    s.clock.shift(1);
    assert_eq!(s.engine.tick_once().await.claimed, 1);
    s.engine.settled().await;
    assert_eq!(b.paths_for(&g), ["qp", "step"]);
    assert_eq!(status(&s, &g).await, "succeed");
}

#[tokio::test]
async fn the_end_of_a_pass_wakes_whoever_watches_its_gid() {
    let redis = RedisServer::start();
    let s = stage(&redis).await;
    let b = Branches::start().await;
    let g = gid("watched");
    let woken = s.engine.watch(&g);
    let ended = woken.notified();
    let saga = input(&g, TransKind::Saga, &[(&b.url("a1"), &b.url("c1"))], "");
    s.service.submit(saga).await.unwrap();
    // a repeated wait_result submit waits on this instead of polling
    tokio::time::timeout(std::time::Duration::from_secs(5), ended)
        .await
        .expect("the pass ended without waking the watcher");
    assert_eq!(status(&s, &g).await, "succeed");
}

#[tokio::test]
async fn a_drain_past_its_deadline_hands_the_lease_back_due_now() {
    let redis = RedisServer::start();
    let s = stage_with(&redis, |s| s.scheduler.drain_timeout_ms = 200).await;
    let b = Branches::start().await;
    b.set_default("a1", Reply::Slow(30_000));
    let g = gid("drained");
    let saga = input(&g, TransKind::Saga, &[(&b.url("a1"), &b.url("c1"))], "");
    s.service.submit(saga).await.unwrap();
    // the pass is calling a1, which hangs
    while b.calls().is_empty() {
        tokio::task::yield_now().await;
    }
    s.engine.begin_drain();
    s.engine.drain().await;
    assert_eq!(s.engine.active(), 0);
    let store = &s.engine.store;
    let t = store.load(&g).await.unwrap().unwrap();
    assert_eq!(t.status.as_str(), "submitted");
    assert_eq!(t.owner, "", "the lease was handed back");
    let due: Option<f64> = redis::cmd("ZSCORE")
        .arg(store.keys().due(store.keys().shard_of(&g)))
        .arg(&g)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(
        due,
        Some(s.engine.now_ms() as f64),
        "due at once for another replica"
    );
}

#[tokio::test]
async fn retries_back_off_doubling_up_to_the_cap() {
    let redis = RedisServer::start();
    let s = stage_with(&redis, |s| s.retry.max_ms = 3000).await;
    let b = Branches::start().await;
    b.script(
        "a1",
        &[Reply::Error, Reply::Error, Reply::Error, Reply::Error],
    );
    let g = gid("growth");
    let saga = input(&g, TransKind::Saga, &[(&b.url("a1"), &b.url("c1"))], "");
    s.service.submit(saga).await.unwrap();
    s.engine.settled().await;
    // base 1000 ms, doubling, capped at 3000 ms, no jitter
    for (attempt, delay) in [(2, 1000), (3, 2000), (4, 3000), (5, 3000)] {
        s.clock.shift(delay - 1);
        assert_eq!(
            s.engine.tick_once().await.claimed,
            0,
            "attempt {attempt}: 1 ms early"
        );
        s.clock.shift(1);
        assert_eq!(s.engine.tick_once().await.claimed, 1, "attempt {attempt}");
        s.engine.settled().await;
        let calls = b.paths_for(&g).iter().filter(|p| *p == "a1").count();
        assert_eq!(calls, attempt);
    }
    assert_eq!(status(&s, &g).await, "succeed");
}

/// Yields until `cond` holds; panics after 5 s of real time.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::task::yield_now().await;
    }
}

fn due_score(redis: &RedisServer, s: &Stage, gid: &str) -> Option<f64> {
    let store = &s.engine.store;
    redis::cmd("ZSCORE")
        .arg(store.keys().due(store.keys().shard_of(gid)))
        .arg(gid)
        .query(&mut redis.conn())
        .unwrap()
}

#[tokio::test]
async fn a_long_branch_call_renews_the_lease_before_half_of_it_is_gone() {
    let redis = RedisServer::start();
    let s = stage_with(&redis, |s| s.scheduler.lease_ms = 1000).await;
    let b = Branches::start().await;
    b.set_default("a1", Reply::Slow(300));
    let g = gid("renewed");
    let saga = input(&g, TransKind::Saga, &[(&b.url("a1"), &b.url("c1"))], "");
    s.service.submit(saga).await.unwrap();
    until("a1 is called", || !b.calls().is_empty()).await;
    assert_eq!(due_score(&redis, &s, &g), Some((START_MS + 1000) as f64));
    // past half the lease: the pass renews it while a1 still runs
    s.clock.shift(600);
    until("the lease is renewed", || {
        due_score(&redis, &s, &g) == Some((START_MS + 1600) as f64)
    })
    .await;
    // past the first expiry, nobody may take it over
    s.clock.shift(500);
    assert_eq!(s.engine.tick_once().await.claimed, 0);
    s.engine.settled().await;
    assert_eq!(b.paths_for(&g), ["a1"]);
    assert_eq!(status(&s, &g).await, "succeed");
}

#[tokio::test]
async fn the_claim_loop_wakes_at_the_earliest_due_time_it_knows() {
    let redis = RedisServer::start();
    // no periodic look: only the earliest due time can wake the loop
    let s = stage_with(&redis, |s| s.scheduler.recheck_ms = 3_600_000).await;
    let b = Branches::start().await;
    let claims = tokio::spawn(Arc::clone(&s.engine).run_claim_loop());
    let g = gid("woken");
    let mut msg = input(&g, TransKind::Msg, &[(&b.url("step"), "")], &b.url("qp"));
    msg.opts.timeout_to_fail = 10;
    s.service.prepare(msg).await.unwrap();
    s.clock.shift(10_000);
    until("the check-back is called", || !b.paths_for(&g).is_empty()).await;
    s.engine.settled().await;
    until("the msg is done", || b.paths_for(&g).len() == 2).await;
    assert_eq!(b.paths_for(&g), ["qp", "step"]);
    s.engine.begin_drain();
    claims.await.unwrap();
}

#[tokio::test]
async fn retry_jitter_spreads_due_times_inside_its_band() {
    let redis = RedisServer::start();
    let s = stage_with(&redis, |s| s.retry.jitter = 0.2).await;
    let b = Branches::start().await;
    const SAGAS: usize = 20;
    b.script("a1", &vec![Reply::Error; SAGAS]);
    let gids: Vec<String> = (0..SAGAS).map(|i| gid(&format!("jitter{i}"))).collect();
    for g in &gids {
        let saga = input(g, TransKind::Saga, &[(&b.url("a1"), &b.url("c1"))], "");
        s.service.submit(saga).await.unwrap();
    }
    s.engine.settled().await;
    // base 1000 ms scaled by a factor in [0.8, 1.2]
    let delays: Vec<u64> = gids
        .iter()
        .map(|g| due_score(&redis, &s, g).expect("due again") as u64 - START_MS)
        .collect();
    for d in &delays {
        assert!((800..=1200).contains(d), "a delay of {d} ms: {delays:?}");
    }
    let mut distinct = delays.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() > 1, "jitter spread nothing: {delays:?}");
    // nothing is claimed before the band, everything by its end
    let first = *distinct.first().unwrap();
    s.clock.shift(first as i64 - 1);
    assert_eq!(
        s.engine.tick_once().await.claimed,
        0,
        "1 ms before the first"
    );
    s.clock.shift(1200 - first as i64 + 1);
    let mut claimed = 0;
    loop {
        let n = s.engine.tick_once().await.claimed;
        if n == 0 {
            break;
        }
        claimed += n;
    }
    assert_eq!(claimed, SAGAS);
    s.engine.settled().await;
    for g in &gids {
        assert_eq!(status(&s, g).await, "succeed");
    }
}
