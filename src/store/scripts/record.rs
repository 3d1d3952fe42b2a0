//! The wrapper of `lua/record.lua`.

use crate::domain::GlobalStatus;
use crate::store::codec::{first_status, first_text, int, split_reply, unexpected, ScriptCode};
use crate::store::{Record, Schedule, Store, StoreError};

impl Store {
    /// `lua/record.lua`: writes `rec` for `gid` (created at `create_ms`),
    /// held at `epoch` in `expected` status.
    #[allow(clippy::too_many_arguments)]
    pub async fn record(
        &self,
        gid: &str,
        create_ms: u64,
        epoch: u64,
        expected: GlobalStatus,
        now_ms: u64,
        owner: &str,
        rec: &Record,
    ) -> Result<(), StoreError> {
        let k = self.keys.trans(gid);
        let (mode, when) = match rec.schedule {
            Schedule::Hold(until) => ("hold", until),
            Schedule::Release(at) => ("release", at),
            Schedule::Park => ("park", 0),
            Schedule::Finish => ("finish", self.finished_ttl_ms),
        };
        const NAME: &str = "record";
        let mut inv = self.scripts.record.prepare_invoke();
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
        let reply = self.eval(NAME, &inv).await?;
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
            other => Err(unexpected("record", other)),
        }
    }
}
