//! The wrapper of `lua/reset_due.lua`.

use crate::store::codec::{int, split_reply, unexpected, ScriptCode};
use crate::store::{Store, StoreError};

impl Store {
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
        let mut inv = self.scripts.reset_due.invoke();
        inv.key(self.keys.due(shard)); // KEYS[1]
        for gid in gids {
            inv.key(self.keys.trans(gid).trans); // KEYS[1+i]
        }
        inv.arg(now_ms)
            .arg(floor_ms.map(|f| f.to_string()).unwrap_or_default());
        for gid in gids {
            inv.arg(gid);
        }
        let reply = self.eval(&inv).await?;
        let (code, rest) = split_reply(&reply)?;
        if code != ScriptCode::Ok {
            return Err(unexpected(inv.of.name, code));
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
}
