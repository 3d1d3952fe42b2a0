//! The typed inputs and outcomes of store calls.

use super::codec::DecodeError;
use crate::domain::{BranchStatus, GlobalStatus, Trans, TransKind};

/// How a record leaves the transaction's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Keep (or renew) the lease until this time, ms.
    Hold(u64),
    /// Give the lease up; due again at this time, ms.
    Release(u64),
    /// Give the lease up; not due until a client acts.
    Park,
    /// Finished: leave the due set and expire after the retention.
    Finish,
}

/// One write of a leased transaction's progress (`lua/record.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The new status, if it changes.
    pub status: Option<GlobalStatus>,
    /// Trans hash fields to set.
    pub fields: Vec<(&'static str, String)>,
    /// Branch rows to move: field, expected status, new status.
    pub branches: Vec<(String, BranchStatus, BranchStatus)>,
    /// What happens to the schedule.
    pub schedule: Schedule,
}

/// Who writes and when: the replica's owner id and the time of the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp<'a> {
    /// The writing replica.
    pub owner: &'a str,
    /// Now, ms.
    pub now_ms: u64,
}

/// The leased transaction a [`Record`] is written to, as its holder
/// knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held<'a> {
    /// Its gid.
    pub gid: &'a str,
    /// Its creation time, ms (for the age metric of a finish).
    pub create_ms: u64,
    /// The epoch of the holder's lease.
    pub epoch: u64,
    /// The status the holder last saw.
    pub status: GlobalStatus,
}

/// An API call's move of a transaction (`lua/transition.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move<'a> {
    /// Its gid.
    pub gid: &'a str,
    /// The kind it must be, when the call names one.
    pub kind: Option<TransKind>,
    /// The status it must be in.
    pub from: GlobalStatus,
    /// The status it moves to.
    pub to: GlobalStatus,
    /// With a time, the caller takes the lease until then and drives it;
    /// without, the transaction is finished.
    pub hold_until_ms: Option<u64>,
    /// Trans hash fields to set.
    pub fields: &'a [(&'static str, String)],
}

/// What `create_trans` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Stored.
    New,
    /// The gid is taken by a transaction in this status, of this kind.
    Exists(GlobalStatus, TransKind),
}

/// A transaction leased to this replica, with the epoch to write with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// The transaction as stored.
    pub trans: Trans,
    /// The lease epoch.
    pub epoch: u64,
}

/// What one `claim_due` call found in a shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// Transactions now leased to the caller, with their epochs; each is
    /// read on its own ([`Store::load`]).
    pub leased: Vec<(String, u64)>,
    /// The earliest due time left in the shard (ms), if any.
    pub next_due: Option<u64>,
}

/// One KV entry (dtm's `KVStore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// Category.
    pub cat: String,
    /// Key.
    pub key: String,
    /// Value (any text).
    pub value: String,
    /// Version, 1 at creation, +1 on every update.
    pub version: u64,
    /// Creation time, ms.
    pub create_ms: u64,
    /// Last update, ms.
    pub update_ms: u64,
}

pub(super) fn decode_kv(cat: &str, key: String, raw: &str) -> Result<KvEntry, DecodeError> {
    let mut parts = raw.splitn(4, '\t');
    let mut num = |what: &str| -> Result<u64, DecodeError> {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| DecodeError(format!("kv {what} of {key:?}")))
    };
    let version = num("version")?;
    let create_ms = num("create_ms")?;
    let update_ms = num("update_ms")?;
    Ok(KvEntry {
        cat: cat.to_owned(),
        value: parts.next().unwrap_or_default().to_owned(),
        key,
        version,
        create_ms,
        update_ms,
    })
}

/// Filters of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<GlobalStatus>,
    /// Only this kind.
    pub kind: Option<TransKind>,
    /// Created at or after, ms.
    pub created_from_ms: Option<u64>,
    /// Created at or before, ms.
    pub created_to_ms: Option<u64>,
}

/// Position in a listing: everything strictly older than (score, gid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time, ms.
    pub created_ms: u64,
    /// Gid (ties are ordered by gid, descending).
    pub gid: String,
}

impl Cursor {
    /// `<created_ms>-<gid>`
    pub fn encode(&self) -> String {
        format!("{}-{}", self.created_ms, self.gid)
    }

    /// Parses [`Cursor::encode`]'s format.
    pub fn decode(s: &str) -> Option<Self> {
        let (ms, gid) = s.split_once('-')?;
        Some(Self {
            created_ms: ms.parse().ok()?,
            gid: gid.to_owned(),
        })
    }
}
