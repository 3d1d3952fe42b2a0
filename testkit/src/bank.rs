//! A business service for fault tests: accounts, and transfers in two
//! branches (`out` debits, `in` credits, each with its compensation) whose
//! effects apply at most once per (gid, branch, op), as dtm's barrier makes
//! them. It injects branch faults itself, from a seeded schedule, so a test
//! can check what matters after the faults: balances conserved, and each
//! transaction's effects whole or undone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::post;
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
    /// Faults injected, by kind.
    injected: HashMap<&'static str, u64>,
    rng: Option<fastrand::Rng>,
}

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

    /// A transfer saga: `out` from `from`, `in` to `to`, `amount` each.
    pub fn transfer(&self, gid: &str, from: usize, to: usize, amount: i64) -> Value {
        let payload =
            json!({"from": format!("acct{from}"), "to": format!("acct{to}"), "amount": amount})
                .to_string();
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

    /// The sum of every balance.
    pub fn total(&self) -> i64 {
        self.ledger.lock().unwrap().balances.values().sum()
    }

    /// The branches of `gid` whose action moved money and stays applied.
    pub fn applied(&self, gid: &str) -> Vec<String> {
        let ledger = self.ledger.lock().unwrap();
        let mut v: Vec<String> = ledger
            .applied
            .get(gid)
            .map(|b| b.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
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
        const SUCCESS: (StatusCode, &str) = (StatusCode::OK, r#"{"dtm_result":"SUCCESS"}"#);
        const REFUSED: (StatusCode, &str) = (
            StatusCode::CONFLICT,
            r#"{"dtm_result":"FAILURE","message":"insufficient funds"}"#,
        );
        let key = (gid.to_owned(), branch.to_owned(), op.to_owned());
        if let Some((status, body)) = self.done.get(&key) {
            return (*status, (*body).to_owned());
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
}
