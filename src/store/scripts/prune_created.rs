//! The wrapper of `lua/prune_created.lua`.

use crate::store::codec::{int, split_reply, unexpected, ScriptCode};
use crate::store::{Store, StoreError};

impl Store {
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
        let mut inv = self.scripts.prune_created.invoke();
        inv.key(&created); // KEYS[1]
        for gid in &old {
            inv.key(self.keys.trans(gid).trans); // KEYS[1+i]
        }
        inv.arg(cutoff_ms);
        for gid in &old {
            inv.arg(gid);
        }
        let reply = self.eval(&inv).await?;
        let (code, rest) = split_reply(&reply)?;
        if code != ScriptCode::Ok {
            return Err(unexpected(inv.of.name, code));
        }
        Ok(rest.first().map(int).transpose()?.unwrap_or(0) as usize)
    }
}
