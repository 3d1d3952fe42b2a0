//! The wrapper of `lua/create_trans.lua`.

use crate::domain::{GlobalStatus, Trans, TransKind};
use crate::store::codec::{first_text, split_reply, text, unexpected, DecodeError, ScriptCode};
use crate::store::{Created, Store, StoreError};

impl Store {
    /// `lua/create_trans.lua`: stores `t` (its status, epoch and owner as
    /// given), indexes it, and schedules it at `due_ms` when given; with
    /// `redis.min_replicas_ack` set, a new one is confirmed by the replicas
    /// before this returns ([`StoreError::NotReplicated`] otherwise).
    pub async fn create_trans(
        &self,
        t: &Trans,
        epoch: u64,
        due_ms: Option<u64>,
    ) -> Result<Created, StoreError> {
        let k = self.keys.trans(&t.gid);
        let fields = crate::store::codec::trans_fields(t, epoch);
        let mut inv = self.scripts.create_trans.invoke();
        inv.key(&k.trans) // KEYS[1]
            .key(&k.branches) // KEYS[2]
            .key(&k.due) // KEYS[3]
            .key(&k.created); // KEYS[4]
        inv.arg(&t.gid)
            .arg(t.create_ms)
            .arg(due_ms.map(|d| d.to_string()).unwrap_or_default())
            .arg(fields.len());
        for (f, v) in &fields {
            inv.arg(*f).arg(v);
        }
        for b in &t.branches {
            inv.arg(b.field())
                .arg(crate::store::codec::branch_row(b, t.create_ms));
        }
        let reply = self.eval(&inv).await?;
        let (code, rest) = split_reply(&reply)?;
        match code {
            ScriptCode::Ok => {
                // unconfirmed, it is stored all the same and goes on as if
                // acknowledged (a submitted one once its lease runs out)
                self.confirm(&k.trans).await?;
                Ok(Created::New)
            }
            ScriptCode::Exists => {
                let status = first_text(rest)?;
                let kind = rest.get(1).map(text).transpose()?.unwrap_or_default();
                Ok(Created::Exists(
                    GlobalStatus::parse(&status)
                        .ok_or_else(|| DecodeError(format!("status {status:?}")))?,
                    TransKind::parse(&kind).ok_or_else(|| DecodeError(format!("kind {kind:?}")))?,
                ))
            }
            other => Err(unexpected(inv.of.name, other)),
        }
    }
}
