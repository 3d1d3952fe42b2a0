//! The short timings every test replica runs with, in process or as a
//! process, so a test reads the same numbers whichever way it starts dtx.

/// Scheduler and retry timings of test replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// `redis.shards`
    pub shards: u32,
    /// `scheduler.lease_ms`
    pub lease_ms: u64,
    /// `scheduler.recheck_ms`
    pub recheck_ms: u64,
    /// `scheduler.drain_timeout_ms`
    pub drain_timeout_ms: u64,
    /// `retry.base_ms`
    pub retry_base_ms: u64,
    /// `retry.max_ms`
    pub retry_max_ms: u64,
    /// `trans.request_timeout_ms`
    pub request_timeout_ms: u64,
    /// `http.drain_delay_ms`: a test replica closes its port at once.
    pub drain_delay_ms: u64,
}

/// The timings of every test replica unless a test says otherwise.
pub const TEST: Timings = Timings {
    shards: 4,
    lease_ms: 1500,
    recheck_ms: 100,
    drain_timeout_ms: 3000,
    retry_base_ms: 100,
    retry_max_ms: 1000,
    request_timeout_ms: 3000,
    drain_delay_ms: 0,
};

impl Timings {
    /// As `DTX_*` variables, for a dtx process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DTX_REDIS_SHARDS", self.shards.to_string()),
            ("DTX_SCHEDULER_LEASE_MS", self.lease_ms.to_string()),
            ("DTX_SCHEDULER_RECHECK_MS", self.recheck_ms.to_string()),
            (
                "DTX_SCHEDULER_DRAIN_TIMEOUT_MS",
                self.drain_timeout_ms.to_string(),
            ),
            ("DTX_RETRY_BASE_MS", self.retry_base_ms.to_string()),
            ("DTX_RETRY_MAX_MS", self.retry_max_ms.to_string()),
            (
                "DTX_TRANS_REQUEST_TIMEOUT_MS",
                self.request_timeout_ms.to_string(),
            ),
            ("DTX_HTTP_DRAIN_DELAY_MS", self.drain_delay_ms.to_string()),
        ]
    }

    /// Sets them in `s`, for a replica in this process.
    pub fn apply(&self, s: &mut dtx::Settings) {
        s.redis.shards = self.shards;
        s.scheduler.lease_ms = self.lease_ms;
        s.scheduler.recheck_ms = self.recheck_ms;
        s.scheduler.drain_timeout_ms = self.drain_timeout_ms;
        s.retry.base_ms = self.retry_base_ms;
        s.retry.max_ms = self.retry_max_ms;
        s.trans.request_timeout_ms = self.request_timeout_ms;
        s.http.drain_delay_ms = self.drain_delay_ms;
    }
}
