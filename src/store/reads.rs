//! Plain reads: a transaction, its status, the due backlog, the
//! attention and set-aside lists, KV entries.

use futures_util::future::join_all;
use redis::Value;

use super::codec::{decode_trans, DecodeError};
use super::types::decode_kv;
use super::{Conn, KvEntry, Store, StoreError};
use crate::domain::{GlobalStatus, Trans, TransKind};

impl Store {
    /// For each of `shards`: how many transactions are due at `now_ms`,
    /// and the earliest due time among them; one result per shard, in the
    /// order of `shards`, all on one connection of the read pool.
    pub async fn due_stats(
        &self,
        shards: &[u32],
        now_ms: u64,
    ) -> Result<Vec<Result<(u64, Option<u64>), StoreError>>, StoreError> {
        self.on_each_shard(shards, |mut conn, shard| async move {
            self.due_stats_on(&mut conn, shard, now_ms).await
        })
        .await
    }

    async fn due_stats_on(
        &self,
        conn: &mut Conn,
        shard: u32,
        now_ms: u64,
    ) -> Result<(u64, Option<u64>), StoreError> {
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
            .query_async(conn)
            .await?;
        let oldest = head
            .first()
            .map(|(_, score)| *score as u64)
            .filter(|score| *score <= now_ms);
        Ok((count, oldest))
    }

    /// Reads one transaction (not a script: two reads in one pipeline).
    pub async fn load(&self, gid: &str) -> Result<Option<Trans>, StoreError> {
        let mut pooled = self.read_conn().await?;
        self.load_on(&mut pooled.conn, gid).await
    }

    /// Reads the transactions `gids`, pipelined on one connection of the
    /// read pool (a claim sweep's: one checkout for all of them); one
    /// result per gid, in order.
    pub async fn load_many(
        &self,
        gids: &[String],
    ) -> Result<Vec<Result<Option<Trans>, StoreError>>, StoreError> {
        let pooled = self.read_conn().await?;
        let shared = &pooled.conn;
        let loads = gids.iter().map(|gid| {
            let mut conn = shared.clone();
            async move { self.load_on(&mut conn, gid).await }
        });
        Ok(join_all(loads).await)
    }

    async fn load_on(&self, conn: &mut Conn, gid: &str) -> Result<Option<Trans>, StoreError> {
        let k = self.keys.trans(gid);
        let (trans, branches): (Value, Value) = redis::pipe()
            .cmd("HGETALL")
            .arg(&k.trans)
            .cmd("HGETALL")
            .arg(&k.branches)
            .query_async(conn)
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
        let mut pooled = self.read_conn().await?;
        let conn = &mut pooled.conn;
        let mut due = Vec::new();
        for shard in 0..self.keys.shards() {
            let head: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(self.keys.due(shard))
                .arg(0)
                .arg(per_shard.max(1) as i64 - 1)
                .arg("WITHSCORES")
                .query_async(conn)
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
        let mut pooled = self.read_conn().await?;
        let conn = &mut pooled.conn;
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
            .query_async(conn)
            .await?;
        let more = found.len() > limit;
        found.truncate(limit);
        if found.is_empty() {
            return Ok((Vec::new(), false));
        }
        let raws: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&data)
            .arg(&found)
            .query_async(conn)
            .await?;
        let mut out = Vec::with_capacity(found.len());
        for (key, raw) in found.into_iter().zip(raws) {
            if let Some(raw) = raw {
                out.push(decode_kv(cat, key, &raw)?);
            }
        }
        Ok((out, more))
    }

    /// Every transaction set aside, as (gid, since ms, why), at most
    /// `per_shard` of each shard.
    pub async fn set_aside_list(
        &self,
        per_shard: usize,
    ) -> Result<Vec<(String, u64, String)>, StoreError> {
        let mut pooled = self.read_conn().await?;
        let conn = &mut pooled.conn;
        let mut out = Vec::new();
        for shard in 0..self.keys.shards() {
            let (_, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(self.keys.aside(shard))
                .arg(0)
                .arg("COUNT")
                .arg(per_shard)
                .query_async(conn)
                .await?;
            for (gid, value) in page.into_iter().take(per_shard) {
                let (since, why) = value.split_once('\t').unwrap_or(("0", &value));
                out.push((gid, since.parse().unwrap_or(0), why.to_owned()));
            }
        }
        Ok(out)
    }
}
