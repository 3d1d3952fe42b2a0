//! The wrapper of `lua/prune_created.lua`.

use crate::store::codec::{int, split_reply, unexpected, ScriptCode};
use crate::store::{Conn, Store, StoreError};

impl Store {
    /// Drops up to `limit` entries of `shard`'s creation index created
    /// before `cutoff_ms` whose transaction has expired
    /// (`lua/prune_created.lua`), on a connection of the read pool (never
    /// in front of the hot path's scripts). Returns how many were dropped.
    pub async fn prune_created(
        &self,
        shard: u32,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut pooled = self.read_conn().await?;
        self.prune_on(&mut pooled.conn, shard, cutoff_ms, limit)
            .await
    }

    /// The prune of one shard on `conn` (the wrapper proper: the lint
    /// reads it with [`Store::prune_created`]).
    async fn prune_on(
        &self,
        conn: &mut Conn,
        shard: u32,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let created = self.keys.created(shard);
        let old: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&created)
            .arg("-inf")
            .arg(cutoff_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(conn)
            .await?;
        if old.is_empty() {
            return Ok(0);
        }
        let mut inv = self.scripts.prune_created.invoke();
        inv.key(&created); // KEYS[1]
        for gid in &old {
            inv.key(self.keys.trans(gid).trans); // KEYS[1+i]
        }
        inv.arg(cutoff_ms);
        for gid in &old {
            inv.arg(gid);
        }
        let reply = self.eval_on(conn, &inv).await?;
        let (code, rest) = split_reply(&reply)?;
        if code != ScriptCode::Ok {
            return Err(unexpected(inv.of.name, code));
        }
        Ok(rest.first().map(int).transpose()?.unwrap_or(0) as usize)
    }

    /// [`Store::prune_created`] for each of `shards`, pipelined on one
    /// connection of the read pool; one result per shard, in the order of
    /// `shards`.
    pub async fn prune_shards(
        &self,
        shards: &[u32],
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
        self.on_each_shard(shards, |mut conn, shard| async move {
            self.prune_on(&mut conn, shard, cutoff_ms, limit).await
        })
        .await
    }
}
