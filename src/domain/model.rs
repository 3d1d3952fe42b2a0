//! The types of a global transaction and its branches.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The kind of a global transaction (dtm's `trans_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransKind {
    /// A SAGA: actions in order, compensations in reverse on failure.
    Saga,
    /// A 2-phase message: actions run once the message is submitted.
    Msg,
    /// Try-Confirm-Cancel.
    Tcc,
    /// XA two-phase commit.
    Xa,
    /// A workflow driven by the client.
    Workflow,
}

impl TransKind {
    /// Every kind, for tests and parsing.
    pub const ALL: [TransKind; 5] = [Self::Saga, Self::Msg, Self::Tcc, Self::Xa, Self::Workflow];

    /// The wire spelling (`trans_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Saga => "saga",
            Self::Msg => "msg",
            Self::Tcc => "tcc",
            Self::Xa => "xa",
            Self::Workflow => "workflow",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether branches are added to it after creation (`registerBranch`,
    /// or a workflow's recorded steps); a saga's and a msg's are all
    /// given at once.
    pub fn registers_branches(self) -> bool {
        matches!(self, Self::Tcc | Self::Xa | Self::Workflow)
    }
}

impl fmt::Display for TransKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a global transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlobalStatus {
    /// Created by `prepare`; not yet submitted.
    Prepared,
    /// Submitted: the coordinator drives it forward.
    Submitted,
    /// Rolling back.
    Aborting,
    /// Finished successfully (terminal).
    Succeed,
    /// Finished rolled back or stopped (terminal).
    Failed,
}

impl GlobalStatus {
    /// Every status, for tests and parsing.
    pub const ALL: [GlobalStatus; 5] = [
        Self::Prepared,
        Self::Submitted,
        Self::Aborting,
        Self::Succeed,
        Self::Failed,
    ];

    /// The wire spelling, also the value stored in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepared => "prepared",
            Self::Submitted => "submitted",
            Self::Aborting => "aborting",
            Self::Succeed => "succeed",
            Self::Failed => "failed",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether nothing can change this status any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeed | Self::Failed)
    }
}

impl fmt::Display for GlobalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of one branch row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BranchStatus {
    /// Not yet done (it may have been called with an unknown outcome).
    Prepared,
    /// Done.
    Succeed,
    /// Refused by the branch (only a saga action can end here).
    Failed,
}

impl BranchStatus {
    /// Every status, for tests and parsing.
    pub const ALL: [BranchStatus; 3] = [Self::Prepared, Self::Succeed, Self::Failed];

    /// The wire spelling, also the value stored in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepared => "prepared",
            Self::Succeed => "succeed",
            Self::Failed => "failed",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a branch row does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// saga or msg forward step.
    Action,
    /// saga compensation.
    Compensate,
    /// tcc try (called by the client, recorded for the barrier).
    Try,
    /// tcc confirm.
    Confirm,
    /// tcc cancel.
    Cancel,
    /// xa or workflow commit.
    Commit,
    /// xa or workflow rollback.
    Rollback,
    /// msg check-back.
    Msg,
    /// workflow: a recorded local step (dtm's DoXa).
    Business,
}

impl Op {
    /// Every op, for tests and parsing.
    pub const ALL: [Op; 9] = [
        Self::Action,
        Self::Compensate,
        Self::Try,
        Self::Confirm,
        Self::Cancel,
        Self::Commit,
        Self::Rollback,
        Self::Msg,
        Self::Business,
    ];

    /// The wire spelling (`op` query parameter).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Compensate => "compensate",
            Self::Try => "try",
            Self::Confirm => "confirm",
            Self::Cancel => "cancel",
            Self::Commit => "commit",
            Self::Rollback => "rollback",
            Self::Msg => "msg",
            Self::Business => "business",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Per-transaction options sent by clients (dtm's `TransOptions`).
///
/// Stored as compact JSON, omitting defaults. Times are in seconds, as on
/// the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransOptions {
    /// Process synchronously within the submit request.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wait_result: bool,
    /// Age (s) after which a prepared msg is checked back, or a submitted
    /// saga aborted; 0 means the default (saga: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout_to_fail: i64,
    /// Timeout (s) of each branch call; 0 means the configured default.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub request_timeout: i64,
    /// Base retry interval (s); 0 means the configured default.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry_interval: i64,
    /// saga: immediate retries of a failing action before aborting.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry_limit: i64,
    /// Extra headers sent on every branch call.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub branch_headers: BTreeMap<String, String>,
    /// msg: run the actions in parallel.
    #[serde(default, skip_serializing_if = "is_false")]
    pub concurrent: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl TransOptions {
    /// Whether every option has its default value (nothing to store).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// One branch row: one op of one branch id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    /// Branch id (`01`, `02`, ... or client-chosen).
    pub id: String,
    /// What this row does.
    pub op: Op,
    /// URL to call; empty means success without a call.
    pub url: String,
    /// Body sent with the call, the bytes the client gave (empty: a GET
    /// without body).
    pub data: Vec<u8>,
    /// Current status.
    pub status: BranchStatus,
    /// Position in storage order (dtm's row order), for listing.
    pub seq: u32,
    /// Last change, ms since the Unix epoch.
    pub update_ms: u64,
}

impl Branch {
    /// The field name of this row in the branches hash: `<branch_id>:<op>`.
    pub fn field(&self) -> String {
        format!("{}:{}", self.id, self.op.as_str())
    }
}

/// The parsed `custom_data` of a saga.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SagaCustom {
    /// Run actions concurrently, subject to `orders`.
    pub concurrent: bool,
    /// For step `i`, the steps whose actions must succeed before it starts.
    pub orders: BTreeMap<usize, Vec<usize>>,
}

/// A global transaction as the coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trans {
    /// Global id.
    pub gid: String,
    /// Kind (`trans_type`).
    pub kind: TransKind,
    /// Current status.
    pub status: GlobalStatus,
    /// Creation time, ms since the Unix epoch.
    pub create_ms: u64,
    /// Last change, ms since the Unix epoch.
    pub update_ms: u64,
    /// When it reached `succeed`, ms.
    pub finish_ms: Option<u64>,
    /// When it reached `failed`, ms.
    pub rollback_ms: Option<u64>,
    /// Next time it needs attention, ms (absent when finished or parked).
    pub next_ms: Option<u64>,
    /// Consecutive failed attempts since the last progress (drives the backoff).
    pub attempt: u32,
    /// Why it is rolling back or failed.
    pub reason: String,
    /// Client options.
    pub opts: TransOptions,
    /// Kind-specific JSON text, stored verbatim.
    pub custom_data: String,
    /// msg check-back URL, or workflow resume URL.
    pub query_prepared: String,
    /// `http` (default), `grpc` or `json-rpc`.
    pub protocol: String,
    /// Workflow result.
    pub result: String,
    /// Replica holding the lease, if any.
    pub owner: String,
    /// The error of the last failed attempt, if any.
    pub last_error: String,
    /// The branch row (`<branch_id>:<op>`) that failed last, if any.
    pub last_branch: String,
    /// The trace context it was created or last submitted under, sent on
    /// each of its branch calls.
    pub trace: Option<TraceContext>,
    /// Branch rows in storage order.
    pub branches: Vec<Branch>,
}

/// A W3C trace context, as the `traceparent` and `tracestate` header values
/// (validated where a request brings them in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// `traceparent`: `<version>-<trace id>-<parent id>-<flags>`.
    pub parent: String,
    /// `tracestate`, empty when the request had none.
    pub state: String,
}

impl TraceContext {
    /// How it is stored: the two values, one space apart (`traceparent`
    /// never holds a space).
    pub fn encode(&self) -> String {
        if self.state.is_empty() {
            self.parent.clone()
        } else {
            format!("{} {}", self.parent, self.state)
        }
    }

    /// Reads [`TraceContext::encode`]'s format.
    pub fn decode(stored: &str) -> Self {
        let (parent, state) = stored.split_once(' ').unwrap_or((stored, ""));
        Self {
            parent: parent.to_owned(),
            state: state.to_owned(),
        }
    }
}

impl Trans {
    /// Bytes of payload its branch rows hold.
    pub fn payload_bytes(&self) -> usize {
        self.branches.iter().map(|b| b.data.len()).sum()
    }

    /// The delay set in a msg's `custom_data` (`{"delay": seconds}`), in ms.
    pub fn msg_delay_ms(&self) -> u64 {
        #[derive(Deserialize)]
        struct MsgCustom {
            #[serde(default)]
            delay: i64,
        }
        if self.custom_data.is_empty() {
            return 0;
        }
        serde_json::from_str::<MsgCustom>(&self.custom_data)
            .map(|c| (c.delay.max(0) as u64).saturating_mul(1000))
            .unwrap_or(0)
    }

    /// The saga ordering from `custom_data`; validated at creation, so a
    /// stored value that does not parse means "sequential".
    pub fn saga_custom(&self) -> SagaCustom {
        let steps = self.branches.iter().filter(|b| b.op == Op::Action).count();
        super::build::parse_saga_custom(&self.custom_data, steps).unwrap_or_default()
    }
}
