//! The wrapper of `lua/set_aside.lua`.

use crate::store::codec::{split_reply, unexpected, ScriptCode};
use crate::store::{Store, StoreError};

impl Store {
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
        let mut inv = self.scripts.set_aside.invoke();
        inv.key(self.keys.due(shard)) // KEYS[1]
            .key(self.keys.trans(gid).trans) // KEYS[2]
            .key(self.keys.aside(shard)); // KEYS[3]
        inv.arg(gid).arg(epoch).arg(now_ms).arg(why);
        let reply = self.eval(&inv).await?;
        match split_reply(&reply)?.0 {
            ScriptCode::Ok => Ok(true),
            ScriptCode::StaleEpoch => Ok(false),
            other => Err(unexpected(inv.of.name, other)),
        }
    }
}
