//! Deliberate defects, for the fault suite's self-check: built only with
//! the cargo feature `self-check`, in debug builds only (a release build
//! with it does not compile), each switched on at
//! start by naming its fail point in `FAILPOINTS` (`FAILPOINTS=name=return`,
//! the `fail` crate's syntax). `tests/fault-suite.sh --self-check` runs the
//! suite once for each and requires it to fail.
//!
//! - `record-skip-epoch`: `record.lua` writes whatever epoch its caller
//!   holds (a replica whose lease was taken over still writes);
//! - `record-drop-due`: a transaction given up until a due time leaves the
//!   due set instead (nothing wakes it again);
//! - `error-is-failure`: a branch's 500 counts as a FAILURE (the
//!   transaction rolls back instead of retrying).

#[cfg(not(debug_assertions))]
compile_error!("the self-check feature breaks dtx on purpose: debug builds only");

/// The lines of `record.lua` the two script defects change.
const EPOCH_CHECK: &str = "if current[2] ~= epoch then";
const DUE_AT: &str = "rcall('ZADD', due_key, when, gid)";

/// Sets up the fail points `FAILPOINTS` names, once per process (the
/// binary and a test process alike), for the rest of it.
fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // the scenario tears the fail points down when dropped: it never is
        std::mem::forget(fail::FailScenario::setup());
        let defects = std::env::var("FAILPOINTS").unwrap_or_default();
        if !defects.is_empty() {
            tracing::warn!(%defects, "self-check build: deliberate defects switched on");
        }
    });
}

/// Script `name`'s source with the defects switched on applied.
pub fn patch_script(name: &str, source: &str) -> String {
    if name != "record" {
        return source.to_owned();
    }
    setup();
    assert!(
        source.contains(EPOCH_CHECK) && source.contains(DUE_AT),
        "record.lua changed: the self-check's defects no longer apply"
    );
    let mut source = source.to_owned();
    if skip_epoch() {
        source = source.replacen(EPOCH_CHECK, "if false then", 1);
    }
    if drop_due() {
        let dropped = "if schedule == 'hold' then rcall('ZADD', due_key, when, gid) \
                       else rcall('ZREM', due_key, gid) end";
        source = source.replacen(DUE_AT, dropped, 1);
    }
    source
}

fn skip_epoch() -> bool {
    fail::fail_point!("record-skip-epoch", |_| true);
    false
}

fn drop_due() -> bool {
    fail::fail_point!("record-drop-due", |_| true);
    false
}

/// Whether a branch's 500 is to count as a FAILURE.
pub fn error_is_failure() -> bool {
    setup();
    fail::fail_point!("error-is-failure", |_| true);
    false
}
