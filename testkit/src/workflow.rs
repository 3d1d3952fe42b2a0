//! A workflow service for the fault suite: it runs a transfer as a dtm
//! workflow client does (contract §3.9): `prepareWorkflow` (which hands
//! back the progress recorded so far), each step a call to the bank
//! (`out`, then `in`, branches `01` and `02`) recorded with
//! `registerBranch`, and the outcome submitted; a step whose answer is
//! neither a success nor a refusal is not recorded, and the run stops
//! there. When dtx calls a quiet workflow back, the service resumes it the
//! same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use crate::bank::{transfer_payload, Bank};

/// The workflow's name, as dtx calls it back (`op`).
const NAME: &str = "transfer";

/// The service: a real HTTP server on a free port, resuming workflows
/// through any replica `bases` names.
#[derive(Clone)]
pub struct TransferWorkflows {
    /// Its callback URL (`query_prepared`).
    pub callback: String,
    bank: Bank,
    bases: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl TransferWorkflows {
    /// Starts it, moving money at `bank`, resuming through `bases`
    /// (`.../api/dtmsvr`, read afresh for each callback).
    pub async fn start(bank: Bank, bases: Arc<Mutex<Vec<String>>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let service = Self {
            callback: format!("http://127.0.0.1:{port}/resume"),
            bank,
            bases,
            http: reqwest::Client::new(),
        };
        let app = Router::new()
            .route("/resume", post(resume))
            .with_state(service.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        service
    }

    /// Runs workflow `gid` (a transfer of `amount` from `acct<from>` to
    /// `acct<to>`) through the replica at `base`, stopping after `steps`
    /// steps (2: the whole) as an initiator that dies would; whether dtx
    /// acknowledged its `prepareWorkflow`.
    pub async fn run(
        &self,
        base: &str,
        gid: &str,
        (from, to, amount): (usize, usize, i64),
        steps: usize,
    ) -> bool {
        self.drive(base, gid, &transfer_payload(from, to, amount), steps)
            .await
    }

    /// Prepares (or finds) `gid` and takes it on from its recorded
    /// progress, `steps` steps at most.
    async fn drive(&self, base: &str, gid: &str, payload: &str, steps: usize) -> bool {
        let data = base64::engine::general_purpose::STANDARD.encode(payload);
        let prepare = json!({
            "gid": gid,
            "trans_type": "workflow",
            "custom_data": json!({"name": NAME, "data": data}).to_string(),
            "query_prepared": self.callback,
            "timeout_to_fail": 2,
        });
        let Some(reply) = self.post(base, "prepareWorkflow", &prepare).await else {
            return false;
        };
        let recorded: HashMap<&str, &str> = reply["progresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["branch_id"].as_str()?, p["status"].as_str()?)))
            .collect();
        for (branch, op) in [("01", "out"), ("02", "in")].into_iter().take(steps) {
            let status = match recorded.get(branch) {
                Some(&"succeed") => continue,
                Some(status) => (*status).to_owned(),
                None => {
                    let url = format!(
                        "{}/{op}?gid={gid}&trans_type=workflow&branch_id={branch}&op=action",
                        self.bank.base
                    );
                    let answer = self
                        .http
                        .post(url)
                        .body(payload.to_owned())
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await;
                    let status = match answer.map(|r| r.status().as_u16()) {
                        Ok(200) => "succeed",
                        Ok(409) => "failed",
                        // not known: dtx calls the workflow back
                        _ => return true,
                    };
                    let step = json!({
                        "gid": gid, "trans_type": "workflow", "branch_id": branch,
                        "op": "action", "status": status, "data": status,
                    });
                    if self.post(base, "registerBranch", &step).await.is_none() {
                        return true;
                    }
                    status.to_owned()
                }
            };
            if status == "failed" {
                let extra = json!({"status": "failed", "rollback_reason": "refused"});
                self.submit(base, gid, extra).await;
                return true;
            }
        }
        if steps >= 2 {
            self.submit(base, gid, json!({"status": "succeed"})).await;
        }
        true
    }

    async fn submit(&self, base: &str, gid: &str, req_extra: Value) {
        let body = json!({"gid": gid, "trans_type": "workflow", "req_extra": req_extra});
        self.post(base, "submit", &body).await;
    }

    /// `route`'s reply when it answered 200.
    async fn post(&self, base: &str, route: &str, body: &Value) -> Option<Value> {
        let reply = self
            .http
            .post(format!("{base}/{route}"))
            .json(body)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if reply.status() != 200 {
            return None;
        }
        reply.json().await.ok()
    }
}

/// dtx's call-back (POST, `?gid=`, the body the workflow's input): resume
/// the workflow through one of the replicas.
async fn resume(
    State(service): State<TransferWorkflows>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> &'static str {
    let gid = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "gid")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let base = {
        let bases = service.bases.lock().unwrap();
        bases[fastrand::usize(..bases.len())].clone()
    };
    let payload = String::from_utf8_lossy(&body).into_owned();
    service.drive(&base, &gid, &payload, 2).await;
    "resumed"
}
