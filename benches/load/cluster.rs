//! Scaling on Redis Cluster: W1 on clusters of 1, 2, 3... masters, each
//! master pinned to a CPU, with Redis CPU per transaction per master; the
//! claim loop's idle cost; and how evenly `redis.shards` hash tags spread
//! over 10 to 100 masters (asked of Redis itself, `CLUSTER KEYSLOT`).
//!
//! ```text
//! cargo bench --bench load -- cluster [--masters 1,2,3] [--shards 16] [--conc 100] [--secs 8]
//! cargo bench --bench load -- spread
//! ```

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use testkit::{cpu_us, RedisCluster, RedisServer};

use super::{check_calls, closed, start_dtx_at, Branches, Cpu, Kind, Opts, Waiters};

/// Names of the masters in the CPU columns (at most this many masters).
const MASTERS: [&str; 8] = [
    "master1", "master2", "master3", "master4", "master5", "master6", "master7", "master8",
];

/// Pins `pid` to CPU `cpu` (`taskset`); false where that is not allowed.
fn pin(pid: u32, cpu: usize) -> bool {
    Command::new("taskset")
        .args(["-pc", &cpu.to_string(), &pid.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// How many of the run's transactions (gids starting with `tag`) each
/// master holds, and how many are not in `status`.
fn per_master(masters: &[&RedisServer], tag: &str, status: &str) -> (Vec<u64>, u64) {
    let mut counts = Vec::new();
    let mut wrong = 0;
    for m in masters {
        let mut c = m.conn();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("dtx:*:t:{tag}-*"))
            .query(&mut c)
            .unwrap();
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("HGET").arg(k).arg("status");
        }
        let statuses: Vec<String> = if keys.is_empty() {
            Vec::new()
        } else {
            pipe.query(&mut c).unwrap()
        };
        wrong += statuses.iter().filter(|s| *s != status).count() as u64;
        counts.push(keys.len() as u64);
    }
    (counts, wrong)
}

/// `dtx_claim_looks_total` of the replica at `base` (`.../api/dtmsvr`).
async fn looks(http: &reqwest::Client, base: &str) -> u64 {
    let metrics = http
        .get(format!("{}/metrics", base.trim_end_matches("/dtmsvr")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("dtx_claim_looks_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// W1 on each cluster size of `--masters`, one dtx replica.
pub(super) async fn scaling(o: &Opts) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let conc = o.conc.iter().copied().max().unwrap_or(100);
    let http = reqwest::Client::new();
    println!(
        "| masters | shards | tx/s | p50 ms | p99 ms | dtx µs/tx | Redis µs/tx by master | Redis µs/tx, all | branches µs/tx | loadgen µs/tx | transactions by master | idle: looks/s, Redis µs/s, dtx µs/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &m in &o.masters {
        let m = m.clamp(1, MASTERS.len());
        let cluster = RedisCluster::start_with(m, 0);
        let masters = cluster.masters();
        let pinned = masters
            .iter()
            .enumerate()
            .all(|(i, n)| pin(n.pid(), i % cpus));
        let waiters = Waiters::default();
        let notify = waiters.listen();
        let b = Branches::start(notify, None);
        let shards = o.shards.to_string();
        let (dtx, base) = start_dtx_at(&cluster.url(), &[("DTX_REDIS_SHARDS", shards.as_str())]);
        let targets = [base.clone()];
        closed(
            Kind::W1,
            conc.min(8),
            0.5,
            &targets,
            &b.base,
            &waiters,
            &format!("cwarm{m}"),
        )
        .await;
        let stats0 = b.stats(&http).await;
        let mut procs: Vec<(&'static str, u32)> = masters
            .iter()
            .enumerate()
            .map(|(i, n)| (MASTERS[i], n.pid()))
            .collect();
        procs.extend([
            ("dtx", dtx.pid),
            (b.proc.name, b.proc.pid),
            ("loadgen", std::process::id()),
        ]);
        let cpu = Cpu::take(&procs);
        let tag = format!("cl{m}s{}", o.shards);
        let mut run = closed(Kind::W1, conc, o.secs, &targets, &b.base, &waiters, &tag).await;
        let cpu: HashMap<&str, f64> = cpu.per_tx(run.done).into_iter().collect();
        tokio::time::sleep(Duration::from_millis(300)).await;

        // idle: nothing submitted; the claim loop and housekeeping only
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_secs = 5.0;
        let looks0 = looks(&http, &base).await;
        let redis0: u64 = masters.iter().map(|n| cpu_us(n.pid())).sum();
        let dtx0 = cpu_us(dtx.pid);
        tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
        let idle_dtx = (cpu_us(dtx.pid) - dtx0) as f64 / idle_secs;
        let idle_looks = (looks(&http, &base).await - looks0) as f64 / idle_secs;
        let idle_redis =
            (masters.iter().map(|n| cpu_us(n.pid())).sum::<u64>() - redis0) as f64 / idle_secs;

        let by_master: Vec<f64> = (0..m).map(|i| cpu[MASTERS[i]]).collect();
        let (held, wrong) = per_master(&masters, &tag, "succeed");
        println!(
            "| {m} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {} | {idle_looks:.0}, {idle_redis:.0}, {idle_dtx:.0} |",
            o.shards,
            run.done as f64 / run.secs,
            run.lat.pct(0.50),
            run.lat.pct(0.99),
            cpu["dtx"],
            by_master.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(" / "),
            by_master.iter().sum::<f64>(),
            cpu[b.proc.name],
            cpu["loadgen"],
            held.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" / "),
        );
        if !pinned {
            eprintln!("  taskset refused: the masters were not pinned");
        }
        let n = run.done;
        let stats = b.stats(&http).await;
        let delta: HashMap<String, u64> = stats
            .iter()
            .map(|(k, v)| (k.clone(), v - stats0.get(k).copied().unwrap_or(0)))
            .collect();
        let check = if run.errors > 0 {
            Err(format!("{} errors", run.errors))
        } else if held.iter().sum::<u64>() != n {
            Err(format!(
                "{} stored, {n} acknowledged",
                held.iter().sum::<u64>()
            ))
        } else if wrong > 0 {
            Err(format!("{wrong} not succeed"))
        } else {
            check_calls(&delta, &[("a1", n), ("a2", n)])
        };
        match check {
            Ok(()) => eprintln!("  check: {n} transactions succeed, branch calls exact"),
            Err(e) => eprintln!("  CHECK FAILED: {e}"),
        }
    }
}

/// How evenly `S` shards' hash tags spread over `m` masters holding even
/// slot ranges: the busiest master's share over the mean, for S in 16 ..
/// 4096 and m in 1 .. 100. Slots come from `CLUSTER KEYSLOT` of a
/// one-node cluster, for the default prefix `dtx`.
pub(super) async fn spread() {
    const SLOTS: u64 = 16384;
    let cluster = RedisCluster::start_with(1, 0);
    let node = &cluster.nodes[0];
    let shard_counts = [16u32, 64, 256, 1024, 4096];
    let masters = [1u64, 2, 3, 10, 20, 50, 100];
    let mut c = node.conn();
    println!(
        "| shards | {} |",
        masters
            .iter()
            .map(|m| format!("{m} masters"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(masters.len()));
    for &s in &shard_counts {
        let mut pipe = redis::pipe();
        for shard in 0..s {
            pipe.cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(format!("dtx:{{s{shard}}}:due"));
        }
        let slots: Vec<u64> = pipe.query(&mut c).unwrap();
        let cells: Vec<String> = masters
            .iter()
            .map(|&m| {
                let mut held = vec![0u64; m as usize];
                for slot in &slots {
                    // master i holds slots [SLOTS*i/m, SLOTS*(i+1)/m)
                    held[((slot * m) / SLOTS) as usize] += 1;
                }
                let mean = f64::from(s) / m as f64;
                let max = *held.iter().max().unwrap() as f64;
                let idle = held.iter().filter(|h| **h == 0).count();
                if idle > 0 {
                    format!("{:.2} ({idle} idle)", max / mean)
                } else {
                    format!("{:.2}", max / mean)
                }
            })
            .collect();
        println!("| {s} | {} |", cells.join(" | "));
    }
}
