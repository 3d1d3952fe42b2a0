//! Typed settings: `config/default.toml` (compiled in), then an optional
//! file, then `DTX_<SECTION>_<KEY>` environment variables; validated once
//! and handed to each component as the sub-struct it needs.

use std::path::Path;

use serde::Deserialize;

mod redis_url;
pub use redis_url::{RedisTarget, SentinelTarget};

/// The compiled-in defaults: every setting, documented.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Settings that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A key the defaults do not know.
    #[error("unknown setting {0} (see config/default.toml for every setting)")]
    Unknown(String),
    /// An environment variable of the wrong type.
    #[error("environment variable {name}={value:?} is not a valid {kind}")]
    Env {
        /// Variable name.
        name: String,
        /// Its value.
        value: String,
        /// Expected type.
        kind: &'static str,
    },
    /// A value out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// All settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// HTTP API.
    pub http: HttpSettings,
    /// gRPC API.
    pub grpc: GrpcSettings,
    /// Redis connection and layout.
    pub redis: RedisSettings,
    /// Retention and limits.
    pub store: StoreSettings,
    /// Claim loop and leases.
    pub scheduler: SchedulerSettings,
    /// Backoff.
    pub retry: RetrySettings,
    /// Transaction defaults.
    pub trans: TransSettings,
    /// Branch calls.
    pub branch: BranchSettings,
    /// Alerts.
    pub alert: AlertSettings,
    /// Access control.
    pub auth: AuthSettings,
    /// Logging.
    pub log: LogSettings,
    /// Span export.
    pub otel: OtelSettings,
}

/// `[grpc]`
#[derive(Debug, Clone, Deserialize)]
pub struct GrpcSettings {
    /// Listen port on `http.host` (0 picks a free one).
    pub port: u16,
    /// `etcd://host:port/key` to register this replica under ("" = none).
    pub register: String,
    /// The `host:port` registered ("" = worked out at start).
    pub advertise: String,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// Listen address.
    pub host: String,
    /// Listen port (0 picks a free one).
    pub port: u16,
    /// Body size limit, bytes.
    pub max_body_bytes: usize,
    /// Time between readiness turning 503 and the port closing, ms.
    pub drain_delay_ms: u64,
    /// Origins, besides dtx's own, whose pages may call the API.
    pub allowed_origins: String,
    /// Time a connection has to send a request head, also when idle, ms.
    pub header_read_timeout_ms: u64,
}

/// `[redis]`
#[derive(Clone, Deserialize)]
pub struct RedisSettings {
    /// Connection URL; may hold a password, so it is never logged whole.
    pub url: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Shard count.
    pub shards: u32,
    /// Connect timeout, ms.
    pub connect_timeout_ms: u64,
    /// Reply timeout, ms.
    pub response_timeout_ms: u64,
    /// Pooled connections for large reads, apart from the hot path's.
    pub read_pool_size: usize,
    /// Replicas that must confirm a create or submit before it is
    /// acknowledged (`WAIT`); 0: none.
    pub min_replicas_ack: u32,
    /// How long that confirmation may take, ms.
    pub ack_timeout_ms: u64,
    /// PEM file of the CAs trusted for `rediss://` servers instead of the
    /// system's roots; empty: the system's.
    pub tls_ca_file: String,
    /// PEM certificate chain dtx shows TLS servers; empty: none.
    pub tls_cert_file: String,
    /// Its private key, PEM.
    pub tls_key_file: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("shards", &self.shards)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("read_pool_size", &self.read_pool_size)
            .field("min_replicas_ack", &self.min_replicas_ack)
            .field("ack_timeout_ms", &self.ack_timeout_ms)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .finish()
    }
}

/// The URL with any password replaced by `***`.
pub fn redact_url(raw: &str) -> String {
    if let Some(cluster) = redis_url::redact_cluster_url(raw) {
        return cluster;
    }
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
pub struct StoreSettings {
    /// Retention of finished transactions, s.
    pub finished_ttl_s: u64,
    /// Longest gid, bytes.
    pub max_gid_len: usize,
}

/// `[scheduler]`
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerSettings {
    /// Lease length, ms.
    pub lease_ms: u64,
    /// Longest claim-loop sleep between looks at an own shard, and the
    /// heartbeat period, ms.
    pub recheck_ms: u64,
    /// Claim batch per shard.
    pub claim_batch: usize,
    /// Most transactions driven at once.
    pub max_active: usize,
    /// Drain deadline on SIGTERM, ms.
    pub drain_timeout_ms: u64,
}

/// `[retry]`
#[derive(Debug, Clone, Deserialize)]
pub struct RetrySettings {
    /// First delay, ms.
    pub base_ms: u64,
    /// Cap, ms.
    pub max_ms: u64,
    /// Relative jitter.
    pub jitter: f64,
}

/// `[trans]`
#[derive(Debug, Clone, Deserialize)]
pub struct TransSettings {
    /// Default prepared timeout, s.
    pub timeout_to_fail_s: i64,
    /// Default branch call timeout, ms.
    pub request_timeout_ms: u64,
    /// Longest branch call timeout a transaction may set, ms.
    pub max_request_timeout_ms: u64,
    /// Most branch rows of one transaction.
    pub max_branches: usize,
    /// Most payload bytes over the branch rows of one transaction.
    pub max_payload_bytes: usize,
    /// Most subscribers of one topic.
    pub max_topic_subscribers: usize,
}

/// `[branch]`
#[derive(Debug, Clone, Deserialize)]
pub struct BranchSettings {
    /// Calls in flight per replica.
    pub max_in_flight: usize,
    /// Share of `max_in_flight` one host may hold, percent.
    pub host_share_percent: u32,
    /// Most bytes of a branch reply read.
    pub max_reply_bytes: usize,
    /// Idle connections per host.
    pub pool_idle_per_host: usize,
    /// Hosts that may be called, comma-separated; empty: any.
    pub allowed_hosts: String,
    /// PEM certificates trusted for `grpcs://` branches besides the
    /// system's roots; empty: none.
    pub grpc_ca_file: String,
}

/// `[alert]`
#[derive(Debug, Clone, Deserialize)]
pub struct AlertSettings {
    /// Where alerts go; empty: off.
    pub webhook_url: String,
    /// Failed attempts in a row before alerting.
    pub retry_limit: u32,
}

/// `[auth]`; tokens are secrets, so `Debug` shows only how many there are.
#[derive(Clone, Deserialize)]
pub struct AuthSettings {
    /// Full-access tokens, comma-separated.
    pub tokens: String,
    /// Read-only tokens, comma-separated.
    pub read_tokens: String,
}

impl AuthSettings {
    fn split(list: &str) -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The full-access tokens.
    pub fn full(&self) -> Vec<String> {
        Self::split(&self.tokens)
    }

    /// The read-only tokens.
    pub fn read_only(&self) -> Vec<String> {
        Self::split(&self.read_tokens)
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("tokens", &format!("{} configured", self.full().len()))
            .field(
                "read_tokens",
                &format!("{} configured", self.read_only().len()),
            )
            .finish()
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// Level.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

/// `[otel]`
#[derive(Debug, Clone, Deserialize)]
pub struct OtelSettings {
    /// OTLP/HTTP base URL spans are sent to (`/v1/traces` is appended);
    /// empty: no spans are built.
    pub endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Settings {
    /// Loads the layers: defaults, then `file`, then the environment as
    /// given by `env` (a lookup, so tests need not touch the process
    /// environment).
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            DEFAULT_TOML
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: "config/default.toml".into(),
                    message: e.to_string(),
                })?;
        if let Some(path) = file {
            let display = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: display.clone(),
                source,
            })?;
            let overlay: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        path: display,
                        message: e.to_string(),
                    })?;
            merge(&mut table, overlay, "")?;
        }
        apply_env(&mut table, &env)?;
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every `DTX_*` variable this build reads, with its default, in file
    /// order (for the README and `--help`).
    pub fn env_vars() -> Vec<(String, String)> {
        let table: toml::Table = DEFAULT_TOML.parse().unwrap_or_default();
        let mut out = Vec::new();
        for (section, keys) in &table {
            if let toml::Value::Table(keys) = keys {
                for (key, value) in keys {
                    out.push((env_name(section, key), value.to_string()));
                }
            }
        }
        out
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.redis.shards == 0 || self.redis.shards > 16384 {
            return bad("redis.shards must be between 1 and 16384");
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}']) {
            return bad("redis.key_prefix must be non-empty and must not contain '{' or '}'");
        }
        if self.redis.min_replicas_ack > 0
            && !(1..self.redis.response_timeout_ms).contains(&self.redis.ack_timeout_ms)
        {
            return bad(
                "redis.ack_timeout_ms must be positive and below redis.response_timeout_ms",
            );
        }
        match RedisTarget::parse(&self.redis.url) {
            Err(e) => return bad(&format!("redis.url: {e}")),
            Ok(target) => {
                let tls = &self.redis;
                if tls.tls_cert_file.is_empty() != tls.tls_key_file.is_empty() {
                    return bad("redis.tls_cert_file and redis.tls_key_file go together");
                }
                if tls
                    .url
                    .split_once('#')
                    .is_some_and(|(_, f)| f == "insecure")
                {
                    return bad("redis.url: #insecure would turn the certificate checks off; name a private CA in redis.tls_ca_file instead");
                }
                let files = [&tls.tls_ca_file, &tls.tls_cert_file];
                if files.iter().any(|f| !f.is_empty()) && !target.is_tls() {
                    return bad("redis.tls_* files are for TLS URLs only (rediss://, rediss+cluster://, rediss+sentinel://)");
                }
            }
        }
        if !(1..=256).contains(&self.redis.read_pool_size) {
            return bad("redis.read_pool_size must be between 1 and 256");
        }
        if self.scheduler.lease_ms < 500 {
            return bad("scheduler.lease_ms must be at least 500");
        }
        if self.scheduler.recheck_ms == 0 || self.scheduler.claim_batch == 0 {
            return bad("scheduler.recheck_ms and scheduler.claim_batch must be positive");
        }
        if self.scheduler.max_active == 0 || self.branch.max_in_flight == 0 {
            return bad("scheduler.max_active and branch.max_in_flight must be positive");
        }
        if self.retry.base_ms == 0 || self.retry.max_ms < self.retry.base_ms {
            return bad("retry.base_ms must be positive and at most retry.max_ms");
        }
        if !(0.0..1.0).contains(&self.retry.jitter) {
            return bad("retry.jitter must be in [0, 1)");
        }
        if self.trans.timeout_to_fail_s <= 0 || self.trans.request_timeout_ms == 0 {
            return bad("trans.timeout_to_fail_s and trans.request_timeout_ms must be positive");
        }
        if self.trans.max_request_timeout_ms < self.trans.request_timeout_ms {
            return bad("trans.max_request_timeout_ms must be at least trans.request_timeout_ms");
        }
        if self.http.header_read_timeout_ms == 0 {
            return bad("http.header_read_timeout_ms must be positive");
        }
        if self.trans.max_branches == 0
            || self.trans.max_payload_bytes == 0
            || self.trans.max_topic_subscribers == 0
        {
            return bad("trans.max_branches, trans.max_payload_bytes and trans.max_topic_subscribers must be positive");
        }
        if !(1..=100).contains(&self.branch.host_share_percent) {
            return bad("branch.host_share_percent must be between 1 and 100");
        }
        if self.branch.max_reply_bytes < 64 {
            return bad("branch.max_reply_bytes must be at least 64");
        }
        if self.store.max_gid_len == 0 || self.store.finished_ttl_s == 0 {
            return bad("store.max_gid_len and store.finished_ttl_s must be positive");
        }
        if !self.alert.webhook_url.is_empty()
            && crate::domain::validate_url(&self.alert.webhook_url).is_err()
        {
            return bad("alert.webhook_url must be an http(s) URL or empty");
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad("log.format must be \"text\" or \"json\"");
        }
        let http_url = |u: &str| {
            url::Url::parse(u)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        };
        if !self.otel.endpoint.is_empty() && !http_url(&self.otel.endpoint) {
            return bad("otel.endpoint must be an http(s) URL or empty");
        }
        if self.otel.service_name.is_empty() {
            return bad("otel.service_name must not be empty");
        }
        Ok(())
    }
}

fn env_name(section: &str, key: &str) -> String {
    format!("DTX_{}_{}", section.to_uppercase(), key.to_uppercase())
}

/// Overlays `from` onto `into`, refusing keys the defaults do not have.
fn merge(into: &mut toml::Table, from: toml::Table, path: &str) -> Result<(), ConfigError> {
    for (key, value) in from {
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(v)) => merge(inner, v, &full)?,
            (Some(slot), v) if !slot.is_table() => *slot = v,
            _ => return Err(ConfigError::Unknown(full)),
        }
    }
    Ok(())
}

fn apply_env(
    table: &mut toml::Table,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (section, keys) in table.iter_mut() {
        let toml::Value::Table(keys) = keys else {
            continue;
        };
        for (key, slot) in keys.iter_mut() {
            let name = env_name(section, key);
            let Some(raw) = env(&name) else { continue };
            let err = |kind| ConfigError::Env {
                name: name.clone(),
                value: raw.clone(),
                kind,
            };
            *slot = match slot {
                toml::Value::Integer(_) => {
                    toml::Value::Integer(raw.trim().parse().map_err(|_| err("integer"))?)
                }
                toml::Value::Float(_) => {
                    toml::Value::Float(raw.trim().parse().map_err(|_| err("number"))?)
                }
                toml::Value::Boolean(_) => {
                    toml::Value::Boolean(raw.trim().parse().map_err(|_| err("boolean"))?)
                }
                _ => toml::Value::String(raw),
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
