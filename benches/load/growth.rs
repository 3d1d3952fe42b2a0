//! How cost grows with the work: dtx CPU per saga as its step count grows,
//! dtx and Redis memory per transaction in flight, and Redis memory and
//! read latency with many finished transactions retained.
//!
//! ```text
//! cargo bench --bench load -- growth [--conc 10] [--secs 8] [--count 1000000]
//! cargo bench --bench load -- growth-memory [--count 1000000]   (without the step counts)
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::RedisServer;

use super::{
    bench_store, check_calls, check_statuses, closed, start_dtx, start_redis, store_saga,
    workload_on, Branches, Kind, Opts, Waiters,
};

/// dtx CPU per saga of 2, 10, 100 and 1,000 steps (each step one real
/// branch call), closed loop at the first `--conc`.
pub(crate) async fn steps(o: &Opts) {
    let conc = o.conc.first().copied().unwrap_or(10);
    let one = Opts {
        conc: vec![conc],
        ..o.clone()
    };
    let mut rows = Vec::new();
    for n in [2usize, 10, 100, 1000] {
        let m = workload_on(&format!("steps{n}"), Kind::Steps(n), 1, &one, None).await;
        rows.push((n, m[0]));
    }
    println!();
    println!("| steps | sagas/s | steps/s | dtx CPU µs per saga | dtx CPU µs per step |");
    println!("|---|---|---|---|---|");
    for (n, m) in rows {
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.1} |",
            m.tps,
            m.tps * n as f64,
            m.cpu,
            m.cpu / n as f64
        );
    }
}

/// Resident memory of `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// dtx's resident memory and Redis's memory per transaction in flight, at
/// 100, 1,000 and 10,000 in flight: 2-step sagas whose first branch call
/// the branch service holds until all are submitted. Calls beyond
/// `branch.max_in_flight` (512, half of them per host) wait in dtx for a
/// permit, as they would in production.
pub(crate) async fn in_flight() {
    println!();
    println!("| in flight | dtx RSS growth | dtx bytes per transaction | Redis bytes per transaction | drained in |");
    println!("|---|---|---|---|---|");
    for n in [100u64, 1_000, 10_000] {
        let redis = start_redis(false);
        let waiters = Waiters::default();
        let notify = waiters.listen();
        let b = Branches::start(notify, None);
        // a held call must not time out and be retried while it is measured
        let (dtx, base) = start_dtx(&redis, &[("DTX_TRANS_REQUEST_TIMEOUT_MS", "60000")]);
        let warm = [base.clone()];
        closed(Kind::W1, 8, 1.0, &warm, &b.base, &waiters, "warm").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats0 = b.stats(&reqwest::Client::new()).await;
        let rss0 = rss(dtx.pid);
        let mem0 = redis.info("memory", "used_memory");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..64u64 {
            let (http, base, b, done) = (http.clone(), base.clone(), b.base.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while i < n {
                    let body = json!({"gid": format!("held-{i}"), "trans_type": "saga",
                        "steps": [{"action": format!("{b}/hold"), "compensate": format!("{b}/c1")},
                                  {"action": format!("{b}/a2?n=1"), "compensate": format!("{b}/c2")}],
                        "payloads": ["{\"amount\":30}", "{\"amount\":30}"]});
                    let r = http.post(format!("{base}/submit")).json(&body).send().await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 64;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss1 = rss(dtx.pid);
        let mem1 = redis.info("memory", "used_memory");
        let released = Instant::now();
        http.post(b.url("release")).send().await.unwrap();
        // the branch service's counts, not its UDP signals: a burst of
        // thousands overflows the socket's buffer
        let a2_before = stats0.get("a2").copied().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut finished;
        loop {
            let stats = b.stats(&http).await;
            finished = stats.get("a2").copied().unwrap_or(0) - a2_before;
            if finished >= n || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lost = n.saturating_sub(finished);
        let drained = released.elapsed().as_secs_f64();
        let grown = rss1.saturating_sub(rss0);
        println!(
            "| {n} | {:.1} MiB | {} | {} | {drained:.2} s |",
            grown as f64 / 1_048_576.0,
            grown / n,
            mem1.saturating_sub(mem0) / n
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stats = b.stats(&http).await;
        let delta: HashMap<String, u64> = stats
            .iter()
            .map(|(k, v)| (k.clone(), v - stats0.get(k).copied().unwrap_or(0)))
            .collect();
        let acked = done.load(Ordering::Relaxed);
        let check = if acked != n || lost > 0 {
            Err(format!("{acked} of {n} acknowledged, {lost} not finished"))
        } else {
            check_calls(&delta, &[("hold", n), ("a2", n)])
                .and_then(|()| check_statuses(&redis, "held", n, "succeed"))
        };
        match check {
            Ok(()) => eprintln!("  check: {n} transactions succeed, each held call made once"),
            Err(e) => eprintln!("  CHECK FAILED: {e}"),
        }
    }
}

/// `count` finished 2-step sagas retained in Redis (stored with dtx's own
/// scripts, 100 at a time), then a dtx replica on that Redis: Redis memory
/// per saga, and the latency of `all` (first page, 10 pages deep, a filter
/// no retained saga matches) and of `query`.
pub(crate) async fn retained(count: u64) {
    let redis = start_redis(false);
    let mem0 = redis.info("memory", "used_memory");
    let store = bench_store(&redis).await;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                store_saga(&store, format!("r-{i}"), now_ms()).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let filled = started.elapsed().as_secs_f64();
    let mem = redis.info("memory", "used_memory").saturating_sub(mem0);
    println!();
    println!(
        "{count} finished sagas stored in {filled:.0} s: Redis used_memory +{:.0} MiB, {} B per saga",
        mem as f64 / 1_048_576.0,
        mem / count.max(1)
    );
    let (dtx, base) = start_dtx(&redis, &[]);
    let http = reqwest::Client::new();
    println!("| read | median ms | max ms | transactions returned |");
    println!("|---|---|---|---|");
    let first = format!("{base}/all?limit=100");
    timed(&http, "all, first page of 100", 20, || first.clone()).await;
    // ten pages deep: follow the cursor
    let mut url = first.clone();
    for _ in 0..10 {
        let page: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        let pos = page["next_position"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        url = format!("{first}&position={pos}");
    }
    timed(&http, "all, 11th page of 100", 20, || url.clone()).await;
    let failed = format!("{base}/all?limit=100&status=failed");
    timed(&http, "all?status=failed (none match)", 20, || {
        failed.clone()
    })
    .await;
    let mut i = 0u64;
    timed(&http, "query of one gid", 100, || {
        i = (i + 7919) % count.max(1);
        format!("{base}/query?gid=r-{i}")
    })
    .await;
    drop(dtx);
    check_retained(&redis, count);
}

/// Times `n` GETs of the URLs `url` gives; prints a row.
async fn timed(http: &reqwest::Client, what: &str, n: usize, mut url: impl FnMut() -> String) {
    let mut took = Vec::new();
    let mut returned = 0;
    for _ in 0..n {
        let u = url();
        let t0 = Instant::now();
        let reply: Value = http.get(&u).send().await.unwrap().json().await.unwrap();
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
        returned = match &reply["transactions"] {
            Value::Array(a) => a.len(),
            _ => usize::from(reply["transaction"].is_object()),
        };
    }
    took.sort_by(f64::total_cmp);
    println!(
        "| {what} | {:.2} | {:.2} | {returned} |",
        took[took.len() / 2],
        took[took.len() - 1]
    );
}

/// Every retained saga is stored and `succeed`.
fn check_retained(redis: &RedisServer, count: u64) {
    let mut c = redis.conn();
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    // two hashes per saga, plus the shards' index sets
    match check_statuses(redis, "r", count, "succeed") {
        Ok(()) => eprintln!("  check: {count} sagas retained and succeed ({dbsize} keys)"),
        Err(e) => eprintln!("  CHECK FAILED: {e}"),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
