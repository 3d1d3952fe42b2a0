//! The sub-transaction barrier (contract §6): makes a branch handler safe
//! against repeated requests, null compensation (a cancel or compensate
//! that arrives although its try or action never ran) and hanging (a try or
//! action that arrives after its cancel or compensate).
//!
//! The SQL barrier records one row per (gid, branch_id, op, barrier_id) in
//! the business database, inside the business's own local transaction, and
//! decides from the inserted-row counts whether the business code runs. The
//! Redis barrier does the same with keys, in one script that also adjusts a
//! business amount.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::future::BoxFuture;
use sqlx::{MySql, MySqlConnection, PgConnection, Pool, Postgres};

use crate::error::{Error, Result};

/// The default barrier table, as dtm names it.
///
/// ```
/// assert_eq!(dtx_client::barrier::DEFAULT_TABLE, "dtm_barrier.barrier");
/// ```
pub const DEFAULT_TABLE: &str = "dtm_barrier.barrier";

/// DDL of the barrier table for PostgreSQL (schema `dtm_barrier`), as
/// shipped in `client/sql/barrier.postgres.sql`. Prefer
/// [`postgres_ddl`], which also renames the table.
///
/// ```
/// assert!(dtx_client::barrier::POSTGRES_DDL.contains("uniq_barrier"));
/// ```
pub const POSTGRES_DDL: &str = include_str!("../sql/barrier.postgres.sql");

/// DDL of the barrier table for MySQL and MariaDB (database `dtm_barrier`),
/// as shipped in `client/sql/barrier.mysql.sql`. Prefer [`mysql_ddl`],
/// which also renames the table.
///
/// ```
/// assert!(dtx_client::barrier::MYSQL_DDL.contains("uniq_barrier"));
/// ```
pub const MYSQL_DDL: &str = include_str!("../sql/barrier.mysql.sql");

/// The PostgreSQL DDL statements for a barrier table named `table`
/// (`schema.table` or a bare name), one statement per item, to run in order.
///
/// ```
/// let stmts = dtx_client::barrier::postgres_ddl("barrier");
/// assert!(stmts.iter().all(|s| !s.contains("dtm_barrier")));
/// assert!(stmts.last().unwrap().contains("CREATE TABLE IF NOT EXISTS barrier"));
/// ```
pub fn postgres_ddl(table: &str) -> Vec<String> {
    ddl_for(POSTGRES_DDL, table)
}

/// The MySQL/MariaDB DDL statements for a barrier table named `table`
/// (`database.table` or a bare name).
///
/// ```
/// let stmts = dtx_client::barrier::mysql_ddl("shop.barrier");
/// assert!(stmts[0].contains("CREATE DATABASE IF NOT EXISTS shop"));
/// ```
pub fn mysql_ddl(table: &str) -> Vec<String> {
    ddl_for(MYSQL_DDL, table)
}

/// Splits a DDL file into statements with `dtm_barrier.barrier` renamed;
/// the schema statement is dropped for a bare table name.
fn ddl_for(ddl: &str, table: &str) -> Vec<String> {
    let schema = table.split_once('.').map(|(s, _)| s);
    let without_comments: String = ddl
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .map(|l| format!("{l}\n"))
        .collect();
    without_comments
        .split(';')
        .filter(|stmt| !stmt.trim().is_empty())
        .filter_map(|stmt| {
            if stmt.contains(DEFAULT_TABLE) {
                Some(stmt.replace(DEFAULT_TABLE, table).trim().to_owned())
            } else {
                // the CREATE SCHEMA / CREATE DATABASE statement
                schema.map(|s| stmt.replace("dtm_barrier", s).trim().to_owned())
            }
        })
        .collect()
}

/// Maps an op to the op it undoes: the row a null compensation inserts.
pub(crate) fn origin_op(op: &str) -> Option<&'static str> {
    match op {
        "cancel" => Some("try"),
        "compensate" => Some("action"),
        "rollback" => Some("action"),
        _ => None,
    }
}

/// The barrier of one branch request, built from the request's `gid`,
/// `trans_type`, `branch_id` and `op`. Each call through it uses the next
/// barrier id (`01`, `02`, ...), so one handler may make several guarded
/// calls.
///
/// ```
/// use dtx_client::BranchBarrier;
/// let b = BranchBarrier::new("saga", "gid-1", "01", "action");
/// assert_eq!(b.op(), "action");
/// ```
#[derive(Debug)]
pub struct BranchBarrier {
    trans_type: String,
    gid: String,
    branch_id: String,
    op: String,
    table: Cow<'static, str>,
    calls: AtomicU32,
}

impl BranchBarrier {
    /// A barrier for the branch request (trans_type, gid, branch_id, op),
    /// on the table [`DEFAULT_TABLE`].
    ///
    /// ```
    /// let b = dtx_client::BranchBarrier::new("tcc", "g", "01", "try");
    /// assert_eq!(b.gid(), "g");
    /// ```
    pub fn new(trans_type: &str, gid: &str, branch_id: &str, op: &str) -> Self {
        Self {
            trans_type: trans_type.to_owned(),
            gid: gid.to_owned(),
            branch_id: branch_id.to_owned(),
            op: op.to_owned(),
            table: Cow::Borrowed(DEFAULT_TABLE),
            calls: AtomicU32::new(0),
        }
    }

    /// Uses another barrier table (`schema.table` or a bare name, trusted:
    /// it is put into the SQL text).
    ///
    /// ```
    /// let b = dtx_client::BranchBarrier::new("tcc", "g", "01", "try").with_table("barrier");
    /// assert_eq!(b.table(), "barrier");
    /// ```
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = Cow::Owned(table.into());
        self
    }

    /// The transaction type.
    ///
    /// ```
    /// assert_eq!(dtx_client::BranchBarrier::new("tcc", "g", "01", "try").trans_type(), "tcc");
    /// ```
    pub fn trans_type(&self) -> &str {
        &self.trans_type
    }

    /// The gid.
    ///
    /// ```
    /// assert_eq!(dtx_client::BranchBarrier::new("tcc", "g", "01", "try").gid(), "g");
    /// ```
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// The branch id.
    ///
    /// ```
    /// assert_eq!(dtx_client::BranchBarrier::new("tcc", "g", "01", "try").branch_id(), "01");
    /// ```
    pub fn branch_id(&self) -> &str {
        &self.branch_id
    }

    /// The op (`try`, `confirm`, `cancel`, `action`, `compensate`, `msg`, ...).
    ///
    /// ```
    /// assert_eq!(dtx_client::BranchBarrier::new("tcc", "g", "01", "cancel").op(), "cancel");
    /// ```
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The barrier table name.
    ///
    /// ```
    /// assert_eq!(dtx_client::BranchBarrier::new("tcc", "g", "01", "try").table(), "dtm_barrier.barrier");
    /// ```
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The next barrier id: `01`, `02`, ...
    pub(crate) fn next_barrier_id(&self) -> String {
        format!("{:02}", self.calls.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// What the inserted-row counts decided (contract §6.2 e).
fn decide(op: &str, origin_affected: u64, current_affected: u64) -> Result<bool> {
    if op == "msg" && current_affected == 0 {
        return Err(Error::Duplicated);
    }
    let null_compensation =
        matches!(op, "cancel" | "compensate" | "rollback") && origin_affected > 0;
    Ok(!(null_compensation || current_affected == 0))
}

/// Generates the SQL barrier methods for one database.
macro_rules! sql_barrier {
    (
        db = $db:ty, conn = $conn:ty, name = $name:literal,
        call = $call:ident, query_prepared = $qp:ident,
        insert = $insert:expr, select = $select:literal
    ) => {
        impl BranchBarrier {
            #[doc = concat!("Runs `busi` inside a local ", $name, " transaction guarded by the")]
            /// barrier. The business code is skipped (and `Ok` returned) for a
            /// repeated request, a null compensation or a hanging try/action;
            /// otherwise the transaction commits when `busi` returns `Ok` and
            /// rolls back when it returns an error or panics. For op `msg` a
            /// repeated call returns [`Error::Duplicated`].
            ///
            /// ```no_run
            #[doc = concat!("# async fn f(pool: sqlx::Pool<sqlx::", stringify!($db), ">) -> dtx_client::Result<()> {")]
            /// let barrier = dtx_client::BranchBarrier::new("saga", "g", "01", "action");
            #[doc = concat!("barrier.", stringify!($call), "(&pool, |tx| Box::pin(async move {")]
            ///     sqlx::query("UPDATE account SET balance = balance - 30 WHERE id = 1")
            ///         .execute(&mut *tx)
            ///         .await?;
            ///     Ok(())
            /// }))
            /// .await?;
            /// # Ok(()) }
            /// ```
            pub async fn $call<F>(&self, pool: &Pool<$db>, busi: F) -> Result<()>
            where
                F: for<'c> FnOnce(&'c mut $conn) -> BoxFuture<'c, Result<()>>,
            {
                let bid = self.next_barrier_id();
                let insert = $insert.replace("{table}", &self.table);
                let mut tx = pool.begin().await?;
                let origin_affected = match origin_op(&self.op) {
                    Some(origin) => sqlx::query(&insert)
                        .bind(&self.trans_type)
                        .bind(&self.gid)
                        .bind(&self.branch_id)
                        .bind(origin)
                        .bind(&bid)
                        .bind(&self.op)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected(),
                    None => 0,
                };
                let current_affected = sqlx::query(&insert)
                    .bind(&self.trans_type)
                    .bind(&self.gid)
                    .bind(&self.branch_id)
                    .bind(&self.op)
                    .bind(&bid)
                    .bind(&self.op)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                // An error here drops `tx`, which rolls it back.
                if !decide(&self.op, origin_affected, current_affected)? {
                    tx.commit().await?;
                    return Ok(());
                }
                busi(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            #[doc = concat!("Answers a msg check-back from the ", $name, " barrier table")]
            /// (contract §6.3): `Ok` when the msg's local transaction committed,
            /// [`Error::Failure`] when it did not, which also stops it from ever
            /// committing. Use a barrier built from the check-back request.
            ///
            /// ```no_run
            #[doc = concat!("# async fn f(pool: sqlx::Pool<sqlx::", stringify!($db), ">) -> dtx_client::Result<()> {")]
            /// let barrier = dtx_client::BranchBarrier::new("msg", "g", "00", "msg");
            #[doc = concat!("barrier.", stringify!($qp), "(&pool).await?;")]
            /// # Ok(()) }
            /// ```
            pub async fn $qp(&self, pool: &Pool<$db>) -> Result<()> {
                let insert = $insert.replace("{table}", &self.table);
                sqlx::query(&insert)
                    .bind("msg")
                    .bind(&self.gid)
                    .bind(MSG_BRANCH_ID)
                    .bind(MSG_OP)
                    .bind(MSG_BARRIER_ID)
                    .bind("rollback")
                    .execute(pool)
                    .await?;
                let select = format!($select, table = self.table);
                let reason: String = sqlx::query_scalar(&select)
                    .bind(&self.gid)
                    .bind(MSG_BRANCH_ID)
                    .bind(MSG_OP)
                    .bind(MSG_BARRIER_ID)
                    .fetch_one(pool)
                    .await?;
                if reason == "rollback" {
                    return Err(Error::failure("the local transaction did not commit"));
                }
                Ok(())
            }
        }
    };
}

/// Branch id of a msg's own local transaction and of its check-back.
pub(crate) const MSG_BRANCH_ID: &str = "00";
/// Op of a msg's own local transaction and of its check-back.
pub(crate) const MSG_OP: &str = "msg";
/// Barrier id of a msg's own local transaction.
const MSG_BARRIER_ID: &str = "01";

/// Inserts a barrier row unless it exists (PostgreSQL); `{table}` is
/// replaced by the barrier table. Binds: trans_type, gid, branch_id, op,
/// barrier_id, reason.
pub(crate) const POSTGRES_INSERT: &str =
    "INSERT INTO {table} (trans_type, gid, branch_id, op, barrier_id, reason) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";

/// [`POSTGRES_INSERT`] for MySQL/MariaDB.
pub(crate) const MYSQL_INSERT: &str =
    "INSERT IGNORE INTO {table} (trans_type, gid, branch_id, op, barrier_id, reason) \
     VALUES (?, ?, ?, ?, ?, ?)";

sql_barrier!(
    db = Postgres, conn = PgConnection, name = "PostgreSQL",
    call = call_postgres, query_prepared = query_prepared_postgres,
    insert = POSTGRES_INSERT,
    select = "SELECT reason FROM {table} WHERE gid = $1 AND branch_id = $2 AND op = $3 AND barrier_id = $4"
);

sql_barrier!(
    db = MySql,
    conn = MySqlConnection,
    name = "MySQL/MariaDB",
    call = call_mysql,
    query_prepared = query_prepared_mysql,
    insert = MYSQL_INSERT,
    select =
        "SELECT reason FROM {table} WHERE gid = ? AND branch_id = ? AND op = ? AND barrier_id = ?"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_request_is_skipped() {
        assert!(!decide("action", 0, 0).unwrap());
        assert!(decide("action", 0, 1).unwrap());
    }

    #[test]
    fn null_compensation_is_skipped() {
        assert!(!decide("compensate", 1, 1).unwrap());
        assert!(!decide("cancel", 1, 1).unwrap());
        assert!(decide("cancel", 0, 1).unwrap());
    }

    #[test]
    fn repeated_msg_is_duplicated() {
        assert!(matches!(decide("msg", 0, 0), Err(Error::Duplicated)));
    }

    #[test]
    fn ddl_renames_the_schema() {
        let pg = postgres_ddl("s1.b1");
        assert!(pg[0].contains("CREATE SCHEMA IF NOT EXISTS s1"));
        assert!(pg.iter().any(|s| s.contains("s1.b1")));
    }
}
