//! The Redis barrier (contract §6.4): one script checks the branch's barrier
//! keys and adjusts an integer business key, atomically.
//!
//! Every key one call touches shares one hash tag: the barrier keys carry
//! the hash tag of the business key (or the whole business key when it has
//! none), so the script runs on Redis Cluster without CROSSSLOT errors.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::Script;

use crate::barrier::{BranchBarrier, MSG_BRANCH_ID, MSG_OP};
use crate::error::{Error, Result};

static CHECK_ADJUST_AMOUNT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/check_adjust_amount.lua")));
static QUERY_PREPARED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/query_prepared.lua")));

/// Script reply codes, as listed in the scripts' headers.
const ADJUSTED: i64 = 0;
const DUPLICATE: i64 = 1;
const NULL_COMPENSATION: i64 = 2;
const FAILURE: i64 = 3;

/// The hash tag Redis Cluster hashes for `key`: the text between the first
/// `{` and the next `}` when non-empty, else the whole key.
///
/// ```
/// use dtx_client::redis_barrier::hash_tag;
/// assert_eq!(hash_tag("{user1}:balance"), "user1");
/// assert_eq!(hash_tag("balance:7"), "balance:7");
/// assert_eq!(hash_tag("a{}b"), "a{}b");
/// ```
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The barrier key of (gid, branch_id, op, barrier_id), in the slot of
/// `business_key`.
///
/// ```
/// let k = dtx_client::redis_barrier::barrier_key("{u1}:bal", "g", "01", "action", "01");
/// assert_eq!(k, "dtx-barrier:{u1}:g:01:action:01");
/// ```
pub fn barrier_key(business_key: &str, gid: &str, branch_id: &str, op: &str, bid: &str) -> String {
    format!(
        "dtx-barrier:{{{}}}:{gid}:{branch_id}:{op}:{bid}",
        hash_tag(business_key)
    )
}

impl BranchBarrier {
    /// Adds `amount` (may be negative) to the integer at `key`, guarded by
    /// the barrier: a repeated request, a null compensation or a hanging
    /// action changes nothing and returns `Ok` (for op `msg`, a repeat is
    /// [`Error::Duplicated`]). A missing key, or a result below zero, is
    /// [`Error::Failure`] and changes nothing. Barrier keys live
    /// `expire_s` seconds.
    ///
    /// ```no_run
    /// # async fn f(mut conn: redis::aio::MultiplexedConnection) -> dtx_client::Result<()> {
    /// let barrier = dtx_client::BranchBarrier::new("saga", "g", "01", "action");
    /// barrier.redis_check_adjust_amount(&mut conn, "{acct1}:balance", -30, 86400).await?;
    /// # Ok(()) }
    /// ```
    pub async fn redis_check_adjust_amount<C: ConnectionLike>(
        &self,
        conn: &mut C,
        key: &str,
        amount: i64,
        expire_s: u64,
    ) -> Result<()> {
        let bid = self.next_barrier_id();
        let current = barrier_key(key, self.gid(), self.branch_id(), self.op(), &bid);
        let origin = crate::barrier::origin_op(self.op());
        let origin_key = match origin {
            Some(o) => barrier_key(key, self.gid(), self.branch_id(), o, &bid),
            None => current.clone(),
        };
        let code: i64 = CHECK_ADJUST_AMOUNT
            .key(key) // KEYS[1]
            .key(&current) // KEYS[2]
            .key(&origin_key) // KEYS[3]
            .arg(amount) // ARGV[1]
            .arg(self.op()) // ARGV[2]
            .arg(if origin.is_some() { "1" } else { "0" }) // ARGV[3]
            .arg(expire_s) // ARGV[4]
            .invoke_async(conn)
            .await?;
        match code {
            ADJUSTED | NULL_COMPENSATION => Ok(()),
            DUPLICATE if self.op() == MSG_OP => Err(Error::Duplicated),
            DUPLICATE => Ok(()),
            FAILURE => Err(Error::failure(format!(
                "{key} is missing or would go below zero"
            ))),
            other => Err(Error::other(format!(
                "check_adjust_amount: unknown code {other}"
            ))),
        }
    }

    /// Answers a msg check-back from the Redis barrier: `Ok` when the msg's
    /// local operation (a [`BranchBarrier::redis_check_adjust_amount`] with
    /// op `msg` on `key`) ran, else [`Error::Failure`], after which it never
    /// will. `key` is the business key that operation used (any key with
    /// the same hash tag works).
    ///
    /// ```no_run
    /// # async fn f(mut conn: redis::aio::MultiplexedConnection) -> dtx_client::Result<()> {
    /// let barrier = dtx_client::BranchBarrier::new("msg", "g", "00", "msg");
    /// barrier.redis_query_prepared(&mut conn, "{acct1}:balance", 86400).await?;
    /// # Ok(()) }
    /// ```
    pub async fn redis_query_prepared<C: ConnectionLike>(
        &self,
        conn: &mut C,
        key: &str,
        expire_s: u64,
    ) -> Result<()> {
        let msg_key = barrier_key(key, self.gid(), MSG_BRANCH_ID, MSG_OP, "01");
        let code: i64 = QUERY_PREPARED
            .key(&msg_key) // KEYS[1]
            .arg(expire_s) // ARGV[1]
            .invoke_async(conn)
            .await?;
        match code {
            ADJUSTED => Ok(()),
            _ => Err(Error::failure("the local operation did not run")),
        }
    }
}
