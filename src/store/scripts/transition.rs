//! The wrapper of `lua/transition.lua`.

use crate::domain::{GlobalStatus, TransKind};
use crate::store::codec::{
    decode_trans, first_kind, first_status, int, split_reply, unexpected, DecodeError, ScriptCode,
};
use crate::store::{Leased, Store, StoreError};

impl Store {
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
            ScriptCode::KindConflict => Err(StoreError::KindConflict(first_kind(rest)?)),
            ScriptCode::Conflict => Err(StoreError::Conflict {
                expected,
                actual: first_status(rest)?,
            }),
            other => Err(unexpected("transition", other)),
        }
    }
}
