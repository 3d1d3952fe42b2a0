//! The one table of global status transitions.

use super::{GlobalStatus, TransKind};

/// What happened to a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A client submitted it.
    Submit,
    /// A client aborted it.
    Abort,
    /// The msg check-back answered SUCCESS.
    CheckBackConfirmed,
    /// The msg check-back answered FAILURE.
    CheckBackRefused,
    /// A saga action answered FAILURE.
    ActionFailed,
    /// It outlived its `timeout_to_fail`.
    TimedOut,
    /// A saga action kept failing past `retry_limit`.
    RetryLimitExceeded,
    /// Every forward branch succeeded.
    Completed,
    /// Every needed rollback branch succeeded.
    RolledBack,
    /// An operator stopped it.
    ForceStop,
    /// A workflow client submitted it as succeeded.
    ClientSucceeded,
    /// A workflow client submitted it as failed.
    ClientFailed,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 12] = [
        Event::Submit,
        Event::Abort,
        Event::CheckBackConfirmed,
        Event::CheckBackRefused,
        Event::ActionFailed,
        Event::TimedOut,
        Event::RetryLimitExceeded,
        Event::Completed,
        Event::RolledBack,
        Event::ForceStop,
        Event::ClientSucceeded,
        Event::ClientFailed,
    ];
}

/// An event that does not apply to a transaction in its current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {kind} transaction in status '{from}' cannot take event {event:?}")]
pub struct InvalidTransition {
    /// The transaction kind.
    pub kind: TransKind,
    /// The status it was in.
    pub from: GlobalStatus,
    /// The event refused.
    pub event: Event,
}

/// The status a transaction of `kind` moves to from `from` on `event`.
///
/// The arms of this `match` are the whole state machine; `ARCHITECTURE.md`
/// draws the same table.
pub fn next(
    kind: TransKind,
    from: GlobalStatus,
    event: Event,
) -> Result<GlobalStatus, InvalidTransition> {
    use Event as E;
    use GlobalStatus as S;
    use TransKind as K;
    let to = match (kind, from, event) {
        (_, S::Prepared | S::Submitted, E::Submit) if kind != K::Workflow => S::Submitted,
        (K::Msg, S::Prepared, E::CheckBackConfirmed) => S::Submitted,
        (K::Msg, S::Prepared, E::CheckBackRefused | E::Abort) => S::Failed,
        (K::Tcc | K::Xa, S::Prepared | S::Aborting, E::Abort) => S::Aborting,
        (K::Tcc | K::Xa, S::Prepared, E::TimedOut) => S::Aborting,
        (K::Saga, S::Submitted, E::ActionFailed | E::TimedOut | E::RetryLimitExceeded) => {
            S::Aborting
        }
        (_, S::Submitted, E::Completed) => S::Succeed,
        (_, S::Aborting, E::RolledBack) => S::Failed,
        (_, S::Prepared | S::Submitted | S::Aborting, E::ForceStop) => S::Failed,
        (K::Workflow, S::Prepared, E::ClientSucceeded) => S::Succeed,
        (K::Workflow, S::Prepared, E::ClientFailed) => S::Failed,
        _ => return Err(InvalidTransition { kind, from, event }),
    };
    Ok(to)
}

/// The state diagram of [`next`], as a Mermaid `stateDiagram-v2` block,
/// one line per (from, event, to) with the kinds it applies to. The block
/// in `ARCHITECTURE.md` is this output; a test keeps them equal.
pub fn mermaid() -> String {
    let mut out = String::from(
        "stateDiagram-v2\n    [*] --> prepared: prepare\n    [*] --> submitted: submit\n",
    );
    for from in GlobalStatus::ALL {
        for event in Event::ALL {
            for to in GlobalStatus::ALL {
                let kinds: Vec<&str> = TransKind::ALL
                    .into_iter()
                    .filter(|k| next(*k, from, event) == Ok(to))
                    .map(TransKind::as_str)
                    .collect();
                if kinds.is_empty() {
                    continue;
                }
                let who = if kinds.len() == TransKind::ALL.len() {
                    String::new()
                } else {
                    format!(" ({})", kinds.join(", "))
                };
                out.push_str(&format!("    {from} --> {to}: {event:?}{who}\n"));
            }
        }
    }
    for end in [GlobalStatus::Succeed, GlobalStatus::Failed] {
        out.push_str(&format!("    {end} --> [*]\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (kind, status, event) triple, against an independent listing
    /// of the allowed ones.
    #[test]
    fn every_pair_is_decided() {
        use Event as E;
        use GlobalStatus as S;
        use TransKind as K;
        let allowed: &[(K, S, E, S)] = &[
            (K::Saga, S::Prepared, E::Submit, S::Submitted),
            (K::Saga, S::Submitted, E::Submit, S::Submitted),
            (K::Msg, S::Prepared, E::Submit, S::Submitted),
            (K::Msg, S::Submitted, E::Submit, S::Submitted),
            (K::Tcc, S::Prepared, E::Submit, S::Submitted),
            (K::Tcc, S::Submitted, E::Submit, S::Submitted),
            (K::Xa, S::Prepared, E::Submit, S::Submitted),
            (K::Xa, S::Submitted, E::Submit, S::Submitted),
            (K::Msg, S::Prepared, E::CheckBackConfirmed, S::Submitted),
            (K::Msg, S::Prepared, E::CheckBackRefused, S::Failed),
            (K::Msg, S::Prepared, E::Abort, S::Failed),
            (K::Tcc, S::Prepared, E::Abort, S::Aborting),
            (K::Tcc, S::Aborting, E::Abort, S::Aborting),
            (K::Xa, S::Prepared, E::Abort, S::Aborting),
            (K::Xa, S::Aborting, E::Abort, S::Aborting),
            (K::Tcc, S::Prepared, E::TimedOut, S::Aborting),
            (K::Xa, S::Prepared, E::TimedOut, S::Aborting),
            (K::Saga, S::Submitted, E::ActionFailed, S::Aborting),
            (K::Saga, S::Submitted, E::TimedOut, S::Aborting),
            (K::Saga, S::Submitted, E::RetryLimitExceeded, S::Aborting),
            (K::Workflow, S::Prepared, E::ClientSucceeded, S::Succeed),
            (K::Workflow, S::Prepared, E::ClientFailed, S::Failed),
        ];
        for kind in TransKind::ALL {
            for from in GlobalStatus::ALL {
                for event in Event::ALL {
                    let expected = allowed
                        .iter()
                        .find(|(k, f, e, _)| *k == kind && *f == from && *e == event)
                        .map(|(_, _, _, to)| *to)
                        .or(match (from, event) {
                            (S::Submitted, E::Completed) => Some(S::Succeed),
                            (S::Aborting, E::RolledBack) => Some(S::Failed),
                            (S::Prepared | S::Submitted | S::Aborting, E::ForceStop) => {
                                Some(S::Failed)
                            }
                            _ => None,
                        });
                    assert_eq!(
                        next(kind, from, event).ok(),
                        expected,
                        "{kind} {from} {event:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn architecture_md_draws_this_table() {
        let doc = include_str!("../../ARCHITECTURE.md");
        let block = format!("```mermaid\n{}```", mermaid());
        assert!(
            doc.contains(&block),
            "ARCHITECTURE.md must contain this block:\n{block}"
        );
    }

    #[test]
    fn terminal_statuses_take_no_event() {
        for kind in TransKind::ALL {
            for from in [GlobalStatus::Succeed, GlobalStatus::Failed] {
                for event in Event::ALL {
                    assert!(next(kind, from, event).is_err());
                }
            }
        }
    }
}
