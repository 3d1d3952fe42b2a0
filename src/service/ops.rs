//! Branch registration (tcc, xa, workflow) and the operator's levers.

use std::collections::BTreeMap;

use tracing::info;

use super::trans::{finished, kind_conflict};
use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    build_registered, build_registered_with, decide, validate_gid, Command, Decision, TransKind,
};
use crate::store::{LimitKind, Move, StoreError};

/// A `registerBranch` call: the flat string fields clients send
/// (contract §3.3).
#[derive(Debug, Clone)]
pub struct RegisterBranch {
    /// The prepared transaction.
    pub gid: String,
    /// The kind the call names; it must be the stored one.
    pub kind: TransKind,
    /// `branch_id`, `data`, and the kind's URLs or workflow fields.
    pub fields: BTreeMap<String, String>,
    /// The row data as bytes (gRPC's `BusiPayload`), read instead of
    /// `fields["data"]` when given.
    pub data: Option<Vec<u8>>,
}

impl Service {
    /// Adds the rows of one branch to a prepared tcc, xa or workflow.
    pub async fn register_branch(&self, call: RegisterBranch) -> ServiceResult {
        let RegisterBranch {
            gid,
            kind,
            fields,
            data,
        } = call;
        validate_gid(&gid, self.limits.max_gid_len)?;
        let engine = &self.engine;
        let now = engine.now_ms();
        let rows = match &data {
            Some(data) => build_registered_with(kind, &fields, data, now)?,
            None => build_registered(kind, &fields, now)?,
        };
        rows.iter().try_for_each(|b| self.check_allowed(&b.url))?;
        match engine
            .store
            .register_branch(&gid, kind, &rows, &self.limits, now)
            .await
        {
            Ok(()) => {
                info!(gid = %gid, branch = %rows[0].id, "branch registered");
                Ok(())
            }
            Err(StoreError::NotFound) => Err(ServiceError::NotFound(format!(
                "no transaction with gid {gid}"
            ))),
            Err(StoreError::Conflict { .. }) => Err(ServiceError::Failure(format!(
                "no trans with gid: {gid} status: prepared found FAILURE"
            ))),
            Err(StoreError::BranchConflict(field)) => Err(ServiceError::Conflict(format!(
                "branch {field} of {gid} is registered already"
            ))),
            Err(StoreError::KindConflict(actual)) => Err(kind_conflict(&gid, actual, kind)),
            Err(StoreError::Limit { what, held }) => {
                let added: usize = rows.iter().map(|b| b.data.len()).sum();
                Err(match what {
                    LimitKind::Rows => self.limits.too_many_branches(held as usize + rows.len()),
                    LimitKind::Bytes => self.limits.too_many_bytes(held as usize + added),
                }
                .into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Ends any unfinished transaction as `failed`, taking its lease over
    /// so a replica still driving it can no longer write.
    pub async fn force_stop(&self, gid: &str, rollback_reason: &str) -> ServiceResult {
        validate_gid(gid, self.limits.max_gid_len)?;
        let engine = &self.engine;
        let reason = if rollback_reason.is_empty() {
            "force stopped".to_owned()
        } else {
            rollback_reason.to_owned()
        };
        // the status may move between the read and the write: try again then
        for _ in 0..5 {
            let t =
                engine.store.load(gid).await?.ok_or_else(|| {
                    ServiceError::NotFound(format!("no transaction with gid {gid}"))
                })?;
            let Ok(Decision { expected, to, .. }) = decide(t.kind, t.status, Command::ForceStop)
            else {
                return Err(ServiceError::Failure(format!(
                    "global transaction force stop error. status: {}. error: FAILURE",
                    t.status
                )));
            };
            let now = engine.now_ms();
            let fields = [("reason", reason.clone()), ("rollback_ms", now.to_string())];
            match engine
                .store
                .transition(
                    &Move {
                        gid: &t.gid,
                        kind: None,
                        from: expected,
                        to,
                        hold_until_ms: None,
                        fields: &fields,
                    },
                    engine.stamp(now),
                )
                .await
            {
                Ok(l) => {
                    info!(gid = %t.gid, from = %t.status, "force stopped");
                    finished(&l.trans, now);
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Ongoing(
            "the transaction keeps changing; force stop again".into(),
        ))
    }

    /// Makes one unfinished transaction due now (dtm's has no effect on
    /// Redis; ours reschedules it).
    pub async fn reset_next_cron_time(&self, gid: &str) -> ServiceResult {
        validate_gid(gid, self.limits.max_gid_len)?;
        let engine = &self.engine;
        let store = &engine.store;
        let t = store
            .load(gid)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no transaction with gid {gid}")))?;
        if t.status.is_final() {
            return Err(ServiceError::Failure(format!(
                "transaction is {}, nothing to schedule. FAILURE",
                t.status
            )));
        }
        let now = engine.now_ms();
        let shard = store.keys().shard_of(&t.gid);
        store
            .reset_due(shard, std::slice::from_ref(&t.gid), now, None)
            .await?;
        engine.note_due(&t.gid, now);
        Ok(())
    }

    /// Makes due now up to `limit` transactions scheduled more than
    /// `timeout_s` seconds ahead (`resetCronTime`); returns how many, and
    /// whether more are left.
    pub async fn reset_cron_time(
        &self,
        timeout_s: u64,
        limit: usize,
    ) -> ServiceResult<(usize, bool)> {
        let engine = &self.engine;
        let now = engine.now_ms();
        let floor = now.saturating_add(timeout_s.saturating_mul(1000));
        let (count, remaining) = engine.store.reset_due_after(floor, now, limit).await?;
        if count > 0 {
            engine.note_due_everywhere(now);
        }
        Ok((count, remaining))
    }
}
