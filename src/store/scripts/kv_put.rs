//! The wrapper of `lua/kv_put.lua`.

use crate::store::codec::{int, split_reply, unexpected, ScriptCode};
use crate::store::{Store, StoreError};

impl Store {
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
        let mut inv = self.scripts.kv_put.invoke();
        inv.key(&data) // KEYS[1]
            .key(&keys); // KEYS[2]
        inv.arg(key)
            .arg(expected)
            .arg(now_ms)
            .arg(if value.is_some() { "put" } else { "delete" })
            .arg(value.unwrap_or_default());
        let reply = self.eval(&inv).await?;
        let (code, rest) = split_reply(&reply)?;
        match code {
            ScriptCode::Ok => Ok(rest.first().map(int).transpose()?.unwrap_or(0) as u64),
            ScriptCode::NotFound => Err(StoreError::NotFound),
            ScriptCode::Conflict => Err(StoreError::VersionConflict {
                expected,
                actual: rest.first().map(int).transpose()?.unwrap_or(0) as u64,
            }),
            other => Err(unexpected(inv.of.name, other)),
        }
    }
}
