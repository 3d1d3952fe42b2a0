//! What an API call does to a transaction: every command a client or an
//! operator sends is decided here, through the transition table, before
//! the store is asked to make the change (compare-and-set on the status
//! the decision expects).

use super::transition::{next, Event};
use super::{GlobalStatus, TransKind};

/// A call that changes a stored transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `submit` naming `kind` (msg, tcc, xa, saga).
    Submit(TransKind),
    /// `abort` naming `kind`.
    Abort(TransKind),
    /// The operator's `forceStop` (names no kind).
    ForceStop,
    /// `registerBranch` naming `kind`.
    RegisterBranch(TransKind),
    /// A workflow client's final submit: it succeeded, or it failed.
    WorkflowOutcome {
        /// Whether the workflow succeeded.
        succeeded: bool,
    },
}

/// What happens after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// The caller holds the lease and drives the transaction now.
    Drive,
    /// The transaction is finished: it leaves the schedule and expires.
    Finish,
    /// The status stays; rows are added (registerBranch).
    Keep,
}

/// A command the transaction takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The status the change expects (compare-and-set).
    pub expected: GlobalStatus,
    /// The status after it.
    pub to: GlobalStatus,
    /// What follows.
    pub then: Then,
}

/// Why a command is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The transaction is not in a status that takes the command.
    Status(GlobalStatus),
    /// The command names another kind than the stored one.
    Kind {
        /// The stored kind.
        stored: TransKind,
        /// The kind the command names.
        named: TransKind,
    },
}

/// Decides `command` for a `kind` transaction in `status`. A status the
/// command cannot take is refused first (dtm's FAILURE), then a kind
/// mismatch.
pub fn decide(
    kind: TransKind,
    status: GlobalStatus,
    command: Command,
) -> Result<Decision, Refusal> {
    let (event, named) = match command {
        Command::Submit(k) => (Event::Submit, Some(k)),
        Command::Abort(k) => (Event::Abort, Some(k)),
        Command::ForceStop => (Event::ForceStop, None),
        Command::WorkflowOutcome { succeeded } => (
            if succeeded {
                Event::ClientSucceeded
            } else {
                Event::ClientFailed
            },
            Some(TransKind::Workflow),
        ),
        Command::RegisterBranch(k) => {
            // rows are added to a prepared tcc, xa or workflow; no status moves
            if status != GlobalStatus::Prepared {
                return Err(Refusal::Status(status));
            }
            if k != kind {
                return Err(Refusal::Kind {
                    stored: kind,
                    named: k,
                });
            }
            if !kind.registers_branches() {
                return Err(Refusal::Status(status));
            }
            return Ok(Decision {
                expected: status,
                to: status,
                then: Then::Keep,
            });
        }
    };
    // the status is checked as the named kind would take the command (so
    // a status no such call takes answers dtm's FAILURE first), then the kind
    let named = named.unwrap_or(kind);
    let to = next(named, status, event).map_err(|_| Refusal::Status(status))?;
    if named != kind {
        return Err(Refusal::Kind {
            stored: kind,
            named,
        });
    }
    Ok(Decision {
        expected: status,
        to,
        then: if to.is_final() {
            Then::Finish
        } else {
            Then::Drive
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decision_is_the_tables() {
        for kind in TransKind::ALL {
            for status in GlobalStatus::ALL {
                for (command, event) in [
                    (Command::Submit(kind), Event::Submit),
                    (Command::Abort(kind), Event::Abort),
                    (Command::ForceStop, Event::ForceStop),
                    (
                        Command::WorkflowOutcome { succeeded: true },
                        Event::ClientSucceeded,
                    ),
                    (
                        Command::WorkflowOutcome { succeeded: false },
                        Event::ClientFailed,
                    ),
                ] {
                    let named = match command {
                        Command::WorkflowOutcome { .. } => TransKind::Workflow,
                        _ => kind,
                    };
                    let table = next(named, status, event);
                    let got = decide(kind, status, command);
                    match (table, got) {
                        (Ok(to), Ok(d)) => {
                            assert_eq!(named, kind);
                            assert_eq!(
                                (d.expected, d.to),
                                (status, to),
                                "{kind} {status} {command:?}"
                            );
                            assert_eq!(d.then == Then::Finish, to.is_final());
                        }
                        (Ok(_), Err(Refusal::Kind { stored, named: n })) => {
                            assert_eq!((stored, n), (kind, named))
                        }
                        (Err(_), Err(Refusal::Status(s))) => assert_eq!(s, status),
                        (t, g) => panic!("{kind} {status} {command:?}: table {t:?}, decided {g:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn another_kind_is_refused_after_the_status() {
        use GlobalStatus as S;
        use TransKind as K;
        assert_eq!(
            decide(K::Workflow, S::Prepared, Command::Submit(K::Msg)),
            Err(Refusal::Kind {
                stored: K::Workflow,
                named: K::Msg
            })
        );
        // a finished one answers its status whatever the kind named
        assert_eq!(
            decide(K::Saga, S::Succeed, Command::Submit(K::Msg)),
            Err(Refusal::Status(S::Succeed))
        );
        assert_eq!(
            decide(K::Workflow, S::Prepared, Command::RegisterBranch(K::Tcc)),
            Err(Refusal::Kind {
                stored: K::Workflow,
                named: K::Tcc
            })
        );
        assert_eq!(
            decide(K::Tcc, S::Prepared, Command::RegisterBranch(K::Tcc)).map(|d| d.then),
            Ok(Then::Keep)
        );
        assert_eq!(
            decide(K::Tcc, S::Submitted, Command::RegisterBranch(K::Tcc)),
            Err(Refusal::Status(S::Submitted))
        );
    }
}
