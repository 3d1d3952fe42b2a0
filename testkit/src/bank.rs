//! A business service for fault tests: accounts, and transfers whose
//! effects apply at most once per (gid, branch, op), as dtm's barrier makes
//! them, by each kind of transaction:
//!
//! - a saga of two branches, `out` debits and `in` credits, each with its
//!   compensation;
//! - a msg: the business's local transaction debits ([`Bank::msg_local`]),
//!   its one step (`in`, or a topic whose subscriber is `in`) credits, and
//!   the check-back (`msg-check`) answers whether the local transaction
//!   committed, making sure it never commits afterwards when it had not;
//! - a TCC: the tries (called by the test, as an initiating service does)
//!   hold the debit and note the credit, the confirms make them final, the
//!   cancels release them.
//!
//! It injects branch faults itself, from a seeded schedule, so a test can
//! check what matters after the faults: balances conserved, and each
//! transaction's effects whole or undone. What no correct coordinator may
//! do (a confirm without every try held, a cancel after a confirm) is
//! noted as a violation.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

/// How often each branch fault is injected, in percent of calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct BankFaults {
    /// 500 without applying anything.
    pub error: u32,
    /// Applies the effect, then answers 500 (the answer is lost).
    pub lost_answer: u32,
    /// Applies the effect, then answers only after this long (past the
    /// caller's request timeout, the answer is lost).
    pub slow: u32,
    /// How long a slow answer takes, ms.
    pub slow_ms: u64,
}

/// What the service applied, and where the money is.
#[derive(Default)]
struct Ledger {
    balances: HashMap<String, i64>,
    /// (gid, branch id, op) already handled, with its answer: a repeat
    /// changes nothing and gets the same answer.
    done: HashMap<(String, String, String), (StatusCode, &'static str)>,
    /// By gid: the branches whose action moved money and was not
    /// compensated.
    applied: HashMap<String, HashSet<String>>,
    /// Gids an action of which the bank refused.
    refused: HashSet<String>,
    /// By gid: whether the msg's local transaction committed (`false`:
    /// it rolled back, or the check-back found it had not committed and
    /// barred it).
    msg_local: HashMap<String, bool>,
    /// TCC tries that succeeded and wait for their confirm or cancel, by
    /// (gid, branch): the account and the amount held (`out` has taken it
    /// from the account already, `in` credits it at confirm).
    held: HashMap<(String, String), Hold>,
    /// By gid: the TCC branches confirmed.
    confirmed: HashMap<String, HashSet<String>>,
    /// What no correct coordinator makes the bank do.
    violations: Vec<String>,
    /// By gid: when the last call for it came (any op, faulty or not).
    last_call: HashMap<String, Instant>,
    /// Faults injected, by kind.
    injected: HashMap<&'static str, u64>,
    rng: Option<fastrand::Rng>,
}

/// A branch's answer when it did what was asked.
const SUCCESS: (StatusCode, &str) = (StatusCode::OK, r#"{"dtm_result":"SUCCESS"}"#);
/// A branch's answer when the account lacks the money: the transaction
/// must roll back.
const REFUSED: (StatusCode, &str) = (
    StatusCode::CONFLICT,
    r#"{"dtm_result":"FAILURE","message":"insufficient funds"}"#,
);

/// A TCC try's effect, until its confirm or cancel.
#[derive(Clone)]
struct Hold {
    account: String,
    amount: i64,
    /// `out` (taken from the account) or `in` (to be credited).
    debit: bool,
}

/// The branch ids of a TCC transfer: `out`'s, then `in`'s.
pub const TCC_BRANCHES: [&str; 2] = ["01", "02"];

/// The bank: a real HTTP server on a free port.
#[derive(Clone)]
pub struct Bank {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    ledger: Arc<Mutex<Ledger>>,
    faults: BankFaults,
}

impl Bank {
    /// `accounts` accounts `acct0..` holding `each`, faults as given, from
    /// seed `seed`.
    pub async fn start(accounts: usize, each: i64, faults: BankFaults, seed: u64) -> Self {
        let ledger = Ledger {
            balances: (0..accounts).map(|i| (format!("acct{i}"), each)).collect(),
            rng: Some(fastrand::Rng::with_seed(seed)),
            ..Ledger::default()
        };
        let ledger = Arc::new(Mutex::new(ledger));
        let bank = Self {
            base: String::new(),
            ledger,
            faults,
        };
        let app = Router::new()
            .route("/msg-check", get(msg_check))
            .route("/{op}", post(handle))
            .with_state(bank.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            ..bank
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        let port = self.base.rsplit(':').next().and_then(|p| p.parse().ok());
        port.expect("base ends in a port")
    }

    /// The same bank, its transactions naming `base` (a proxy in front of
    /// it, say) for its branches.
    pub fn via(&self, base: String) -> Self {
        Self {
            base,
            ..self.clone()
        }
    }

    /// A transfer saga: `out` from `from`, `in` to `to`, `amount` each.
    pub fn transfer(&self, gid: &str, from: usize, to: usize, amount: i64) -> Value {
        let payload = transfer_payload(from, to, amount);
        json!({
            "gid": gid,
            "trans_type": "saga",
            "steps": [
                {"action": format!("{}/out", self.base), "compensate": format!("{}/out-undo", self.base)},
                {"action": format!("{}/in", self.base), "compensate": format!("{}/in-undo", self.base)},
            ],
            "payloads": [payload.clone(), payload],
        })
    }

    /// A msg transfer to `to` (its local transaction, [`Bank::msg_local`],
    /// debits the other account): one step crediting `to`, through
    /// `topic` when given (a topic whose one subscriber is `{base}/in`),
    /// checked back at `{base}/msg-check` once `timeout_to_fail` seconds
    /// old. The body of both `prepare` and `submit`.
    pub fn msg(
        &self,
        gid: &str,
        from: usize,
        to: usize,
        amount: i64,
        topic: Option<&str>,
    ) -> Value {
        let action = match topic {
            Some(t) => format!("topic://{t}"),
            None => format!("{}/in", self.base),
        };
        json!({
            "gid": gid,
            "trans_type": "msg",
            "steps": [{"action": action}],
            "payloads": [transfer_payload(from, to, amount)],
            "query_prepared": format!("{}/msg-check", self.base),
            "timeout_to_fail": 2,
        })
    }

    /// The msg's local transaction: debits `acct<from>` by `amount` and
    /// commits, unless the account lacks the money or the check-back has
    /// already found it uncommitted (then it rolls back); whether it
    /// committed.
    pub fn msg_local(&self, gid: &str, from: usize, amount: i64) -> bool {
        let mut l = self.ledger.lock().unwrap();
        if l.msg_local.contains_key(gid) {
            return false;
        }
        let balance = l.balances.entry(format!("acct{from}")).or_default();
        let commit = *balance >= amount;
        if commit {
            *balance -= amount;
        }
        l.msg_local.insert(gid.to_owned(), commit);
        commit
    }

    /// Whether `gid`'s local transaction committed.
    pub fn msg_committed(&self, gid: &str) -> bool {
        self.ledger.lock().unwrap().msg_local.get(gid) == Some(&true)
    }

    /// The `registerBranch` body of branch `branch` (one of
    /// [`TCC_BRANCHES`]: `out`, then `in`) of a TCC transfer.
    pub fn tcc_branch(
        &self,
        gid: &str,
        branch: &str,
        from: usize,
        to: usize,
        amount: i64,
    ) -> Value {
        let side = tcc_side(branch);
        json!({
            "gid": gid,
            "trans_type": "tcc",
            "branch_id": branch,
            "data": transfer_payload(from, to, amount),
            "confirm": format!("{}/tcc-{side}-confirm", self.base),
            "cancel": format!("{}/tcc-{side}-cancel", self.base),
        })
    }

    /// The URL of branch `branch`'s try, as the initiating service calls
    /// it (its JSON body: the branch's `data`).
    pub fn tcc_try_url(&self, gid: &str, branch: &str) -> String {
        let side = tcc_side(branch);
        format!(
            "{}/tcc-{side}-try?gid={gid}&trans_type=tcc&branch_id={branch}&op=try",
            self.base
        )
    }

    /// The TCC branches of `gid` confirmed, sorted.
    pub fn confirmed(&self, gid: &str) -> Vec<String> {
        sorted(self.ledger.lock().unwrap().confirmed.get(gid))
    }

    /// The TCC branches of `gid` whose try holds money or a credit still
    /// (neither confirmed nor cancelled).
    pub fn held(&self, gid: &str) -> Vec<String> {
        let ledger = self.ledger.lock().unwrap();
        TCC_BRANCHES
            .iter()
            .filter(|b| {
                ledger
                    .held
                    .contains_key(&(gid.to_owned(), (**b).to_owned()))
            })
            .map(|b| (*b).to_owned())
            .collect()
    }

    /// When the last call for `gid` came (any op), if one did.
    pub fn last_call(&self, gid: &str) -> Option<Instant> {
        self.ledger.lock().unwrap().last_call.get(gid).copied()
    }

    /// What no correct coordinator makes the bank do, as it happened.
    pub fn violations(&self) -> Vec<String> {
        self.ledger.lock().unwrap().violations.clone()
    }

    /// The sum of every balance and of the money TCC tries hold.
    pub fn total(&self) -> i64 {
        let l = self.ledger.lock().unwrap();
        let held: i64 = l.held.values().filter(|h| h.debit).map(|h| h.amount).sum();
        l.balances.values().sum::<i64>() + held
    }

    /// The branches of `gid` whose action moved money and stays applied.
    pub fn applied(&self, gid: &str) -> Vec<String> {
        sorted(self.ledger.lock().unwrap().applied.get(gid))
    }

    /// Whether the bank refused an action of `gid` (the only reason a
    /// transfer may fail: its faults are all retryable).
    pub fn refused(&self, gid: &str) -> bool {
        self.ledger.lock().unwrap().refused.contains(gid)
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> HashMap<&'static str, u64> {
        self.ledger.lock().unwrap().injected.clone()
    }
}

/// The branch ids in `set`, sorted (none when there is no set).
fn sorted(set: Option<&HashSet<String>>) -> Vec<String> {
    let mut v: Vec<String> = set.into_iter().flatten().cloned().collect();
    v.sort();
    v
}

/// The JSON text every branch of a transfer carries.
pub(crate) fn transfer_payload(from: usize, to: usize, amount: i64) -> String {
    json!({"from": format!("acct{from}"), "to": format!("acct{to}"), "amount": amount}).to_string()
}

/// `out` for the first TCC branch, `in` for the second.
fn tcc_side(branch: &str) -> &'static str {
    if branch == TCC_BRANCHES[0] {
        "out"
    } else {
        "in"
    }
}

/// The fault this call gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Inject {
    None,
    Error,
    LostAnswer,
    Slow,
}

async fn handle(
    State(bank): State<Bank>,
    Path(op): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> (StatusCode, String) {
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let (Some(gid), Some(branch)) = (query.get("gid"), query.get("branch_id")) else {
        return (StatusCode::BAD_REQUEST, "gid and branch_id".into());
    };
    let Ok(t) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "a JSON transfer".into());
    };
    let (from, to) = (
        t["from"].as_str().unwrap_or(""),
        t["to"].as_str().unwrap_or(""),
    );
    let amount = t["amount"].as_i64().unwrap_or(0);
    let f = bank.faults;
    let (inject, answer) = {
        let mut l = bank.ledger.lock().unwrap();
        l.last_call.insert(gid.clone(), Instant::now());
        let roll = l.rng.as_mut().map_or(100, |r| r.u32(0..100));
        let inject = if roll < f.error {
            Inject::Error
        } else if roll < f.error + f.lost_answer {
            Inject::LostAnswer
        } else if roll < f.error + f.lost_answer + f.slow {
            Inject::Slow
        } else {
            Inject::None
        };
        if inject == Inject::Error {
            *l.injected.entry("error").or_default() += 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, "injected".into());
        }
        let answer = l.apply(&op, gid, branch, from, to, amount);
        match inject {
            Inject::LostAnswer => *l.injected.entry("lost_answer").or_default() += 1,
            Inject::Slow => *l.injected.entry("slow").or_default() += 1,
            _ => {}
        }
        (inject, answer)
    };
    match inject {
        Inject::LostAnswer => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "applied, answer lost".into(),
        ),
        Inject::Slow => {
            tokio::time::sleep(Duration::from_millis(f.slow_ms)).await;
            answer
        }
        _ => answer,
    }
}

/// The msg check-back (GET, `?gid=`): SUCCESS when the local
/// transaction committed; FAILURE when it did not, barring it from
/// committing later. Injected errors answer 500 and decide nothing.
async fn msg_check(State(bank): State<Bank>, RawQuery(raw): RawQuery) -> (StatusCode, String) {
    let gid = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "gid")
        .map(|(_, v)| v.into_owned());
    let Some(gid) = gid else {
        return (StatusCode::BAD_REQUEST, "gid".into());
    };
    let mut l = bank.ledger.lock().unwrap();
    l.last_call.insert(gid.clone(), Instant::now());
    let roll = l.rng.as_mut().map_or(100, |r| r.u32(0..100));
    if roll < bank.faults.error {
        *l.injected.entry("error").or_default() += 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected".into());
    }
    if *l.msg_local.entry(gid).or_insert(false) {
        (SUCCESS.0, SUCCESS.1.into())
    } else {
        (
            StatusCode::CONFLICT,
            r#"{"dtm_result":"FAILURE","message":"not committed"}"#.into(),
        )
    }
}

impl Ledger {
    /// Applies `op` of branch `branch` of `gid` once: `out` debits `from`
    /// (FAILURE when it lacks the money), `in` credits `to`; `*-undo`
    /// reverts the action if it was applied, and blocks it otherwise (an
    /// action arriving after its compensation changes nothing).
    fn apply(
        &mut self,
        op: &str,
        gid: &str,
        branch: &str,
        from: &str,
        to: &str,
        amount: i64,
    ) -> (StatusCode, String) {
        let key = (gid.to_owned(), branch.to_owned(), op.to_owned());
        if let Some((status, body)) = self.done.get(&key) {
            return (*status, (*body).to_owned());
        }
        if let Some(tcc) = op.strip_prefix("tcc-") {
            let answer = self.tcc(tcc, gid, branch, from, to, amount);
            self.done.insert(key, answer);
            return (answer.0, answer.1.to_owned());
        }
        let (action, undo) = match op {
            "out" | "in" => (op, false),
            "out-undo" => ("out", true),
            "in-undo" => ("in", true),
            _ => return (StatusCode::NOT_FOUND, "no such op".into()),
        };
        let account = if action == "out" { from } else { to };
        let delta = if action == "out" { -amount } else { amount };
        if undo {
            self.done.insert(key, SUCCESS);
            // the action may not run any more, whether it ran or not
            self.done
                .entry((gid.to_owned(), branch.to_owned(), action.to_owned()))
                .or_insert(SUCCESS);
            let was_applied = self.applied.get_mut(gid).is_some_and(|b| b.remove(branch));
            if was_applied {
                *self.balances.entry(account.to_owned()).or_default() -= delta;
            }
            return (SUCCESS.0, SUCCESS.1.to_owned());
        }
        let balance = self.balances.entry(account.to_owned()).or_default();
        let answer = if *balance + delta < 0 {
            self.refused.insert(gid.to_owned());
            REFUSED
        } else {
            *balance += delta;
            self.applied
                .entry(gid.to_owned())
                .or_default()
                .insert(branch.to_owned());
            SUCCESS
        };
        self.done.insert(key, answer);
        (answer.0, answer.1.to_owned())
    }

    /// TCC op `op` (`out-try`, `in-confirm`, ...) of `gid`'s branch
    /// `branch`, not handled before.
    fn tcc(
        &mut self,
        op: &str,
        gid: &str,
        branch: &str,
        from: &str,
        to: &str,
        amount: i64,
    ) -> (StatusCode, &'static str) {
        let hold_key = (gid.to_owned(), branch.to_owned());
        match op {
            "out-try" | "in-try" => {
                let debit = op == "out-try";
                let account = if debit { from } else { to };
                if debit {
                    let balance = self.balances.entry(account.to_owned()).or_default();
                    if *balance < amount {
                        self.refused.insert(gid.to_owned());
                        return REFUSED;
                    }
                    *balance -= amount;
                }
                let hold = Hold {
                    account: account.to_owned(),
                    amount,
                    debit,
                };
                self.held.insert(hold_key, hold);
                SUCCESS
            }
            "out-confirm" | "in-confirm" => {
                let missing: Vec<&str> = TCC_BRANCHES
                    .iter()
                    .filter(|b| {
                        let confirmed = self.confirmed.get(gid).is_some_and(|c| c.contains(**b));
                        !confirmed && !self.held.contains_key(&(gid.to_owned(), (**b).to_owned()))
                    })
                    .copied()
                    .collect();
                if !missing.is_empty() {
                    self.violations.push(format!(
                        "{gid}: {branch} confirmed while tries {missing:?} hold nothing"
                    ));
                }
                if let Some(hold) = self.held.remove(&hold_key) {
                    if !hold.debit {
                        *self.balances.entry(hold.account).or_default() += hold.amount;
                    }
                }
                self.confirmed
                    .entry(gid.to_owned())
                    .or_default()
                    .insert(branch.to_owned());
                SUCCESS
            }
            "out-cancel" | "in-cancel" => {
                if self.confirmed.get(gid).is_some_and(|c| c.contains(branch)) {
                    self.violations
                        .push(format!("{gid}: {branch} cancelled after its confirm"));
                }
                // a try arriving after its cancel changes nothing
                let try_op = op.replace("cancel", "try");
                self.done
                    .entry((gid.to_owned(), branch.to_owned(), format!("tcc-{try_op}")))
                    .or_insert(SUCCESS);
                if let Some(hold) = self.held.remove(&hold_key) {
                    if hold.debit {
                        *self.balances.entry(hold.account).or_default() += hold.amount;
                    }
                }
                SUCCESS
            }
            _ => (StatusCode::NOT_FOUND, "no such op"),
        }
    }
}
