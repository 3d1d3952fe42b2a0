//! The local deployment (`deploy/local.sh`) as an operator runs it: three
//! replicas behind HAProxy, scraped by Prometheus, one replica stopped with
//! SIGTERM under load. Needs `haproxy`, `prometheus` and `promtool` (Debian's
//! packages; `.ci/run` installs them).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::Value;

use crate::support::{free_port, gid, running, saga_body, Branches, Reply};

const SAGAS: usize = 2000;
/// Sagas sent over gRPC through the balancer after the HTTP ones.
const GRPC_SAGAS: usize = 20;
const TOKEN: &str = "deploy-full-token";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A deployment started by `deploy/local.sh up` in a directory of its own
/// on free ports; `down` when dropped.
struct Deployment {
    dir: PathBuf,
    env: Vec<(String, String)>,
    lb: String,
    /// The balancer's gRPC (h2) URL.
    lb_grpc: String,
    prom: String,
    replica_ports: Vec<u16>,
}

impl Deployment {
    fn up(extra: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "dtx-deploy-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let replica_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let grpc: Vec<String> = (0..3).map(|_| free_port().to_string()).collect();
        let (lb, lb_grpc, prom) = (free_port(), free_port(), free_port());
        let list = |p: &[String]| p.join(" ");
        let mut env: Vec<(String, String)> = vec![
            ("DEPLOY_DIR".into(), dir.display().to_string()),
            ("DEPLOY_DTX_BIN".into(), env!("CARGO_BIN_EXE_dtx").into()),
            ("DEPLOY_LB_PORT".into(), lb.to_string()),
            ("DEPLOY_LB_GRPC_PORT".into(), lb_grpc.to_string()),
            ("DEPLOY_STATS_PORT".into(), free_port().to_string()),
            ("DEPLOY_PROM_PORT".into(), prom.to_string()),
            ("DEPLOY_REDIS_PORT".into(), free_port().to_string()),
            (
                "DEPLOY_DTX_PORTS".into(),
                list(&replica_ports.iter().map(u16::to_string).collect::<Vec<_>>()),
            ),
            ("DEPLOY_GRPC_PORTS".into(), list(&grpc)),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let d = Self {
            dir,
            env,
            lb: format!("http://127.0.0.1:{lb}"),
            lb_grpc: format!("http://127.0.0.1:{lb_grpc}"),
            prom: format!("http://127.0.0.1:{prom}"),
            replica_ports,
        };
        let out = d.script("up");
        assert!(out.status.success(), "up failed:\n{}", d.report(&out));
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            printed.contains(&d.lb) && printed.contains(&d.prom),
            "up prints the balancer's and Prometheus's URLs:\n{printed}"
        );
        d
    }

    fn script(&self, verb: &str) -> Output {
        Command::new("bash")
            .arg(repo().join("deploy/local.sh"))
            .arg(verb)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("bash runs deploy/local.sh")
    }

    fn report(&self, out: &Output) -> String {
        let mut r = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for name in ["dtx1", "dtx2", "dtx3", "haproxy", "prometheus"] {
            let log = self.log(name);
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            r += &format!("--- {name} ---\n");
            for l in tail.iter().rev() {
                r += l;
                r += "\n";
            }
        }
        r
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("logs/{name}.log"))).unwrap_or_default()
    }

    fn pid(&self, name: &str) -> u32 {
        std::fs::read_to_string(self.dir.join(format!("pids/{name}.pid")))
            .expect("a PID file")
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a PID file starts with the PID")
    }

    /// The result of an instant PromQL query (`data.result`).
    async fn query(&self, http: &reqwest::Client, q: &str) -> Vec<Value> {
        let url =
            reqwest::Url::parse_with_params(&format!("{}/api/v1/query", self.prom), [("query", q)])
                .unwrap();
        let v: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single number an aggregating query returns, if any.
    async fn number(&self, http: &reqwest::Client, q: &str) -> Option<f64> {
        let r = self.query(http, q).await;
        r.first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let out = self.script("down");
        if std::thread::panicking() {
            eprintln!("{}", self.report(&out));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a rule of Prometheus's `/api/v1/rules` was evaluated, without
/// error (a rule never evaluated has the zero time).
fn evaluated(rule: &Value) -> bool {
    rule["health"] == "ok"
        && !rule["lastEvaluation"]
            .as_str()
            .unwrap_or("0001")
            .starts_with("0001")
}

/// Polls `probe` every 250 ms for up to `secs`; the last value it saw.
async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    secs: u64,
    mut probe: impl FnMut() -> F,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = probe().await;
        if ok(&v) || Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_through_the_balancer_survive_a_replica_stop_and_prometheus_counts_them() {
    let b = Branches::start().await;
    let d = Deployment::up(&[
        // a stopped replica's calls still in flight after half a second are
        // abandoned and their leases handed back
        ("DTX_SCHEDULER_DRAIN_TIMEOUT_MS", "500"),
        ("DTX_SCHEDULER_RECHECK_MS", "200"),
        ("DTX_TRANS_REQUEST_TIMEOUT_MS", "10000"),
        ("DTX_LOG_LEVEL", "info"),
        // access control on: the balancer's checks use the open /readyz,
        // Prometheus scrapes with the read-only token local.sh hands it
        ("DTX_AUTH_TOKENS", TOKEN),
        ("DTX_AUTH_READ_TOKENS", "deploy-read-token"),
    ]);
    let http = reqwest::Client::new();
    let stopped = d.pid("dtx2");

    // 2,000 sagas through the balancer, 32 at a time; once 800 are in, the
    // next 30 first actions take 5 s, and dtx2 gets SIGTERM while it is in
    // some of them (3 s of drain delay + 0.5 s of drain is shorter)
    let gids: Vec<String> = (0..SAGAS).map(|i| gid(&format!("lb{i}"))).collect();
    let mut results = Vec::with_capacity(SAGAS);
    {
        let mut submits = stream::iter(gids.iter().cloned())
            .map(|g| {
                let (http, url, body) = (
                    http.clone(),
                    format!("{}/api/dtmsvr/submit", d.lb),
                    saga_body(&g, &b),
                );
                async move {
                    let r = http.post(url).bearer_auth(TOKEN).json(&body).send().await;
                    match r {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body = r.text().await.unwrap_or_default();
                            (g, status, body)
                        }
                        Err(e) => (g, 0, e.to_string()),
                    }
                }
            })
            .buffer_unordered(32);
        while let Some(r) = submits.next().await {
            results.push(r);
            let n = results.len();
            if n == 800 {
                b.script("a1", &vec![Reply::Slow(5000); 30]);
            }
            if n == 900 {
                let _ = Command::new("kill")
                    .args(["-TERM", &stopped.to_string()])
                    .status();
            }
        }
    }
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, status, body)| *status != 200 || !body.contains("SUCCESS"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {SAGAS} submits failed through the balancer, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    // dtx2 drains and exits by itself, handing back the leases of the calls
    // that outlast its drain
    let exited = eventually(20, || async { running(stopped) }, |r| !r).await;
    assert!(!exited, "dtx2 still runs 20 s after SIGTERM");
    assert!(
        d.log("dtx2").contains("handing leases back"),
        "dtx2 handed leases back:\n{}",
        d.log("dtx2")
    );

    // HAProxy took dtx2 out on its readiness (503), not on a closed port
    let lb_log = d.log("haproxy");
    let first_down = lb_log.lines().find(|l| l.contains("dtx_http/dtx2 is DOWN"));
    assert!(
        first_down.is_some_and(|l| l.contains("code: 503")),
        "dtx2 left the pool when /readyz turned 503: {first_down:?}"
    );

    // every saga succeeds, through the balancer's remaining replicas
    let mut pending: HashSet<String> = gids.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() && Instant::now() < deadline {
        let batch: Vec<String> = pending.iter().take(200).cloned().collect();
        let statuses: Vec<(String, String)> = stream::iter(batch)
            .map(|g| {
                let (http, url) = (http.clone(), format!("{}/api/dtmsvr/query?gid={g}", d.lb));
                async move {
                    let v: Value = match http.get(url).bearer_auth(TOKEN).send().await {
                        Ok(r) => r.json().await.unwrap_or_default(),
                        Err(_) => Value::Null,
                    };
                    (
                        g,
                        v["transaction"]["status"].as_str().unwrap_or("").to_owned(),
                    )
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (g, s) in statuses {
            assert!(s != "failed", "{g} failed");
            if s == "succeed" {
                pending.remove(&g);
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        pending.is_empty(),
        "{} sagas did not succeed within 60 s",
        pending.len()
    );

    // the sagas dtx2 gave back were resumed by another replica: their first
    // action ran twice (the abandoned call and the resumed one), the second once
    // the calls grouped by gid once (b.paths_for copies every call each time)
    let mut paths: HashMap<String, Vec<String>> = HashMap::new();
    for c in b.calls() {
        if let Some(g) = c.query.get("gid") {
            paths.entry(g.clone()).or_default().push(c.path);
        }
    }
    let paths_of = |g: &str| paths.get(g).cloned().unwrap_or_default();
    let resumed: Vec<&String> = gids
        .iter()
        .filter(|g| paths_of(g).iter().filter(|p| *p == "a1").count() == 2)
        .collect();
    assert!(!resumed.is_empty(), "no saga was handed back and resumed");
    for g in &resumed {
        assert_eq!(paths_of(g), ["a1", "a1", "a2"], "{g}");
    }
    for g in &gids {
        let paths = paths_of(g);
        assert_eq!(
            paths.iter().filter(|p| *p == "a2").count(),
            1,
            "{g}: {paths:?}"
        );
        assert!(!paths.iter().any(|p| p.starts_with('c')), "{g}: {paths:?}");
    }

    // Prometheus counted each saga once over the three replicas. A replica
    // that is gone has no current sample (its series went stale when its
    // scrapes failed), so the count takes each series' last sample
    let finished = "sum(last_over_time(dtx_transactions_finished_total[10m]))";
    let total = eventually(
        30,
        || d.number(&http, finished),
        |v| *v == Some(SAGAS as f64),
    )
    .await;
    assert_eq!(total, Some(SAGAS as f64), "{finished}");
    let dtx2 = format!("127.0.0.1:{}", d.replica_ports[1]);
    let live = d
        .number(&http, "sum(dtx_transactions_finished_total)")
        .await
        .unwrap_or(0.0);
    let of_dtx2 = d
        .number(
            &http,
            &format!(
                "sum(last_over_time(dtx_transactions_finished_total{{instance=\"{dtx2}\"}}[10m]))"
            ),
        )
        .await
        .unwrap_or(0.0);
    assert!(of_dtx2 > 0.0, "dtx2 finished sagas before it stopped");
    assert_eq!(
        live + of_dtx2,
        SAGAS as f64,
        "the live replicas' count and dtx2's last one"
    );
    let claimed = d
        .number(&http, "sum(dtx_leases_total{event=\"claimed\"})")
        .await
        .unwrap_or(0.0);
    assert!(
        claimed >= resumed.len() as f64,
        "claims {claimed}, resumed {}",
        resumed.len()
    );

    eprintln!(
        "deployment: {SAGAS} sagas, dtx2 finished {of_dtx2} before it stopped, {} handed back and resumed",
        resumed.len()
    );

    // every query of the Grafana dashboard returns data
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("config/grafana/dashboards/dtx.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for e in &exprs {
        let r = d.query(&http, e).await;
        assert!(!r.is_empty(), "the dashboard's {e} returns no data");
    }

    // the alerting rules loaded and evaluate; dtx2 is seen down
    let rules = eventually(
        20,
        || async {
            let v: Value = http
                .get(format!("{}/api/v1/rules", d.prom))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["data"]["groups"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect::<Vec<Value>>()
        },
        |rules| rules.len() == 4 && rules.iter().all(evaluated),
    )
    .await;
    let names: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "DtxReplicaDown",
            "DtxBacklogGrowing",
            "DtxOldestOverdue",
            "DtxBranchErrorRate"
        ]
    );
    assert!(
        rules.iter().all(evaluated),
        "every rule evaluated without error: {rules:?}"
    );
    let down = eventually(
        20,
        || d.query(&http, "ALERTS{alertname=\"DtxReplicaDown\"}"),
        |r| !r.is_empty(),
    )
    .await;
    let instances: Vec<&str> = down
        .iter()
        .filter_map(|a| a["metric"]["instance"].as_str())
        .collect();
    assert_eq!(instances, [dtx2.as_str()], "only dtx2 is down: {down:?}");

    // gRPC goes through the balancer's h2 frontend to the live replicas,
    // with the token as metadata
    let channel = tonic::transport::Channel::from_shared(d.lb_grpc.clone())
        .unwrap()
        .connect()
        .await
        .expect("the balancer's gRPC port answers");
    let mut client = dtx::grpc::pb::dtm_client::DtmClient::new(channel);
    for i in 0..GRPC_SAGAS {
        let g = gid(&format!("lb-grpc{i}"));
        let body = saga_body(&g, &b);
        let mut req = tonic::Request::new(dtx::grpc::pb::DtmRequest {
            gid: g.clone(),
            trans_type: "saga".into(),
            trans_options: Some(dtx::grpc::pb::DtmTransOptions {
                wait_result: true,
                ..Default::default()
            }),
            steps: body["steps"].to_string(),
            bin_payloads: vec![b"{}".to_vec(), b"{}".to_vec()],
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        client
            .submit(req)
            .await
            .unwrap_or_else(|e| panic!("gRPC saga {i} through the balancer: {e:?}"));
        assert_eq!(b.paths_for(&g), ["a1", "a2"], "{g}");
    }
    let unauthorized = client
        .submit(dtx::grpc::pb::DtmRequest {
            gid: gid("lb-grpc-no-token"),
            trans_type: "saga".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        unauthorized.code(),
        tonic::Code::Unauthenticated,
        "the replica's answer comes back through the balancer"
    );

    // down stops everything up started, and status says so
    let pids: Vec<u32> = ["dtx1", "dtx3", "haproxy", "prometheus", "redis"]
        .iter()
        .map(|n| d.pid(n))
        .collect();
    let out = d.script("down");
    assert!(out.status.success(), "{}", d.report(&out));
    for pid in pids {
        assert!(!running(pid), "{pid} still runs after down");
    }
    let status = d.script("status");
    assert_eq!(status.status.code(), Some(3), "status after down");
}

/// The alerting rules parse, and their unit tests (each alert fires on what
/// should raise it, not on its near miss) pass.
#[test]
fn the_alerting_rules_pass_their_unit_tests() {
    let dir = repo().join("config/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian's prometheus package) is on PATH");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `docker-compose.yml` parses (Debian's docker-compose needs no engine for
/// that), and every file of the repository it mounts exists.
#[test]
fn the_compose_file_parses_and_mounts_files_that_exist() {
    let out = Command::new("docker-compose")
        .args(["--profile", "observability", "config", "-q"])
        .current_dir(repo())
        .output()
        .expect("docker-compose (Debian's package) is on PATH");
    assert!(
        out.status.success(),
        "docker-compose config:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compose = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let mounted: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert!(mounted.len() >= 6, "{mounted:?}");
    for path in mounted {
        assert!(
            repo().join(path).exists(),
            "docker-compose.yml mounts ./{path}, which is missing"
        );
    }
}
