//! The start of the fault suite (issue #14): transfers between accounts
//! while the bank injects branch faults (500s, answers lost after the
//! effect, answers slower than the request timeout) and refuses what an
//! account cannot pay; in-process replicas, then dtx processes that are
//! SIGKILLed, paused past their lease, and a Redis that is SIGKILLed.
//! Afterwards: every acknowledged transfer is final, a succeeded one moved
//! its money once, a failed one moved none and failed only because the
//! bank refused it (every injected fault is one to retry), an
//! unacknowledged one either finished like the others or left no effect,
//! and the money is all there.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    gid, prefix, start_dtx, test_settings, Bank, BankFaults, DtxProcess, Persistence, RedisServer,
    TestApp,
};

const ACCOUNTS: usize = 20;
const EACH: i64 = 100;

/// How long a test's load runs: `short` seconds, or `DTX_FAULT_SECS` (the
/// long form: `DTX_FAULT_SECS=600 cargo test --test it -- faults`).
fn load_secs(short: u64) -> Duration {
    let secs = std::env::var("DTX_FAULT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(short);
    Duration::from_secs(secs)
}

/// The final status of `gid` through the replica at `base`
/// (`.../api/dtmsvr`); "" when Redis holds no such transaction. A replica
/// that cannot answer now (503, say) is asked again.
async fn final_status(http: &reqwest::Client, base: &str, g: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::from("unreachable");
    loop {
        let reply = http.get(format!("{base}/query?gid={g}")).send().await;
        if let Ok(r) = reply {
            if r.status() == 200 {
                let v: Value = r.json().await.unwrap_or_default();
                let status = v["transaction"]["status"].as_str().unwrap_or_default();
                if v["transaction"].is_null() || status == "succeed" || status == "failed" {
                    return status.to_owned();
                }
                last = status.to_owned();
            }
        }
        assert!(Instant::now() < deadline, "{g} still {last} after {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Transfers from `workers` submitters to the replicas in `bases` (read
/// afresh for each submit, so a restarted replica is used again) until
/// `end`; every gid sent, with whether it was acknowledged.
async fn transfers(
    bank: &Bank,
    bases: &Arc<Mutex<Vec<String>>>,
    workers: usize,
    end: Instant,
) -> Vec<(String, bool)> {
    let sent: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (bank, bases, sent) = (bank.clone(), bases.clone(), sent.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut rng = fastrand::Rng::with_seed(w as u64);
                let mut i = 0;
                while Instant::now() < end {
                    let g = gid(&format!("xfer{w}-{i}"));
                    let from = rng.usize(0..ACCOUNTS);
                    let to = (from + rng.usize(1..ACCOUNTS)) % ACCOUNTS;
                    let body = bank.transfer(&g, from, to, rng.i64(1..60));
                    let base = {
                        let bases = bases.lock().unwrap();
                        bases[(w + i) % bases.len()].clone()
                    };
                    let acked = http
                        .post(format!("{base}/submit"))
                        .json(&body)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    sent.lock().unwrap().push((g, acked));
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(sent)
        .expect("the submitters are done")
        .into_inner()
        .unwrap()
}

/// How a run's transfers ended.
struct Ended {
    succeeded: usize,
    failed: usize,
}

/// The checks after a run, through the replica at `base`.
async fn check_transfers(base: &str, bank: &Bank, sent: &[(String, bool)]) -> Ended {
    let mut ended = Ended {
        succeeded: 0,
        failed: 0,
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    for (g, acked) in sent {
        let status = final_status(&http, base, g, 30).await;
        let applied = bank.applied(g);
        match status.as_str() {
            "succeed" => {
                ended.succeeded += 1;
                assert_eq!(applied, ["01", "02"], "{g} succeeded: both moved once");
            }
            "failed" => {
                ended.failed += 1;
                assert!(
                    applied.is_empty(),
                    "{g} failed, yet {applied:?} stay applied"
                );
                assert!(
                    bank.refused(g),
                    "{g} failed, though the bank refused nothing"
                );
            }
            _ => {
                assert!(!acked, "{g} was acknowledged, and Redis lost it");
                assert!(
                    applied.is_empty(),
                    "{g} never stored, yet {applied:?} applied"
                );
            }
        }
    }
    eprintln!(
        "transfers: sent {}, acknowledged {}, succeeded {}, failed {}, faults injected {:?}; all final {:?} after the load",
        sent.len(),
        sent.iter().filter(|(_, a)| *a).count(),
        ended.succeeded,
        ended.failed,
        bank.injected(),
        started.elapsed()
    );
    assert_eq!(
        bank.total(),
        ACCOUNTS as i64 * EACH,
        "money was made or lost"
    );
    ended
}

async fn bank(faults: BankFaults) -> Bank {
    let seed = fastrand::u64(..);
    eprintln!("bank seed {seed}");
    Bank::start(ACCOUNTS, EACH, faults, seed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_under_branch_faults_move_money_once_or_not_at_all() {
    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.trans.request_timeout_ms = 300;
    let replicas = [
        TestApp::spawn_with(settings.clone()).await,
        TestApp::spawn_with(settings).await,
    ];
    let bank = bank(BankFaults {
        error: 10,
        lost_answer: 10,
        slow: 5,
        slow_ms: 600,
    })
    .await;
    let bases = Arc::new(Mutex::new(
        replicas.iter().map(|r| r.base.clone()).collect(),
    ));
    let sent = transfers(&bank, &bases, 6, Instant::now() + load_secs(3)).await;
    let ended = check_transfers(&replicas[0].base, &bank, &sent).await;
    assert!(ended.succeeded > 0 && ended.failed > 0, "both outcomes");
    let injected = bank.injected();
    for kind in ["error", "lost_answer", "slow"] {
        assert!(
            injected.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} injected"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_through_replica_kills_pauses_and_a_redis_crash() {
    let mut redis = RedisServer::start_with(Persistence::AofAlways);
    let p = prefix();
    let env = [("DTX_TRANS_REQUEST_TIMEOUT_MS", "300")];
    let mut replicas: Vec<DtxProcess> = (0..3).map(|_| start_dtx(&redis, &p, &env)).collect();
    let bank = bank(BankFaults {
        error: 5,
        lost_answer: 5,
        slow: 2,
        slow_ms: 600,
    })
    .await;
    let bases = Arc::new(Mutex::new(
        replicas.iter().map(|r| r.base.clone()).collect(),
    ));
    let end = Instant::now() + load_secs(7);
    let load = tokio::spawn({
        let (bank, bases) = (bank.clone(), bases.clone());
        async move { transfers(&bank, &bases, 6, end).await }
    });
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    let mut cycles = 0;
    // one cycle of faults takes about 5.7 s; the long form repeats it
    while Instant::now() + Duration::from_millis(5_700) <= end || cycles == 0 {
        cycles += 1;
        // a replica SIGKILLed mid-load, and started again
        pause(1_000).await;
        replicas[0].kill();
        pause(700).await;
        replicas[0] = start_dtx(&redis, &p, &env);
        bases.lock().unwrap()[0] = replicas[0].base.clone();
        // another stopped past its lease (1.5 s), then continued: it must
        // not overwrite what the others did meanwhile
        pause(500).await;
        replicas[1].signal("STOP");
        pause(2_500).await;
        replicas[1].signal("CONT");
        // Redis SIGKILLed (AOF always) and started again
        pause(500).await;
        redis = tokio::task::spawn_blocking(move || {
            redis.restart();
            redis
        })
        .await
        .unwrap();
    }
    eprintln!("fault cycles: {cycles} (replica kill, replica pause, Redis kill each)");
    let sent = load.await.unwrap();
    let ended = check_transfers(&replicas[2].base, &bank, &sent).await;
    assert!(ended.succeeded > 0, "transfers went through");
    drop(redis);
}
