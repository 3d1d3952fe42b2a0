//! All of Redis: the only code that knows key names and scripts. One
//! wrapper per Lua file (same name), every reply decoded into a typed
//! outcome.
//!
//! Commands go over one shared multiplexed connection
//! (`ConnectionManager`), which pipelines concurrent calls and reconnects
//! by itself after Redis restarts or the connection drops.

pub mod codec;
pub mod keys;
pub mod scripts;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use crate::config::{redact_url, RedisSettings};
use crate::domain::{BranchStatus, GlobalStatus, Trans, TransKind};
use futures_util::future::join_all;

use codec::{decode_trans, int, split_reply, text, DecodeError, ScriptCode};
pub use keys::{Keys, TransKeys};
use scripts::Scripts;

/// Why a store call did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached (down, restarting, loading).
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis did not answer in time: a write may or may not have been
    /// applied.
    #[error("redis did not answer in time: {0}")]
    Timeout(String),
    /// The status is not the expected one: someone else advanced it.
    #[error("status is '{actual}', expected '{expected}'")]
    Conflict {
        /// What the caller expected.
        expected: String,
        /// What Redis holds.
        actual: String,
    },
    /// The lease was taken over by another epoch.
    #[error("lease lost: the epoch is now {0}")]
    StaleEpoch(u64),
    /// No such transaction.
    #[error("no such transaction")]
    NotFound,
    /// A branch row is missing or not in its expected status.
    #[error("branch row {0} is missing or not in its expected status")]
    BranchConflict(String),
    /// The transaction is of another kind than the call named.
    #[error("the transaction is a {0} transaction")]
    KindConflict(String),
    /// The change would pass a limit of one transaction.
    #[error("the transaction would hold too many {what} (it holds {held})")]
    Limit {
        /// `rows` or `bytes`.
        what: String,
        /// How many it holds now.
        held: u64,
    },
    /// A reply of the wrong shape.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Any other Redis error.
    #[error("redis error: {0}")]
    Redis(String),
}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        let down = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || matches!(
                e.kind(),
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                )
            );
        if e.is_timeout() {
            StoreError::Timeout(e.to_string())
        } else if down {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Redis(e.to_string())
        }
    }
}

/// Why dtx cannot start on this Redis; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {error}. Start Redis there, set DTX_REDIS_URL, or run with --dev")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// Why.
        error: String,
    },
    /// Redis may evict keys.
    #[error("Redis at {url} runs with maxmemory-policy {policy}, which can evict transactions. Set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf)")]
    Eviction {
        /// The URL, password redacted.
        url: String,
        /// The policy found.
        policy: String,
    },
    /// A script did not load.
    #[error("Redis refused script lua/{name}.lua: {error}. Use Redis 6.2 or newer with scripting enabled")]
    Script {
        /// Script name.
        name: &'static str,
        /// Why.
        error: String,
    },
    /// The shard count differs from the deployment's.
    #[error("this deployment (key prefix {prefix:?}) was created with {stored} shards but redis.shards is {configured}. Set DTX_REDIS_SHARDS={stored}; changing it is a data migration")]
    Shards {
        /// Key prefix.
        prefix: String,
        /// Recorded count.
        stored: u32,
        /// Configured count.
        configured: u32,
    },
}

/// How a record leaves the transaction's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Keep (or renew) the lease until this time, ms.
    Hold(u64),
    /// Give the lease up; due again at this time, ms.
    Release(u64),
    /// Give the lease up; not due until a client acts.
    Park,
    /// Finished: leave the due set and expire after the retention.
    Finish,
}

/// One write of a leased transaction's progress (`lua/record.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The new status, if it changes.
    pub status: Option<GlobalStatus>,
    /// Trans hash fields to set.
    pub fields: Vec<(&'static str, String)>,
    /// Branch rows to move: field, expected status, new status.
    pub branches: Vec<(String, BranchStatus, BranchStatus)>,
    /// What happens to the schedule.
    pub schedule: Schedule,
}

/// What `create_trans` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Stored.
    New,
    /// The gid is taken by a transaction in this status, of this kind.
    Exists(GlobalStatus, TransKind),
}

/// A transaction leased to this replica, with the epoch to write with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// The transaction as stored.
    pub trans: Trans,
    /// The lease epoch.
    pub epoch: u64,
}

/// What one `claim_due` call found in a shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// Transactions now leased to the caller, with their epochs; each is
    /// read on its own ([`Store::load`]).
    pub leased: Vec<(String, u64)>,
    /// The earliest due time left in the shard (ms), if any.
    pub next_due: Option<u64>,
}

/// One KV entry (dtm's `KVStore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// Category.
    pub cat: String,
    /// Key.
    pub key: String,
    /// Value (any text).
    pub value: String,
    /// Version, 1 at creation, +1 on every update.
    pub version: u64,
    /// Creation time, ms.
    pub create_ms: u64,
    /// Last update, ms.
    pub update_ms: u64,
}

fn decode_kv(cat: &str, key: String, raw: &str) -> Result<KvEntry, DecodeError> {
    let mut parts = raw.splitn(4, '\t');
    let mut num = |what: &str| -> Result<u64, DecodeError> {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| DecodeError(format!("kv {what} of {key:?}")))
    };
    let version = num("version")?;
    let create_ms = num("create_ms")?;
    let update_ms = num("update_ms")?;
    Ok(KvEntry {
        cat: cat.to_owned(),
        value: parts.next().unwrap_or_default().to_owned(),
        key,
        version,
        create_ms,
        update_ms,
    })
}

/// Filters of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<GlobalStatus>,
    /// Only this kind.
    pub kind: Option<TransKind>,
    /// Created at or after, ms.
    pub created_from_ms: Option<u64>,
    /// Created at or before, ms.
    pub created_to_ms: Option<u64>,
}

/// Position in a listing: everything strictly older than (score, gid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time, ms.
    pub created_ms: u64,
    /// Gid (ties are ordered by gid, descending).
    pub gid: String,
}

impl Cursor {
    /// `<created_ms>-<gid>`
    pub fn encode(&self) -> String {
        format!("{}-{}", self.created_ms, self.gid)
    }

    /// Parses [`Cursor::encode`]'s format.
    pub fn decode(s: &str) -> Option<Self> {
        let (ms, gid) = s.split_once('-')?;
        Some(Self {
            created_ms: ms.parse().ok()?,
            gid: gid.to_owned(),
        })
    }
}

/// The Redis store of one deployment.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    keys: Keys,
    scripts: Arc<Scripts>,
    finished_ttl_ms: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects, checks that Redis cannot evict, loads every script and
    /// checks the shard count; every failure is a [`StartError`].
    pub async fn connect(
        settings: &RedisSettings,
        finished_ttl_s: u64,
    ) -> Result<Self, StartError> {
        let url = redact_url(&settings.url);
        let connect_err = |e: RedisError| StartError::Connect {
            url: url.clone(),
            error: e.to_string(),
        };
        let client = redis::Client::open(settings.url.as_str()).map_err(connect_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
            .set_response_timeout(Some(Duration::from_millis(settings.response_timeout_ms)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(connect_err)?;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .map_err(connect_err)?;
        let policy = info
            .lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
            .unwrap_or("noeviction")
            .trim()
            .to_owned();
        if policy != "noeviction" {
            return Err(StartError::Eviction { url, policy });
        }
        let scripts = Scripts::new();
        for (name, script) in scripts.all() {
            script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(|e| StartError::Script {
                    name,
                    error: e.to_string(),
                })?;
        }
        let keys = Keys::new(&settings.key_prefix, settings.shards);
        let meta = keys.meta();
        let (_, stored): (i64, u32) = redis::pipe()
            .cmd("HSETNX")
            .arg(&meta)
            .arg("shards")
            .arg(settings.shards)
            .cmd("HGET")
            .arg(&meta)
            .arg("shards")
            .query_async(&mut conn)
            .await
            .map_err(connect_err)?;
        if stored != settings.shards {
            return Err(StartError::Shards {
                prefix: settings.key_prefix.clone(),
                stored,
                configured: settings.shards,
            });
        }
        Ok(Self {
            conn,
            keys,
            scripts: Arc::new(scripts),
            finished_ttl_ms: finished_ttl_s * 1000,
        })
    }

    /// Runs one script by SHA (reloading it if Redis lost it), recording
    /// its count and latency under `name`.
    async fn eval(
        &self,
        name: &'static str,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<Value, StoreError> {
        let started = std::time::Instant::now();
        let mut conn = self.conn.clone();
        let reply = inv.invoke_async(&mut conn).await;
        crate::telemetry::script(name, reply.is_ok(), started.elapsed());
        Ok(reply?)
    }

    /// How many transactions of `shard` are due at `now_ms`, and the
    /// earliest due time among them.
    pub async fn due_stats(
        &self,
        shard: u32,
        now_ms: u64,
    ) -> Result<(u64, Option<u64>), StoreError> {
        let mut conn = self.conn.clone();
        let (count, head): (u64, Vec<(String, f64)>) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(self.keys.due(shard))
            .arg("-inf")
            .arg(now_ms)
            .cmd("ZRANGE")
            .arg(self.keys.due(shard))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let oldest = head
            .first()
            .map(|(_, score)| *score as u64)
            .filter(|score| *score <= now_ms);
        Ok((count, oldest))
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// How long finished transactions are kept, ms.
    pub fn finished_ttl_ms(&self) -> u64 {
        self.finished_ttl_ms
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// `lua/create_trans.lua`: stores `t` (its status, epoch and owner as
    /// given), indexes it, and schedules it at `due_ms` when given.
    pub async fn create_trans(
        &self,
        t: &Trans,
        epoch: u64,
        due_ms: Option<u64>,
    ) -> Result<Created, StoreError> {
        let k = self.keys.trans(&t.gid);
        let fields = codec::trans_fields(t, epoch);
        const NAME: &str = "create_trans";
        let mut inv = self.scripts.create_trans.prepare_invoke();
        inv.key(&k.trans) // KEYS[1]
            .key(&k.branches) // KEYS[2]
            .key(&k.due) // KEYS[3]
            .key(&k.created); // KEYS[4]
        inv.arg(&t.gid)
            .arg(t.create_ms)
            .arg(due_ms.map(|d| d.to_string()).unwrap_or_default())
            .arg(fields.len());
        for (f, v) in &fields {
            inv.arg(*f).arg(v);
        }
        for b in &t.branches {
            inv.arg(b.field()).arg(codec::branch_row(b, t.create_ms));
        }
        let reply = self.eval(NAME, &inv).await?;
        let (code, rest) = split_reply(&reply)?;
        match code {
            ScriptCode::Ok => Ok(Created::New),
            ScriptCode::Exists => {
                let status = first_text(rest)?;
                let kind = rest.get(1).map(text).transpose()?.unwrap_or_default();
                Ok(Created::Exists(
                    GlobalStatus::parse(&status)
                        .ok_or_else(|| DecodeError(format!("status {status:?}")))?,
                    TransKind::parse(&kind).ok_or_else(|| DecodeError(format!("kind {kind:?}")))?,
                ))
            }
            other => Err(unexpected("create_trans", other)),
        }
    }

    /// Looks at the head of `shard`'s due set and, through
    /// `lua/claim_due.lua`, leases up to `limit` transactions due at
    /// `now_ms` to `owner` until `lease_until_ms`.
    pub async fn claim_due(
        &self,
        shard: u32,
        now_ms: u64,
        lease_until_ms: u64,
        owner: &str,
        limit: usize,
    ) -> Result<Claim, StoreError> {
        let due_key = self.keys.due(shard);
        let mut conn = self.conn.clone();
        let head: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&due_key)
            .arg(0)
            .arg(limit.max(1) as i64 - 1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let candidates: Vec<&str> = head
            .iter()
            .filter(|(_, score)| *score as u64 <= now_ms)
            .map(|(gid, _)| gid.as_str())
            .collect();
        if candidates.is_empty() {
            return Ok(Claim {
                leased: Vec::new(),
                next_due: head.first().map(|(_, s)| *s as u64),
            });
        }
        const NAME: &str = "claim_due";
        let mut inv = self.scripts.claim_due.prepare_invoke();
        inv.key(&due_key); // KEYS[1]
        for gid in &candidates {
            inv.key(self.keys.trans(gid).trans); // KEYS[1+i]
        }
        inv.arg(now_ms).arg(lease_until_ms).arg(owner);
        for gid in &candidates {
            inv.arg(*gid);
        }
        let reply = self.eval(NAME, &inv).await?;
        let (code, rest) = split_reply(&reply)?;
        if code != ScriptCode::Ok {
            return Err(unexpected("claim_due", code));
        }
        let next = rest.first().map(int).transpose()?.unwrap_or(-1);
        let mut leased = Vec::new();
        for chunk in rest[1..].chunks(2) {
            let [gid, epoch] = chunk else {
                return Err(DecodeError("claim_due: truncated reply".into()).into());
            };
            leased.push((text(gid)?, int(epoch)? as u64));
        }
        Ok(Claim {
            leased,
            next_due: (next >= 0).then_some(next as u64),
        })
    }

    /// `lua/set_aside.lua`: takes `gid`, claimed at `epoch`, out of the
    /// schedule because it cannot be decoded, recording `why`. Returns
    /// false when it was claimed again since.
    pub async fn set_aside(
        &self,
        gid: &str,
        epoch: u64,
        now_ms: u64,
        why: &str,
    ) -> Result<bool, StoreError> {
        let shard = self.keys.shard_of(gid);
        const NAME: &str = "set_aside";
        let mut inv = self.scripts.set_aside.prepare_invoke();
        inv.key(self.keys.due(shard)) // KEYS[1]
            .key(self.keys.trans(gid).trans) // KEYS[2]
            .key(self.keys.aside(shard)); // KEYS[3]
        inv.arg(gid).arg(epoch).arg(now_ms).arg(why);
        let reply = self.eval(NAME, &inv).await?;
        match split_reply(&reply)?.0 {
            ScriptCode::Ok => Ok(true),
            ScriptCode::StaleEpoch => Ok(false),
            other => Err(unexpected(NAME, other)),
        }
    }

    /// Every transaction set aside, as (gid, since ms, why), at most
    /// `per_shard` of each shard.
    pub async fn set_aside_list(
        &self,
        per_shard: usize,
    ) -> Result<Vec<(String, u64, String)>, StoreError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        for shard in 0..self.keys.shards() {
            let (_, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(self.keys.aside(shard))
                .arg(0)
                .arg("COUNT")
                .arg(per_shard)
                .query_async(&mut conn)
                .await?;
            for (gid, value) in page.into_iter().take(per_shard) {
                let (since, why) = value.split_once('\t').unwrap_or(("0", &value));
                out.push((gid, since.parse().unwrap_or(0), why.to_owned()));
            }
        }
        Ok(out)
    }

    /// `lua/record.lua`: writes `rec` for `gid` (created at `create_ms`),
    /// held at `epoch` in `expected` status.
    #[allow(clippy::too_many_arguments)]
    pub async fn record(
        &self,
        gid: &str,
        create_ms: u64,
        epoch: u64,
        expected: GlobalStatus,
        now_ms: u64,
        owner: &str,
        rec: &Record,
    ) -> Result<(), StoreError> {
        let k = self.keys.trans(gid);
        let (mode, when) = match rec.schedule {
            Schedule::Hold(until) => ("hold", until),
            Schedule::Release(at) => ("release", at),
            Schedule::Park => ("park", 0),
            Schedule::Finish => ("finish", self.finished_ttl_ms),
        };
        const NAME: &str = "record";
        let mut inv = self.scripts.record.prepare_invoke();
        inv.key(&k.trans) // KEYS[1]
            .key(&k.branches) // KEYS[2]
            .key(&k.due); // KEYS[3]
        inv.arg(gid)
            .arg(epoch)
            .arg(expected.as_str())
            .arg(rec.status.map(GlobalStatus::as_str).unwrap_or(""))
            .arg(now_ms)
            .arg(mode)
            .arg(when)
            .arg(owner)
            .arg(now_ms.saturating_sub(create_ms))
            .arg(rec.fields.len());
        for (f, v) in &rec.fields {
            inv.arg(*f).arg(v);
        }
        for (field, from, to) in &rec.branches {
            inv.arg(field).arg(from.as_str()).arg(to.as_str());
        }
        let reply = self.eval(NAME, &inv).await?;
        let (code, rest) = split_reply(&reply)?;
        match code {
            ScriptCode::Ok => Ok(()),
            ScriptCode::NotFound => Err(StoreError::NotFound),
            ScriptCode::StaleEpoch => Err(StoreError::StaleEpoch(
                rest.first().map(int).transpose()?.unwrap_or(0) as u64,
            )),
            ScriptCode::Conflict => Err(StoreError::Conflict {
                expected: expected.as_str().to_owned(),
                actual: first_text(rest)?,
            }),
            ScriptCode::BranchConflict => Err(StoreError::BranchConflict(first_text(rest)?)),
            other => Err(unexpected("record", other)),
        }
    }

    /// `lua/transition.lua`: moves `gid` from `expected` to `to` for an API
    /// call, taking the lease over (the epoch always moves on). With
    /// `hold_until_ms` the caller holds the lease and drives the
    /// transaction; without, it is finished. Returns the transaction after
    /// the change, leased at the new epoch.
    #[allow(clippy::too_many_arguments)]
    pub async fn transition(
        &self,
        gid: &str,
        kind: Option<TransKind>,
        expected: GlobalStatus,
        to: GlobalStatus,
        now_ms: u64,
        hold_until_ms: Option<u64>,
        owner: &str,
        fields: &[(&'static str, String)],
    ) -> Result<Leased, StoreError> {
        let k = self.keys.trans(gid);
        let (mode, when) = match hold_until_ms {
            Some(until) => ("hold", until),
            None => ("finish", self.finished_ttl_ms),
        };
        const NAME: &str = "transition";
        let mut inv = self.scripts.transition.prepare_invoke();
        inv.key(&k.trans) // KEYS[1]
            .key(&k.branches) // KEYS[2]
            .key(&k.due); // KEYS[3]
        inv.arg(gid)
            .arg(kind.map(TransKind::as_str).unwrap_or_default())
            .arg(expected.as_str())
            .arg(to.as_str())
            .arg(now_ms)
            .arg(mode)
            .arg(when)
            .arg(owner)
            .arg(fields.len());
        for (f, v) in fields {
            inv.arg(*f).arg(v);
        }
        let reply = self.eval(NAME, &inv).await?;
        let (code, rest) = split_reply(&reply)?;
        match code {
            ScriptCode::Ok => {
                let [epoch, trans, branches] = rest else {
                    return Err(DecodeError("transition: truncated reply".into()).into());
                };
                let (trans, _) = decode_trans(gid, trans, branches)?;
                Ok(Leased {
                    trans,
                    epoch: int(epoch)? as u64,
                })
            }
            ScriptCode::NotFound => Err(StoreError::NotFound),
            ScriptCode::KindConflict => Err(StoreError::KindConflict(first_text(rest)?)),
            ScriptCode::Conflict => Err(StoreError::Conflict {
                expected: expected.as_str().to_owned(),
                actual: first_text(rest)?,
            }),
            other => Err(unexpected("transition", other)),
        }
    }

    /// `lua/register_branch.lua`: adds `rows` to the prepared transaction
    /// `gid`, numbering them after the rows it has.
    pub async fn register_branch(
        &self,
        gid: &str,
        kind: TransKind,
        rows: &[crate::domain::Branch],
        limits: &crate::domain::Limits,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let k = self.keys.trans(gid);
        const NAME: &str = "register_branch";
        let mut inv = self.scripts.register_branch.prepare_invoke();
        inv.key(&k.trans) // KEYS[1]
            .key(&k.branches); // KEYS[2]
        let bytes: usize = rows.iter().map(|b| b.data.len()).sum();
        inv.arg(now_ms)
            .arg(kind.as_str())
            .arg(limits.max_branches)
            .arg(limits.max_payload_bytes)
            .arg(bytes);
        for b in rows {
            let (status, tail) = codec::branch_row_parts(b);
            inv.arg(b.field()).arg(status).arg(tail);
        }
        let reply = self.eval(NAME, &inv).await?;
        let (code, rest) = split_reply(&reply)?;
        match code {
            ScriptCode::Ok => Ok(()),
            ScriptCode::NotFound => Err(StoreError::NotFound),
            ScriptCode::KindConflict => Err(StoreError::KindConflict(first_text(rest)?)),
            ScriptCode::Conflict => Err(StoreError::Conflict {
                expected: GlobalStatus::Prepared.as_str().to_owned(),
                actual: first_text(rest)?,
            }),
            ScriptCode::BranchConflict => Err(StoreError::BranchConflict(first_text(rest)?)),
            ScriptCode::Limit => Err(StoreError::Limit {
                what: first_text(rest)?,
                held: rest.get(1).map(int).transpose()?.unwrap_or_default() as u64,
            }),
            other => Err(unexpected("register_branch", other)),
        }
    }

    /// `lua/reset_due.lua` for `gids` of `shard`: makes each unfinished one
    /// due at `now_ms`, when its due score is above `floor_ms` (or always,
    /// with `None`). Returns how many were reset.
    pub async fn reset_due(
        &self,
        shard: u32,
        gids: &[String],
        now_ms: u64,
        floor_ms: Option<u64>,
    ) -> Result<usize, StoreError> {
        if gids.is_empty() {
            return Ok(0);
        }
        const NAME: &str = "reset_due";
        let mut inv = self.scripts.reset_due.prepare_invoke();
        inv.key(self.keys.due(shard)); // KEYS[1]
        for gid in gids {
            inv.key(self.keys.trans(gid).trans); // KEYS[1+i]
        }
        inv.arg(now_ms)
            .arg(floor_ms.map(|f| f.to_string()).unwrap_or_default());
        for gid in gids {
            inv.arg(gid);
        }
        let reply = self.eval(NAME, &inv).await?;
        let (code, rest) = split_reply(&reply)?;
        if code != ScriptCode::Ok {
            return Err(unexpected("reset_due", code));
        }
        Ok(rest.first().map(int).transpose()?.unwrap_or(0) as usize)
    }

    /// Makes up to `limit` unfinished transactions whose due time is later
    /// than `floor_ms` due at `now_ms`, across every shard. Returns how many
    /// were reset and whether more remain.
    pub async fn reset_due_after(
        &self,
        floor_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<(usize, bool), StoreError> {
        let mut reset = 0;
        let mut remaining = false;
        let mut conn = self.conn.clone();
        for shard in 0..self.keys.shards() {
            let room = limit - reset;
            let later: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.keys.due(shard))
                .arg(format!("({floor_ms}"))
                .arg("+inf")
                .arg("LIMIT")
                .arg(0)
                .arg(room + 1)
                .query_async(&mut conn)
                .await?;
            if later.len() > room {
                remaining = true;
            }
            let take = &later[..later.len().min(room)];
            reset += self.reset_due(shard, take, now_ms, Some(floor_ms)).await?;
            if reset >= limit {
                for rest in shard + 1..self.keys.shards() {
                    let more: u64 = redis::cmd("ZCOUNT")
                        .arg(self.keys.due(rest))
                        .arg(format!("({floor_ms}"))
                        .arg("+inf")
                        .query_async(&mut conn)
                        .await?;
                    if more > 0 {
                        remaining = true;
                        break;
                    }
                }
                break;
            }
        }
        Ok((reset, remaining))
    }

    /// `lua/kv_put.lua`: writes `value` (or deletes, with `None`) at
    /// `cat`/`key` if its version is still `expected` (0: absent). Returns
    /// the new version.
    pub async fn kv_put(
        &self,
        cat: &str,
        key: &str,
        expected: u64,
        value: Option<&str>,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let (data, keys) = self.keys.kv(cat);
        const NAME: &str = "kv_put";
        let mut inv = self.scripts.kv_put.prepare_invoke();
        inv.key(&data) // KEYS[1]
            .key(&keys); // KEYS[2]
        inv.arg(key)
            .arg(expected)
            .arg(now_ms)
            .arg(if value.is_some() { "put" } else { "delete" })
            .arg(value.unwrap_or_default());
        let reply = self.eval(NAME, &inv).await?;
        let (code, rest) = split_reply(&reply)?;
        match code {
            ScriptCode::Ok => Ok(rest.first().map(int).transpose()?.unwrap_or(0) as u64),
            ScriptCode::NotFound => Err(StoreError::NotFound),
            ScriptCode::Conflict => Err(StoreError::Conflict {
                expected: expected.to_string(),
                actual: first_text(rest)?,
            }),
            other => Err(unexpected("kv_put", other)),
        }
    }

    /// One KV entry, if present.
    pub async fn kv_get(&self, cat: &str, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let (data, _) = self.keys.kv(cat);
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("HGET")
            .arg(&data)
            .arg(key)
            .query_async(&mut conn)
            .await?;
        Ok(raw
            .map(|r| decode_kv(cat, key.to_owned(), &r))
            .transpose()?)
    }

    /// Up to `limit` entries of `cat` with keys after `after`, in key
    /// order, and whether more follow.
    pub async fn kv_scan(
        &self,
        cat: &str,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<KvEntry>, bool), StoreError> {
        let (data, keys) = self.keys.kv(cat);
        let mut conn = self.conn.clone();
        let start = if after.is_empty() {
            "-".to_owned()
        } else {
            format!("({after}")
        };
        let mut found: Vec<String> = redis::cmd("ZRANGE")
            .arg(&keys)
            .arg(start)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .query_async(&mut conn)
            .await?;
        let more = found.len() > limit;
        found.truncate(limit);
        if found.is_empty() {
            return Ok((Vec::new(), false));
        }
        let raws: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&data)
            .arg(&found)
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(found.len());
        for (key, raw) in found.into_iter().zip(raws) {
            if let Some(raw) = raw {
                out.push(decode_kv(cat, key, &raw)?);
            }
        }
        Ok((out, more))
    }

    /// Transactions that need an operator's eye: due more than
    /// `overdue_ms` ago and still not claimed, or failed `min_attempt`
    /// times in a row. Looks at the first `per_shard` due entries of every
    /// shard (earliest first). Returns each with its due time.
    pub async fn attention(
        &self,
        now_ms: u64,
        overdue_ms: u64,
        min_attempt: u32,
        per_shard: usize,
    ) -> Result<Vec<(Trans, u64)>, StoreError> {
        let mut conn = self.conn.clone();
        let mut due = Vec::new();
        for shard in 0..self.keys.shards() {
            let head: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(self.keys.due(shard))
                .arg(0)
                .arg(per_shard.max(1) as i64 - 1)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
            due.extend(head.into_iter().map(|(g, s)| (g, s as u64)));
        }
        let loaded = join_all(due.iter().map(|(gid, _)| self.load(gid))).await;
        let mut out = Vec::new();
        for ((_, at), t) in due.into_iter().zip(loaded) {
            // one that cannot be decoded is listed once it is set aside
            let t = match t {
                Err(StoreError::Decode(_)) => None,
                t => t?,
            };
            if let Some(t) = t {
                let overdue = t.owner.is_empty() && at.saturating_add(overdue_ms) < now_ms;
                if overdue || t.attempt >= min_attempt {
                    out.push((t, at));
                }
            }
        }
        out.sort_by_key(|(_, at)| *at);
        Ok(out)
    }

    /// Drops up to `limit` entries of `shard`'s creation index created
    /// before `cutoff_ms` whose transaction has expired
    /// (`lua/prune_created.lua`). Returns how many were dropped.
    pub async fn prune_created(
        &self,
        shard: u32,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let created = self.keys.created(shard);
        let mut conn = self.conn.clone();
        let old: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&created)
            .arg("-inf")
            .arg(cutoff_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        if old.is_empty() {
            return Ok(0);
        }
        const NAME: &str = "prune_created";
        let mut inv = self.scripts.prune_created.prepare_invoke();
        inv.key(&created); // KEYS[1]
        for gid in &old {
            inv.key(self.keys.trans(gid).trans); // KEYS[1+i]
        }
        inv.arg(cutoff_ms);
        for gid in &old {
            inv.arg(gid);
        }
        let reply = self.eval(NAME, &inv).await?;
        let (code, rest) = split_reply(&reply)?;
        if code != ScriptCode::Ok {
            return Err(unexpected("prune_created", code));
        }
        Ok(rest.first().map(int).transpose()?.unwrap_or(0) as usize)
    }

    /// Reads one transaction (not a script: two reads in one pipeline).
    pub async fn load(&self, gid: &str) -> Result<Option<Trans>, StoreError> {
        let k = self.keys.trans(gid);
        let mut conn = self.conn.clone();
        let (trans, branches): (Value, Value) = redis::pipe()
            .cmd("HGETALL")
            .arg(&k.trans)
            .cmd("HGETALL")
            .arg(&k.branches)
            .query_async(&mut conn)
            .await?;
        let empty = match &trans {
            Value::Array(a) => a.is_empty(),
            Value::Map(m) => m.is_empty(),
            Value::Nil => true,
            _ => false,
        };
        if empty {
            return Ok(None);
        }
        Ok(Some(decode_trans(gid, &trans, &branches)?.0))
    }

    /// The status, kind and reason of `gid` only (a cheap read for
    /// waiters), or `None` when there is no such transaction.
    pub async fn status(
        &self,
        gid: &str,
    ) -> Result<Option<(GlobalStatus, TransKind, String)>, StoreError> {
        let k = self.keys.trans(gid);
        let mut conn = self.conn.clone();
        let (status, kind, reason): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(&k.trans)
                .arg("status")
                .arg("kind")
                .arg("reason")
                .query_async(&mut conn)
                .await?;
        let Some(status) = status else {
            return Ok(None);
        };
        let kind = kind.unwrap_or_default();
        match (GlobalStatus::parse(&status), TransKind::parse(&kind)) {
            (Some(s), Some(k)) => Ok(Some((s, k, reason.unwrap_or_default()))),
            _ => Err(DecodeError(format!("{gid}: status {status:?}, kind {kind:?}")).into()),
        }
    }

    /// One page of transactions, newest first, from the creation-time
    /// indexes of every shard (never `SCAN`). Returns the page and the
    /// cursor of the next one (`None` at the end). A page may hold fewer
    /// than `limit` transactions when filters skip many; the cursor then
    /// still moves on.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<Trans>, Option<Cursor>), StoreError> {
        let limit = limit.clamp(1, 1000);
        // how many index entries one call may look at when filters skip most
        let mut budget = limit * 10 + 100;
        let mut boundary = after;
        let mut page = Vec::new();
        loop {
            let candidates = self
                .list_candidates(filter, boundary.as_ref(), limit)
                .await?;
            if candidates.is_empty() {
                return Ok((page, None));
            }
            let loaded = join_all(candidates.iter().map(|(gid, _)| self.load(gid))).await;
            for ((gid, score), trans) in candidates.into_iter().zip(loaded) {
                boundary = Some(Cursor {
                    created_ms: score,
                    gid,
                });
                budget = budget.saturating_sub(1);
                // an entry whose transaction expired is skipped
                if let Some(t) = trans? {
                    if filter.status.is_none_or(|s| s == t.status)
                        && filter.kind.is_none_or(|k| k == t.kind)
                    {
                        page.push(t);
                        if page.len() == limit {
                            return Ok((page, boundary));
                        }
                    }
                }
            }
            if budget == 0 {
                return Ok((page, boundary));
            }
        }
    }

    /// The next `limit` index entries strictly older than `boundary`,
    /// merged across shards, newest first.
    async fn list_candidates(
        &self,
        filter: &ListFilter,
        boundary: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let min = filter
            .created_from_ms
            .map(|m| m.to_string())
            .unwrap_or_else(|| "-inf".into());
        let upper = filter.created_to_ms;
        let reads = (0..self.keys.shards()).map(|shard| {
            let key = self.keys.created(shard);
            let min = min.clone();
            let mut conn = self.conn.clone();
            async move {
                let mut out: Vec<(String, u64)> = Vec::new();
                // entries at the boundary's own millisecond with a smaller gid
                let max = match boundary {
                    Some(b) => {
                        let same: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
                            .arg(&key)
                            .arg(b.created_ms)
                            .arg(b.created_ms)
                            .arg("WITHSCORES")
                            .query_async(&mut conn)
                            .await?;
                        out.extend(
                            same.into_iter()
                                .filter(|(g, _)| *g < b.gid)
                                .map(|(g, s)| (g, s as u64)),
                        );
                        let below = match upper {
                            Some(u) if u < b.created_ms => u.to_string(),
                            _ => format!("({}", b.created_ms),
                        };
                        below
                    }
                    None => upper
                        .map(|u| u.to_string())
                        .unwrap_or_else(|| "+inf".into()),
                };
                let older: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                    .arg(&key)
                    .arg(&max)
                    .arg(&min)
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut conn)
                    .await?;
                out.extend(older.into_iter().map(|(g, s)| (g, s as u64)));
                Ok::<_, StoreError>(out)
            }
        });
        let mut all = Vec::new();
        for r in join_all(reads).await {
            all.extend(r?);
        }
        if let Some(from) = filter.created_from_ms {
            all.retain(|(_, s)| *s >= from);
        }
        if let Some(to) = upper {
            all.retain(|(_, s)| *s <= to);
        }
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        all.truncate(limit);
        Ok(all)
    }
}

fn unexpected(script: &str, code: ScriptCode) -> StoreError {
    StoreError::Decode(DecodeError(format!(
        "{script} replied {} which it never should",
        code.name()
    )))
}

/// The first extra value of a script reply as text, "" when there is none.
fn first_text(rest: &[Value]) -> Result<String, DecodeError> {
    Ok(rest.first().map(text).transpose()?.unwrap_or_default())
}
