//! The wrapper of `lua/claim_due.lua`.

use crate::store::codec::{int, split_reply, text, unexpected, DecodeError, ScriptCode};
use crate::store::{Claim, Store, StoreError};

impl Store {
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
        let mut pooled = self.read_conn().await?;
        self.claim_on(
            &mut pooled.conn,
            shard,
            now_ms,
            lease_until_ms,
            owner,
            limit,
        )
        .await
    }

    /// The claim of one shard on `conn` (the wrapper proper: the lint
    /// reads it with [`Store::claim_due`]).
    async fn claim_on(
        &self,
        conn: &mut crate::store::Conn,
        shard: u32,
        now_ms: u64,
        lease_until_ms: u64,
        owner: &str,
        limit: usize,
    ) -> Result<Claim, StoreError> {
        let due_key = self.keys.due(shard);
        let head: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&due_key)
            .arg(0)
            .arg(limit.max(1) as i64 - 1)
            .arg("WITHSCORES")
            .query_async(conn)
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
        let mut inv = self.scripts.claim_due.invoke();
        inv.key(&due_key); // KEYS[1]
        for gid in &candidates {
            inv.key(self.keys.trans(gid).trans); // KEYS[1+i]
        }
        inv.arg(now_ms).arg(lease_until_ms).arg(owner);
        for gid in &candidates {
            inv.arg(*gid);
        }
        let reply = self.eval_on(conn, &inv).await?;
        let (code, rest) = split_reply(&reply)?;
        if code != ScriptCode::Ok {
            return Err(unexpected(inv.of.name, code));
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

    /// [`Store::claim_due`] for each of `shards` at once, pipelined on one
    /// connection of the read pool (a claim reads up to `limit` entries and
    /// may lease as many: never on the hot path's connection); one result
    /// per shard, in the order of `shards`.
    pub async fn claim_shards(
        &self,
        shards: &[u32],
        now_ms: u64,
        lease_until_ms: u64,
        owner: &str,
        limit: usize,
    ) -> Result<Vec<Result<Claim, StoreError>>, StoreError> {
        self.on_each_shard(shards, |mut conn, shard| async move {
            self.claim_on(&mut conn, shard, now_ms, lease_until_ms, owner, limit)
                .await
        })
        .await
    }
}
