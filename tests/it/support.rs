//! What the integration tests share beyond the test kit: starting this
//! build's dtx binary.

pub use testkit::*;

/// Starts this build's dtx binary on `redis` under key prefix `prefix`,
/// with the test timings and then `env` on top.
pub fn start_dtx(redis: &RedisServer, prefix: &str, env: &[(&str, &str)]) -> DtxProcess {
    start_dtx_on(&redis.url(), prefix, env)
}

/// The same on the Redis at `redis_url` (a proxy in front of one, say).
pub fn start_dtx_on(redis_url: &str, prefix: &str, env: &[(&str, &str)]) -> DtxProcess {
    DtxProcess::start(env!("CARGO_BIN_EXE_dtx").as_ref(), redis_url, prefix, env)
}
