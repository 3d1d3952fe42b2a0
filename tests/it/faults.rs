//! The fault suite (issue #14): a mixed load of transfers between
//! accounts (sagas, sequential and concurrent; msgs submitted, sent to a
//! topic, or left to their check-back; TCCs, some of whose tries fail)
//! while the bank injects branch faults (500s, answers lost after the
//! effect, answers slower than the request timeout) and refuses what an
//! account cannot pay; in-process replicas, then dtx processes that are
//! SIGKILLed, paused past their lease, and a Redis that is SIGKILLed.
//! Afterwards: every acknowledged transaction is final; a succeeded saga
//! moved its money once, a failed one moved none and failed only because
//! the bank refused it (every injected fault is one to retry); a msg
//! credited once exactly when its local transaction committed; a TCC
//! confirmed both branches when it succeeded, none when it failed, and no
//! try still holds money; the bank saw no confirm before every try held
//! and no cancel after a confirm; an unacknowledged transaction either
//! finished like the others or left no effect; the money is all there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    gid, prefix, start_dtx, test_settings, Bank, BankFaults, DtxProcess, Persistence, RedisServer,
    TestApp, TCC_BRANCHES,
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

/// What a transaction of the mixed load is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// A transfer saga, its branches one after the other.
    Saga,
    /// The same with `concurrent`.
    ConcurrentSaga,
    /// A msg: prepared, its local transaction run, then submitted (or
    /// aborted when the local transaction rolled back).
    Msg,
    /// The same to a topic whose one subscriber is the bank.
    TopicMsg,
    /// A msg prepared and never submitted (the initiator "died" after or
    /// before its local transaction): the check-back decides.
    CheckedBackMsg,
    /// A TCC: both tries, then submit, or abort after a failed try.
    Tcc,
}

/// The topic the bank's `in` subscribes to.
const TOPIC: &str = "credit";

/// One transaction sent: its gid, kind, and whether dtx acknowledged it
/// (the submit of a saga, the prepare of a msg or TCC).
#[derive(Debug)]
struct Sent {
    gid: String,
    kind: Kind,
    acked: bool,
}

/// Whether `route` of the replica at `base` answered 200.
async fn post(http: &reqwest::Client, base: &str, route: &str, body: &Value) -> bool {
    http.post(format!("{base}/{route}"))
        .json(body)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Subscribes the bank's `in` to [`TOPIC`] through the replica at `base`.
async fn subscribe(base: &str, bank: &Bank) {
    let url = format!(
        "{base}/subscribe?topic={TOPIC}&url={}/in&remark=faults",
        bank.base
    );
    let status = reqwest::get(url).await.unwrap().status();
    assert_eq!(status, 200, "subscribe");
}

/// Sends one transaction of `kind` as its initiating service would;
/// whether dtx acknowledged it.
async fn send(
    http: &reqwest::Client,
    bank: &Bank,
    base: &str,
    g: &str,
    kind: Kind,
    rng: &mut fastrand::Rng,
) -> bool {
    let from = rng.usize(0..ACCOUNTS);
    let to = (from + rng.usize(1..ACCOUNTS)) % ACCOUNTS;
    let amount = rng.i64(1..60);
    match kind {
        Kind::Saga | Kind::ConcurrentSaga => {
            let mut body = bank.transfer(g, from, to, amount);
            body["concurrent"] = json!(kind == Kind::ConcurrentSaga);
            post(http, base, "submit", &body).await
        }
        Kind::Msg | Kind::TopicMsg | Kind::CheckedBackMsg => {
            let topic = (kind == Kind::TopicMsg).then_some(TOPIC);
            let body = bank.msg(g, from, to, amount, topic);
            if !post(http, base, "prepare", &body).await {
                return false;
            }
            if kind == Kind::CheckedBackMsg {
                // committed, or not even run: either way no submit
                if rng.bool() {
                    bank.msg_local(g, from, amount);
                }
            } else if bank.msg_local(g, from, amount) {
                post(http, base, "submit", &body).await;
            } else {
                post(http, base, "abort", &json!({"gid": g, "trans_type": "msg"})).await;
            }
            true
        }
        Kind::Tcc => {
            let global = json!({"gid": g, "trans_type": "tcc", "timeout_to_fail": 3});
            if !post(http, base, "prepare", &global).await {
                return false;
            }
            let mut tried = true;
            for branch in TCC_BRANCHES {
                let register = bank.tcc_branch(g, branch, from, to, amount);
                tried = tried
                    && post(http, base, "registerBranch", &register).await
                    && http
                        .post(bank.tcc_try_url(g, branch))
                        .body(register["data"].as_str().unwrap().to_owned())
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
            }
            let route = if tried { "submit" } else { "abort" };
            post(http, base, route, &global).await;
            true
        }
    }
}

/// A mixed load from `workers` senders to the replicas in `bases` (read
/// afresh for each transaction, so a restarted replica is used again)
/// until `end`: of every eight, three sagas, a concurrent saga, a msg, a
/// msg to a topic, a msg left to its check-back and a TCC.
async fn mixed_load(
    bank: &Bank,
    bases: &Arc<Mutex<Vec<String>>>,
    workers: usize,
    end: Instant,
) -> Vec<Sent> {
    const MIX: [Kind; 8] = [
        Kind::Saga,
        Kind::Msg,
        Kind::Saga,
        Kind::Tcc,
        Kind::ConcurrentSaga,
        Kind::TopicMsg,
        Kind::Saga,
        Kind::CheckedBackMsg,
    ];
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (bank, bases, sent) = (bank.clone(), bases.clone(), sent.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut rng = fastrand::Rng::with_seed(w as u64);
                let mut i = 0;
                while Instant::now() < end {
                    let kind = MIX[(w + i) % MIX.len()];
                    let g = gid(&format!("{kind:?}{w}-{i}"));
                    let base = {
                        let bases = bases.lock().unwrap();
                        bases[(w + i) % bases.len()].clone()
                    };
                    let acked = send(&http, &bank, &base, &g, kind, &mut rng).await;
                    sent.lock().unwrap().push(Sent {
                        gid: g,
                        kind,
                        acked,
                    });
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(sent)
        .expect("the senders are done")
        .into_inner()
        .unwrap()
}

/// How a run's transactions ended: by kind, (succeeded, failed).
type Ended = BTreeMap<Kind, (usize, usize)>;

/// Checks what `t`, final as `status` ("" when never stored), did to the
/// bank.
fn check_one(bank: &Bank, t: &Sent, status: &str) {
    let g = &t.gid;
    let applied = bank.applied(g);
    match (t.kind, status) {
        (Kind::Saga | Kind::ConcurrentSaga, "succeed") => {
            assert_eq!(applied, ["01", "02"], "{g} succeeded: both moved once");
        }
        (Kind::Saga | Kind::ConcurrentSaga, "failed") => {
            assert!(
                applied.is_empty(),
                "{g} failed, yet {applied:?} stay applied"
            );
            assert!(
                bank.refused(g),
                "{g} failed, though the bank refused nothing"
            );
        }
        (Kind::Msg | Kind::TopicMsg | Kind::CheckedBackMsg, "succeed") => {
            assert!(
                bank.msg_committed(g),
                "{g} succeeded, its local transaction did not commit"
            );
            assert_eq!(
                applied.len(),
                1,
                "{g} succeeded: its credit once, not {applied:?}"
            );
        }
        (Kind::Msg | Kind::TopicMsg | Kind::CheckedBackMsg, "failed") => {
            assert!(
                !bank.msg_committed(g),
                "{g} failed, its local transaction committed"
            );
            assert!(applied.is_empty(), "{g} failed, yet {applied:?} credited");
        }
        (Kind::Tcc, "succeed") => {
            assert_eq!(
                bank.confirmed(g),
                TCC_BRANCHES,
                "{g} succeeded: both confirmed"
            );
        }
        (Kind::Tcc, "failed") => {
            assert!(
                bank.confirmed(g).is_empty(),
                "{g} failed, yet {:?} confirmed",
                bank.confirmed(g)
            );
        }
        (_, "") => {
            assert!(!t.acked, "{g} was acknowledged, and Redis lost it");
            assert!(
                applied.is_empty(),
                "{g} never stored, yet {applied:?} applied"
            );
            assert!(
                !bank.msg_committed(g),
                "{g} never stored, its local transaction committed"
            );
            assert!(
                bank.confirmed(g).is_empty(),
                "{g} never stored, yet confirmed"
            );
        }
        (kind, other) => panic!("{g} ({kind:?}) ended {other}"),
    }
    assert!(
        bank.held(g).is_empty(),
        "{g} ended {status:?}, tries {:?} still hold",
        bank.held(g)
    );
}

/// The checks after a run, through the replica at `base`.
async fn check_all(base: &str, bank: &Bank, sent: &[Sent]) -> Ended {
    let mut ended = Ended::new();
    let http = reqwest::Client::new();
    let started = Instant::now();
    for t in sent {
        let status = final_status(&http, base, &t.gid, 30).await;
        check_one(bank, t, &status);
        let counts = ended.entry(t.kind).or_default();
        match status.as_str() {
            "succeed" => counts.0 += 1,
            "failed" => counts.1 += 1,
            _ => {}
        }
    }
    eprintln!(
        "sent {}, acknowledged {}; (succeeded, failed) by kind {ended:?}; faults injected {:?}; all final {:?} after the load",
        sent.len(),
        sent.iter().filter(|t| t.acked).count(),
        bank.injected(),
        started.elapsed()
    );
    assert_eq!(
        bank.violations(),
        Vec::<String>::new(),
        "the bank saw what no coordinator may do"
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
    subscribe(&replicas[0].base, &bank).await;
    let sent = mixed_load(&bank, &bases, 6, Instant::now() + load_secs(3)).await;
    let ended = check_all(&replicas[0].base, &bank, &sent).await;
    for kind in [
        Kind::Saga,
        Kind::Msg,
        Kind::TopicMsg,
        Kind::CheckedBackMsg,
        Kind::Tcc,
    ] {
        let (succeeded, failed) = ended.get(&kind).copied().unwrap_or_default();
        assert!(
            succeeded > 0 && failed > 0,
            "{kind:?}: both outcomes, not {succeeded}, {failed}"
        );
    }
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
    subscribe(&replicas[0].base, &bank).await;
    let load = tokio::spawn({
        let (bank, bases) = (bank.clone(), bases.clone());
        async move { mixed_load(&bank, &bases, 6, end).await }
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
    let ended = check_all(&replicas[2].base, &bank, &sent).await;
    for kind in [Kind::Saga, Kind::Msg, Kind::TopicMsg, Kind::Tcc] {
        let succeeded = ended.get(&kind).map_or(0, |e| e.0);
        assert!(succeeded > 0, "{kind:?}: some went through");
    }
    drop(redis);
}
