//! The start of the fault suite (issue #14): transfers between accounts on
//! two replicas while the bank injects branch faults (500s, answers lost
//! after the effect, answers slower than the request timeout) and refuses
//! what an account cannot pay. Afterwards: every acknowledged transfer is
//! final, a succeeded one moved its money once, a failed one moved none,
//! and only because the bank refused it (every injected fault is one to
//! retry), an unacknowledged one either finished like the others or left
//! no effect, and the money is all there.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{gid, prefix, test_settings, Bank, BankFaults, RedisServer, TestApp};

const ACCOUNTS: usize = 20;
const EACH: i64 = 100;

/// The final status of `gid` ("" when Redis holds no such transaction).
async fn final_status(app: &TestApp, g: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let status = app.status(g).await;
        if status.is_empty() || status == "succeed" || status == "failed" {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{g} still {status} after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_under_branch_faults_move_money_once_or_not_at_all() {
    let redis = RedisServer::start();
    let p = prefix();
    let mut settings = test_settings(&redis.url(), &p);
    settings.trans.request_timeout_ms = 300;
    let replicas = [
        Arc::new(TestApp::spawn_with(settings.clone()).await),
        Arc::new(TestApp::spawn_with(settings).await),
    ];
    let faults = BankFaults {
        error: 10,
        lost_answer: 10,
        slow: 5,
        slow_ms: 600,
    };
    let seed = fastrand::u64(..);
    eprintln!("bank seed {seed}");
    let bank = Bank::start(ACCOUNTS, EACH, faults, seed).await;
    let sent: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let end = Instant::now() + Duration::from_secs(3);
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (app, bank, sent) = (replicas[w % 2].clone(), bank.clone(), sent.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(w as u64);
                let mut i = 0;
                while Instant::now() < end {
                    let g = gid(&format!("xfer{w}-{i}"));
                    let from = rng.usize(0..ACCOUNTS);
                    let to = (from + rng.usize(1..ACCOUNTS)) % ACCOUNTS;
                    let body = bank.transfer(&g, from, to, rng.i64(1..60));
                    let (status, _) = app.post("submit", &body).await;
                    sent.lock().unwrap().push((g, status == 200));
                    i += 1;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let (mut succeeded, mut failed) = (0, 0);
    for (g, acked) in &sent {
        let status = final_status(&replicas[0], g, 30).await;
        let applied = bank.applied(g);
        match status.as_str() {
            "succeed" => {
                succeeded += 1;
                assert_eq!(applied, ["01", "02"], "{g} succeeded: both moved once");
            }
            "failed" => {
                failed += 1;
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
    let injected = bank.injected();
    eprintln!(
        "transfers: sent {}, acknowledged {}, succeeded {succeeded}, failed {failed}, faults injected {injected:?}",
        sent.len(),
        sent.iter().filter(|(_, a)| *a).count()
    );
    assert_eq!(
        bank.total(),
        ACCOUNTS as i64 * EACH,
        "money was made or lost"
    );
    assert!(succeeded > 0 && failed > 0, "both outcomes are exercised");
    for kind in ["error", "lost_answer", "slow"] {
        assert!(
            injected.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} injected"
        );
    }
}
