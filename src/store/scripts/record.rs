//! The wrapper of `lua/record.lua`.

use crate::domain::GlobalStatus;
use crate::store::codec::{first_status, first_text, int, split_reply, unexpected, ScriptCode};
use crate::store::{Held, Record, Schedule, Stamp, Store, StoreError};

impl Store {
    /// `lua/record.lua`: writes `rec` to the transaction `held`, if its
    /// lease is still at `held.epoch` and its status `held.status`.
    pub async fn record(
        &self,
        held: &Held<'_>,
        at: Stamp<'_>,
        rec: &Record,
    ) -> Result<(), StoreError> {
        let Held {
            gid,
            create_ms,
            epoch,
            status: expected,
        } = *held;
        let Stamp { owner, now_ms } = at;
        let k = self.keys.trans(gid);
        let (mode, when) = match rec.schedule {
            Schedule::Hold(until) => ("hold", until),
            Schedule::Release(at) => ("release", at),
            Schedule::Park => ("park", 0),
            Schedule::Finish => ("finish", self.finished_ttl_ms),
        };
        let mut inv = self.scripts.record.invoke();
        inv.key(&k.trans) // KEYS[1]
            .key(&k.branches) // KEYS[2]
            .key(&k.due); // KEYS[3]
        inv.arg(gid)
            .arg(epoch)
            .arg(expected.as_str())
            .arg(rec.status.map(GlobalStatus::as_str).unwrap_or(""))
            .arg(now_ms)
            .arg(mode)
            .arg(when)
            .arg(owner)
            .arg(now_ms.saturating_sub(create_ms))
            .arg(rec.fields.len());
        for (f, v) in &rec.fields {
            inv.arg(*f).arg(v);
        }
        for (field, from, to) in &rec.branches {
            inv.arg(field).arg(from.as_str()).arg(to.as_str());
        }
        let reply = self.eval(&inv).await?;
        let (code, rest) = split_reply(&reply)?;
        match code {
            ScriptCode::Ok => Ok(()),
            ScriptCode::NotFound => Err(StoreError::NotFound),
            ScriptCode::StaleEpoch => Err(StoreError::StaleEpoch(
                rest.first().map(int).transpose()?.unwrap_or(0) as u64,
            )),
            ScriptCode::Conflict => Err(StoreError::Conflict {
                expected,
                actual: first_status(rest)?,
            }),
            ScriptCode::BranchConflict => Err(StoreError::BranchConflict(first_text(rest)?)),
            other => Err(unexpected(inv.of.name, other)),
        }
    }
}
