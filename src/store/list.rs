//! Listing transactions, newest first, from the creation-time indexes.

use futures_util::future::join_all;

use super::{Cursor, ListFilter, Store, StoreError};
use crate::domain::Trans;

impl Store {
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
        // one connection of the read pool, its shard reads pipelined
        let pooled = self.read_conn().await?;
        let shared = &pooled.conn;
        let reads = (0..self.keys.shards()).map(|shard| {
            let key = self.keys.created(shard);
            let min = min.clone();
            let mut conn = shared.clone();
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
