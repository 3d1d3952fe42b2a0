//! The wrapper of `lua/register_branch.lua`.

use crate::domain::{GlobalStatus, TransKind};
use crate::store::codec::{
    first_kind, first_status, first_text, int, split_reply, unexpected, ScriptCode,
};
use crate::store::{LimitKind, Store, StoreError};

impl Store {
    /// `lua/register_branch.lua`: adds `rows` to the prepared transaction
    /// `gid`, numbering them after the rows it has.
    pub async fn register_branch(
        &self,
        gid: &str,
        kind: TransKind,
        rows: &[crate::domain::Branch],
        limits: &crate::domain::Limits,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let k = self.keys.trans(gid);
        let mut inv = self.scripts.register_branch.invoke();
        inv.key(&k.trans) // KEYS[1]
            .key(&k.branches); // KEYS[2]
        let bytes: usize = rows.iter().map(|b| b.data.len()).sum();
        inv.arg(now_ms)
            .arg(kind.as_str())
            .arg(limits.max_branches)
            .arg(limits.max_payload_bytes)
            .arg(bytes);
        for b in rows {
            let (status, tail) = crate::store::codec::branch_row_parts(b);
            inv.arg(b.field()).arg(status).arg(tail);
        }
        let reply = self.eval(&inv).await?;
        let (code, rest) = split_reply(&reply)?;
        match code {
            ScriptCode::Ok => Ok(()),
            ScriptCode::NotFound => Err(StoreError::NotFound),
            ScriptCode::KindConflict => Err(StoreError::KindConflict(first_kind(rest)?)),
            ScriptCode::Conflict => Err(StoreError::Conflict {
                expected: GlobalStatus::Prepared,
                actual: first_status(rest)?,
            }),
            ScriptCode::BranchConflict => Err(StoreError::BranchConflict(first_text(rest)?)),
            ScriptCode::Limit => Err(StoreError::Limit {
                what: match first_text(rest)?.as_str() {
                    "rows" => LimitKind::Rows,
                    "bytes" => LimitKind::Bytes,
                    other => {
                        return Err(
                            crate::store::codec::DecodeError(format!("limit {other:?}")).into()
                        )
                    }
                },
                held: rest.get(1).map(int).transpose()?.unwrap_or_default() as u64,
            }),
            other => Err(unexpected(inv.of.name, other)),
        }
    }
}
