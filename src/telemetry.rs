//! Prometheus metrics: every name in one place, described at start, with
//! labels only from bounded sets (kind, op, outcome, script, route, shard),
//! never a gid or a URL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Transactions created, by `trans_type`.
pub const TRANS_STARTED: &str = "dtx_transactions_started_total";
/// Transactions that reached a final status, by `trans_type` and `outcome`.
pub const TRANS_FINISHED: &str = "dtx_transactions_finished_total";
/// Time from creation to final status, by `trans_type` and `outcome`.
pub const TRANS_DURATION: &str = "dtx_transaction_duration_seconds";
/// Branch calls, by `op` and `outcome`.
pub const BRANCH_CALLS: &str = "dtx_branch_calls_total";
/// Branch call latency, by `op`.
pub const BRANCH_DURATION: &str = "dtx_branch_call_duration_seconds";
/// Branch calls in flight in this replica.
pub const BRANCH_IN_FLIGHT: &str = "dtx_branch_calls_in_flight";
/// Transactions due now and not leased, by `shard`.
pub const DUE_BACKLOG: &str = "dtx_due_backlog";
/// Age of the oldest overdue transaction, by `shard` (0 when none).
pub const OLDEST_OVERDUE: &str = "dtx_oldest_overdue_seconds";
/// Lease events, by `event` (claimed, renewed, released, lost).
pub const LEASES: &str = "dtx_leases_total";
/// Redis script calls, by `script` and `outcome`.
pub const SCRIPT_CALLS: &str = "dtx_redis_script_calls_total";
/// Redis script latency, by `script`.
pub const SCRIPT_DURATION: &str = "dtx_redis_script_duration_seconds";
/// HTTP requests, by matched `route`, `method` and `status`.
pub const HTTP_REQUESTS: &str = "dtx_http_requests_total";
/// HTTP latency, by matched `route`.
pub const HTTP_DURATION: &str = "dtx_http_request_duration_seconds";
/// 1, labelled with the `version`.
pub const BUILD_INFO: &str = "dtx_build_info";
/// Transactions driven by this replica right now.
pub const ACTIVE: &str = "dtx_active_transactions";
/// Transactions set aside because no replica can decode them.
pub const SET_ASIDE: &str = "dtx_trans_set_aside_total";
/// Looks of this replica's claim loop at a shard's due set.
pub const CLAIM_LOOKS: &str = "dtx_claim_looks_total";
/// Shards this replica owns (looks at every `recheck_ms`).
pub const CLAIM_SHARDS: &str = "dtx_claim_shards";
/// Replicas alive in the deployment, as this replica last read them.
pub const REPLICAS_LIVE: &str = "dtx_replicas_live";

/// dtm's names (contract §8.4), kept for existing dashboards.
pub const DTM_SERVER_INFO: &str = "dtm_server_info";
/// dtm: API requests by `type`, `api`, `status` (ok|fail).
pub const DTM_PROCESS: &str = "dtm_server_process_total";
/// dtm: API latency by `type`, `api`.
pub const DTM_RESPONSE: &str = "dtm_server_response_duration";
/// dtm: transaction passes by `model` and `status` (ok|fail).
pub const DTM_TRANS_PROCESS: &str = "dtm_transaction_process_total";
/// dtm: branch calls by `model`, `branchtype` and `status` (ok|fail);
/// dtm's `branchid` label is left out (unbounded).
pub const DTM_BRANCH_PROCESS: &str = "dtm_branch_process_total";

const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            // fixed, valid bucket list: cannot fail
            let builder = builder
                .set_buckets(&BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // a second recorder (another library's) would keep ours unused;
            // the handle still renders what was recorded through it
            let _ = metrics::set_global_recorder(recorder);
            INSTALLED.store(true, Ordering::Release);
            describe();
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            gauge!(DTM_SERVER_INFO, "gin_version" => "none", "grpc_version" => "none").set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(TRANS_STARTED, "Transactions created");
    describe_counter!(TRANS_FINISHED, "Transactions that reached a final status");
    describe_histogram!(TRANS_DURATION, Unit::Seconds, "Creation to final status");
    describe_counter!(BRANCH_CALLS, "Branch calls by outcome");
    describe_histogram!(BRANCH_DURATION, Unit::Seconds, "Branch call latency");
    describe_gauge!(BRANCH_IN_FLIGHT, "Branch calls in flight");
    describe_gauge!(DUE_BACKLOG, "Transactions due now and not leased");
    describe_gauge!(
        OLDEST_OVERDUE,
        Unit::Seconds,
        "Age of the oldest overdue transaction"
    );
    describe_counter!(LEASES, "Lease events");
    describe_counter!(SCRIPT_CALLS, "Redis script calls");
    describe_histogram!(SCRIPT_DURATION, Unit::Seconds, "Redis script latency");
    describe_counter!(HTTP_REQUESTS, "HTTP requests");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency");
    describe_gauge!(BUILD_INFO, "Build information");
    describe_gauge!(ACTIVE, "Transactions this replica drives now");
    describe_counter!(SET_ASIDE, "Transactions set aside as undecodable");
    describe_counter!(CLAIM_LOOKS, "Looks of the claim loop at a shard");
    describe_gauge!(CLAIM_SHARDS, "Shards this replica owns");
    describe_gauge!(REPLICAS_LIVE, "Replicas alive in the deployment");
    describe_gauge!(DTM_SERVER_INFO, "dtm-compatible server info");
    describe_counter!(DTM_PROCESS, "dtm-compatible API request count");
    describe_histogram!(DTM_RESPONSE, Unit::Seconds, "dtm-compatible API latency");
    describe_counter!(DTM_TRANS_PROCESS, "dtm-compatible transaction pass count");
    describe_counter!(DTM_BRANCH_PROCESS, "dtm-compatible branch call count");
}

/// Handles of metrics whose labels come from a fixed set, kept so a hot
/// call is an atomic add, not a registry lookup that builds its labels.
/// Filled only after [`install`]: a handle taken before it would stay a
/// no-op for good.
static INSTALLED: AtomicBool = AtomicBool::new(false);

type Labels = (&'static str, [&'static str; 3]);

static COUNTERS: LazyLock<RwLock<HashMap<Labels, metrics::Counter>>> =
    LazyLock::new(Default::default);
static HISTOGRAMS: LazyLock<RwLock<HashMap<Labels, metrics::Histogram>>> =
    LazyLock::new(Default::default);

fn cached<T: Clone>(
    cache: &RwLock<HashMap<Labels, T>>,
    key: Labels,
    make: impl FnOnce() -> T,
) -> T {
    if let Some(h) = cache.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return h.clone();
    }
    let h = make();
    if INSTALLED.load(Ordering::Acquire) {
        cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, h.clone());
    }
    h
}

fn counter_of(key: Labels, make: impl FnOnce() -> metrics::Counter) -> metrics::Counter {
    cached(&COUNTERS, key, make)
}

fn histogram_of(key: Labels, make: impl FnOnce() -> metrics::Histogram) -> metrics::Histogram {
    cached(&HISTOGRAMS, key, make)
}

/// A transaction was created.
pub fn trans_started(kind: &'static str) {
    counter_of(
        (TRANS_STARTED, [kind, "", ""]),
        || counter!(TRANS_STARTED, "trans_type" => kind),
    )
    .increment(1);
}

/// A transaction reached `outcome` (`succeed` or `failed`) after `age`.
pub fn trans_finished(kind: &'static str, outcome: &'static str, age: Duration) {
    let key = [kind, outcome, ""];
    counter_of(
        (TRANS_FINISHED, key),
        || counter!(TRANS_FINISHED, "trans_type" => kind, "outcome" => outcome),
    )
    .increment(1);
    histogram_of(
        (TRANS_DURATION, key),
        || histogram!(TRANS_DURATION, "trans_type" => kind, "outcome" => outcome),
    )
    .record(age.as_secs_f64());
}

/// A pass over a transaction ended (`ok`: finished or waiting normally).
pub fn pass_ended(kind: &'static str, ok: bool) {
    let status = if ok { "ok" } else { "fail" };
    counter_of(
        (DTM_TRANS_PROCESS, [kind, status, ""]),
        || counter!(DTM_TRANS_PROCESS, "model" => kind, "status" => status),
    )
    .increment(1);
}

/// A branch call ended with `outcome` after `took`.
pub fn branch_call(kind: &'static str, op: &'static str, outcome: &'static str, took: Duration) {
    counter_of(
        (BRANCH_CALLS, [op, outcome, ""]),
        || counter!(BRANCH_CALLS, "op" => op, "outcome" => outcome),
    )
    .increment(1);
    histogram_of(
        (BRANCH_DURATION, [op, "", ""]),
        || histogram!(BRANCH_DURATION, "op" => op),
    )
    .record(took.as_secs_f64());
    let ok = if outcome == "succeeded" { "ok" } else { "fail" };
    counter_of(
        (DTM_BRANCH_PROCESS, [kind, op, ok]),
        || counter!(DTM_BRANCH_PROCESS, "model" => kind, "branchtype" => op, "status" => ok),
    )
    .increment(1);
}

/// Branch calls in flight changed by `delta`.
pub fn in_flight(delta: f64) {
    static GAUGE: OnceLock<metrics::Gauge> = OnceLock::new();
    match GAUGE.get() {
        Some(g) => g.increment(delta),
        None => {
            let g = gauge!(BRANCH_IN_FLIGHT);
            g.increment(delta);
            // a handle taken before install would stay a no-op for good
            if INSTALLED.load(Ordering::Acquire) {
                let _ = GAUGE.set(g);
            }
        }
    }
}

/// A lease `event`: claimed, renewed, released or lost.
pub fn lease(event: &'static str, n: u64) {
    counter_of(
        (LEASES, [event, "", ""]),
        || counter!(LEASES, "event" => event),
    )
    .increment(n);
}

/// A script call ended.
pub fn script(name: &'static str, ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "error" };
    counter_of(
        (SCRIPT_CALLS, [name, outcome, ""]),
        || counter!(SCRIPT_CALLS, "script" => name, "outcome" => outcome),
    )
    .increment(1);
    histogram_of(
        (SCRIPT_DURATION, [name, "", ""]),
        || histogram!(SCRIPT_DURATION, "script" => name),
    )
    .record(took.as_secs_f64());
}

/// The due backlog of `shard` and the age of its oldest overdue entry.
pub fn backlog(shard: u32, due: u64, oldest: Duration) {
    let shard = shard.to_string();
    gauge!(DUE_BACKLOG, "shard" => shard.clone()).set(due as f64);
    gauge!(OLDEST_OVERDUE, "shard" => shard).set(oldest.as_secs_f64());
}

/// A transaction that cannot be decoded was set aside.
pub fn set_aside() {
    counter!(SET_ASIDE).increment(1);
}

/// The claim loop looked at `n` shards.
pub fn claim_looks(n: usize) {
    counter!(CLAIM_LOOKS).increment(n as u64);
}

/// This replica owns `shards` of the shards, `live` replicas are alive.
pub fn claim_share(shards: usize, live: usize) {
    gauge!(CLAIM_SHARDS).set(shards as f64);
    gauge!(REPLICAS_LIVE).set(live as f64);
}

/// Transactions driven now.
pub fn active(n: usize) {
    gauge!(ACTIVE).set(n as f64);
}

/// The handles of one route's HTTP metrics, for one method and status.
#[derive(Clone)]
struct HttpHandles {
    dtm_process: metrics::Counter,
    dtm_response: metrics::Histogram,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Routes are the router's (plus `unmatched`): a bounded set.
type HttpCache = HashMap<String, Vec<(&'static str, u16, HttpHandles)>>;

static HTTP: LazyLock<RwLock<HttpCache>> = LazyLock::new(Default::default);

/// Most (method, status) pairs kept per route; rarer ones are looked up.
const HTTP_PAIRS_PER_ROUTE: usize = 32;

fn http_handles(route: &str, method: &'static str, status: u16) -> HttpHandles {
    if let Some(pairs) = HTTP.read().unwrap_or_else(|e| e.into_inner()).get(route) {
        if let Some((_, _, h)) = pairs.iter().find(|(m, s, _)| *m == method && *s == status) {
            return h.clone();
        }
    }
    // dtm's `api` label: the last segment of the route (bounded, unlike dtm's)
    let api = route.rsplit('/').next().unwrap_or_default().to_lowercase();
    let ok = if status < 400 { "ok" } else { "fail" };
    let route_label = route.to_owned();
    let h = HttpHandles {
        dtm_process: counter!(DTM_PROCESS, "type" => "http", "api" => api.clone(), "status" => ok),
        dtm_response: histogram!(DTM_RESPONSE, "type" => "http", "api" => api),
        requests: counter!(HTTP_REQUESTS, "route" => route_label.clone(), "method" => method, "status" => status.to_string()),
        duration: histogram!(HTTP_DURATION, "route" => route_label),
    };
    if !INSTALLED.load(Ordering::Acquire) {
        return h;
    }
    let mut cache = HTTP.write().unwrap_or_else(|e| e.into_inner());
    let pairs = cache.entry(route.to_owned()).or_default();
    if pairs.len() < HTTP_PAIRS_PER_ROUTE {
        pairs.push((method, status, h.clone()));
    }
    h
}

/// An HTTP request to `route` ended with `status` after `took`.
pub fn http(route: &str, method: &'static str, status: u16, took: Duration) {
    let h = http_handles(route, method, status);
    h.dtm_process.increment(1);
    h.dtm_response.record(took.as_secs_f64());
    h.requests.increment(1);
    h.duration.record(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every dtx metric the Grafana dashboard plots is one this code
    /// records.
    #[test]
    fn the_dashboard_uses_only_real_metrics() {
        let dashboard = include_str!("../config/grafana/dashboards/dtx.json");
        let known = [
            TRANS_STARTED,
            TRANS_FINISHED,
            TRANS_DURATION,
            BRANCH_CALLS,
            BRANCH_DURATION,
            BRANCH_IN_FLIGHT,
            DUE_BACKLOG,
            OLDEST_OVERDUE,
            LEASES,
            SCRIPT_CALLS,
            SCRIPT_DURATION,
            HTTP_REQUESTS,
            HTTP_DURATION,
            BUILD_INFO,
            ACTIVE,
        ];
        let mut rest = dashboard;
        let mut seen = 0;
        while let Some(i) = rest.find("dtx_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = name.trim_end_matches("_bucket");
            assert!(
                known.contains(&base),
                "the dashboard plots unknown metric {name}"
            );
            seen += 1;
            rest = &rest[i + name.len()..];
        }
        assert!(seen >= 8);
    }
}
