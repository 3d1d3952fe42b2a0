//! Replicas sharing the claim work on one Redis: shares partition the
//! shards, idle looks stay near the stated bound, a shard whose owner
//! stopped claiming is not starved, and a replica that joins, dies or
//! leaves moves only its own shards.

use std::sync::Arc;
use std::time::Duration;

use dtx::domain::{build_new, GlobalStatus, TransKind};
use dtx::engine::share::owner_of;
use dtx::engine::Engine;

use crate::scheduler::input;
use crate::support::{
    gid, prefix, test_settings, until, wait_status_at, Branches, RedisServer, TestApp,
};

const SHARDS: u32 = 16;
/// The test timings' `scheduler.recheck_ms`.
const RECHECK_MS: u64 = 100;

async fn replica(redis: &RedisServer, prefix: &str) -> TestApp {
    let mut s = test_settings(&redis.url(), prefix);
    s.redis.shards = SHARDS;
    TestApp::spawn_with(s).await
}

fn sees(engines: &[&Arc<Engine>], live: usize) -> bool {
    engines.iter().all(|e| e.claim_share().1 == live)
}

/// Each engine's shards, checked to be disjoint and, with `others`, to
/// cover every shard.
fn shares(engines: &[&Arc<Engine>], others: &[u32]) -> Vec<Vec<u32>> {
    let shares: Vec<Vec<u32>> = engines.iter().map(|e| e.claim_share().0).collect();
    let mut all: Vec<u32> = shares.iter().flatten().chain(others).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..SHARDS).collect::<Vec<_>>(),
        "{shares:?} + {others:?}"
    );
    shares
}

fn contains_all(bigger: &[u32], smaller: &[u32]) -> bool {
    smaller.iter().all(|s| bigger.contains(s))
}

/// A submitted 2-step saga on `b`, stored directly (no replica is told),
/// due at `due_ms`.
async fn stored_saga(engine: &Engine, g: &str, b: &Branches, due_ms: u64) {
    let now = engine.now_ms();
    let (a1, c1, a2, c2) = (b.url("a1"), b.url("c1"), b.url("a2"), b.url("c2"));
    let steps = [(a1.as_str(), c1.as_str()), (a2.as_str(), c2.as_str())];
    let t = build_new(
        input(g, TransKind::Saga, &steps, ""),
        GlobalStatus::Submitted,
        now,
        &dtx::domain::Limits {
            max_gid_len: 128,
            max_branches: 10,
            max_payload_bytes: 1024,
        },
    )
    .unwrap();
    engine
        .store
        .create_trans(&t, 0, Some(due_ms))
        .await
        .unwrap();
}

#[tokio::test]
async fn replicas_share_the_shards_and_a_silent_owner_starves_none() {
    let redis = RedisServer::start();
    let p = prefix();
    let b = Branches::start().await;
    let apps = [
        replica(&redis, &p).await,
        replica(&redis, &p).await,
        replica(&redis, &p).await,
    ];
    let engines: Vec<&Arc<Engine>> = apps.iter().map(|a| &a.engine).collect();
    // a replica that heartbeats but never claims: the worst owner a shard
    // can have (a hung claim loop)
    // (the replicas' ids are random: pick a ghost id that owns shards
    // beside them, as about 99 % of ids do)
    let (ghost, ghost_shards) = (0..100)
        .map(|i| {
            let ghost = format!("ghost{i}");
            let mut live: Vec<String> = engines.iter().map(|e| e.owner.clone()).collect();
            live.push(ghost.clone());
            live.sort();
            let owned: Vec<u32> = (0..SHARDS)
                .filter(|&s| owner_of(s, &live) == Some(ghost.as_str()))
                .collect();
            (ghost, owned)
        })
        .find(|(_, owned)| owned.len() >= 2)
        .expect("some ghost id owns shards");
    let store = engines[0].store.clone();
    let beating = tokio::spawn({
        let store = store.clone();
        let clock = Arc::clone(&engines[0].clock);
        async move {
            loop {
                let now = clock.now_ms();
                store
                    .heartbeat(&ghost, now, Some(now + 1500))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(RECHECK_MS)).await;
            }
        }
    });
    until("every replica sees four", || sees(&engines, 4)).await;
    let four = shares(&engines, &ghost_shards);

    // idle: own shards every recheck, the others' every 4 rechecks
    let before: Vec<u64> = engines.iter().map(|e| e.claim_looks()).collect();
    let window = Duration::from_secs(2);
    tokio::time::sleep(window).await;
    let rechecks = window.as_millis() as u64 / RECHECK_MS;
    let mut total = 0;
    for (i, e) in engines.iter().enumerate() {
        let looks = e.claim_looks() - before[i];
        total += looks;
        let mine = four[i].len() as u64;
        let bound = mine * rechecks + (u64::from(SHARDS) - mine) * rechecks / 4;
        println!(
            "replica {i}: {mine} shards, {looks} looks in {rechecks} rechecks (bound {bound})"
        );
        assert!(
            looks <= bound + bound / 4 + u64::from(SHARDS),
            "replica {i}: {looks} looks, bound {bound}"
        );
        assert!(
            looks >= mine * rechecks / 4,
            "replica {i} neglects its own shards: {looks}"
        );
    }
    let every = u64::from(SHARDS) * rechecks * 3;
    println!("deployment: {total} looks, every replica at every shard: {every}");
    assert!(total < every * 3 / 4, "{total} looks of {every}");

    // due work in the ghost's shards is claimed by the others, a recheck
    // or so after it falls due
    let mut gids = Vec::new();
    for &shard in &ghost_shards {
        let g = loop {
            let g = gid("ghosted");
            if store.keys().shard_of(&g) == shard {
                break g;
            }
        };
        stored_saga(engines[0], &g, &b, engines[0].now_ms() + 200).await;
        gids.push(g);
    }
    for g in &gids {
        // due + a recheck, or the 4-recheck cap, and the saga's own calls
        wait_status_at(&apps[1], g, "succeed", 3).await;
        assert_eq!(b.paths_for(g), ["a1", "a2"], "{g}");
    }

    // the ghost dies: its shards go to the others, whose own shares stay
    beating.abort();
    until("every replica sees three", || sees(&engines, 3)).await;
    let three = shares(&engines, &[]);
    for i in 0..3 {
        assert!(
            contains_all(&three[i], &four[i]),
            "replica {i}: {:?} -> {:?}",
            four[i],
            three[i]
        );
    }

    // a replica joins: it takes shards, nobody else gains any
    let joiner = replica(&redis, &p).await;
    let with_joiner: Vec<&Arc<Engine>> = engines.iter().copied().chain([&joiner.engine]).collect();
    until("every replica sees the joiner", || sees(&with_joiner, 4)).await;
    let joined = shares(&with_joiner, &[]);
    for i in 0..3 {
        assert!(
            contains_all(&three[i], &joined[i]),
            "replica {i}: {:?} -> {:?}",
            three[i],
            joined[i]
        );
    }

    // the joiner leaves on a graceful stop, at once (not by lapsing): its
    // shards go back
    let joiner_id = joiner.engine.owner.clone();
    joiner.stop().await;
    let left: Option<f64> = redis::cmd("ZSCORE")
        .arg(store.keys().replicas())
        .arg(&joiner_id)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(left, None, "a graceful stop leaves the replica set");
    until("every replica sees the joiner leave", || sees(&engines, 3)).await;
    assert_eq!(shares(&engines, &[]), three);

    // and the work still flows, through any replica
    let g = gid("after");
    let (code, _) = apps[2]
        .post("submit", &crate::support::saga_body(&g, &b))
        .await;
    assert_eq!(code, 200);
    wait_status_at(&apps[0], &g, "succeed", 5).await;
}
