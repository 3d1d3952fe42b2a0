//! The wrapper of `lua/transition.lua`.

use crate::domain::TransKind;
use crate::store::codec::{
    decode_trans, first_kind, first_status, int, split_reply, unexpected, DecodeError, ScriptCode,
};
use crate::store::{Leased, Move, Stamp, Store, StoreError};

impl Store {
    /// `lua/transition.lua`: makes the move `mv` for an API call, taking
    /// the lease over (the epoch always moves on). With
    /// `mv.hold_until_ms` the caller holds the lease and drives the
    /// transaction; without, it is finished. Returns the transaction after
    /// the change, leased at the new epoch, once the replicas confirmed it
    /// when `redis.min_replicas_ack` asks for that.
    pub async fn transition(&self, mv: &Move<'_>, at: Stamp<'_>) -> Result<Leased, StoreError> {
        let Move {
            gid,
            kind,
            from: expected,
            to,
            hold_until_ms,
            fields,
        } = *mv;
        let Stamp { owner, now_ms } = at;
        let k = self.keys.trans(gid);
        let (mode, when) = match hold_until_ms {
            Some(until) => ("hold", until),
            None => ("finish", self.finished_ttl_ms),
        };
        let mut inv = self.scripts.transition.invoke();
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
        let reply = self.eval(&inv).await?;
        let (code, rest) = split_reply(&reply)?;
        match code {
            ScriptCode::Ok => {
                let [epoch, trans, branches] = rest else {
                    return Err(DecodeError("transition: truncated reply".into()).into());
                };
                let (trans, _) = decode_trans(gid, trans, branches)?;
                self.confirm(&k.trans).await?;
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
            other => Err(unexpected(inv.of.name, other)),
        }
    }
}
