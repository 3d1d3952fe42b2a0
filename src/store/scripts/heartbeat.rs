//! The wrapper of `lua/heartbeat.lua`.

use crate::store::codec::{split_reply, text, unexpected, ScriptCode};
use crate::store::{Store, StoreError};

impl Store {
    /// Keeps `owner` in the deployment's replica set until `alive_until_ms`
    /// (`None`: takes it out) and returns the ids of every replica alive at
    /// `now_ms`, sorted (`lua/heartbeat.lua`).
    pub async fn heartbeat(
        &self,
        owner: &str,
        now_ms: u64,
        alive_until_ms: Option<u64>,
    ) -> Result<Vec<String>, StoreError> {
        let mut inv = self.scripts.heartbeat.invoke();
        inv.key(self.keys.replicas()); // KEYS[1]
        inv.arg(now_ms)
            .arg(alive_until_ms.map(|t| t.to_string()).unwrap_or_default())
            .arg(owner);
        let reply = self.eval(&inv).await?;
        let (code, rest) = split_reply(&reply)?;
        if code != ScriptCode::Ok {
            return Err(unexpected(inv.of.name, code));
        }
        let mut live = rest.iter().map(text).collect::<Result<Vec<_>, _>>()?;
        live.sort_unstable();
        Ok(live)
    }
}
