//! `dtmgimp.Dtm`: each method parses its message into the service's typed
//! input, calls the use case and maps the outcome (contract §7.1).

use std::collections::BTreeMap;

use tonic::{Request, Response, Status};

use super::pb;
use super::status::status;
use crate::domain::{validate_gid, BranchInput, NewTransInput, Trans, TransKind, TransOptions};
use crate::service::{new_gid, Abort, RegisterBranch, Service, WorkflowOutcome};

/// The `dtmgimp.Dtm` implementation.
pub(crate) struct DtmApi {
    pub(super) service: Service,
}

type Reply<T> = Result<Response<T>, Status>;

fn kind(trans_type: &str) -> Result<TransKind, Status> {
    if trans_type.is_empty() {
        return Err(Status::invalid_argument("TransType is required"));
    }
    TransKind::parse(trans_type).ok_or_else(|| {
        Status::invalid_argument(format!(
            "unknown TransType {trans_type:?}: use saga, msg, tcc, xa or workflow"
        ))
    })
}

/// The steps of a `DtmRequest`: JSON text of an array of string maps
/// (`"null"` or empty when there are none).
fn steps(text: &str) -> Result<Vec<BranchInput>, Status> {
    if text.trim().is_empty() || text.trim() == "null" {
        return Ok(Vec::new());
    }
    let raw: Vec<BTreeMap<String, serde_json::Value>> = serde_json::from_str(text)
        .map_err(|e| Status::invalid_argument(format!("Steps is not a JSON array of maps: {e}")))?;
    let url = |step: &BTreeMap<String, serde_json::Value>, key: &str| match step.get(key) {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Status::invalid_argument(format!(
            "Steps[].{key} must be a string"
        ))),
    };
    raw.iter()
        .map(|step| {
            Ok(BranchInput {
                action: url(step, "action")?,
                compensate: url(step, "compensate")?,
            })
        })
        .collect()
}

/// A `DtmRequest` as the service's input; a transaction made over gRPC
/// has protocol `grpc` and keeps its payloads as the bytes they are.
fn input(r: pb::DtmRequest) -> Result<NewTransInput, Status> {
    let kind = kind(&r.trans_type)?;
    let o = r.trans_options.unwrap_or_default();
    Ok(NewTransInput {
        gid: r.gid,
        kind,
        steps: steps(&r.steps)?,
        payloads: r.bin_payloads,
        custom_data: r.customed_data,
        query_prepared: r.query_prepared,
        protocol: "grpc".into(),
        opts: TransOptions {
            wait_result: o.wait_result,
            timeout_to_fail: o.timeout_to_fail,
            request_timeout: o.request_timeout,
            retry_interval: o.retry_interval,
            retry_limit: o.retry_limit,
            branch_headers: o.branch_headers.into_iter().collect(),
            concurrent: false,
        },
        topics: BTreeMap::new(),
    })
}

fn progresses(t: &Trans) -> pb::DtmProgressesReply {
    pb::DtmProgressesReply {
        transaction: Some(pb::DtmTransaction {
            gid: t.gid.clone(),
            status: t.status.as_str().to_owned(),
            rollback_reason: t.reason.clone(),
            result: t.result.clone(),
        }),
        progresses: t
            .branches
            .iter()
            .map(|b| pb::DtmProgress {
                status: b.status.as_str().to_owned(),
                bin_data: b.data.clone(),
                branch_id: b.id.clone(),
                op: b.op.as_str().to_owned(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::dtm_server::Dtm for DtmApi {
    async fn new_gid(&self, _: Request<()>) -> Reply<pb::DtmGidReply> {
        Ok(Response::new(pb::DtmGidReply { gid: new_gid() }))
    }

    async fn submit(&self, req: Request<pb::DtmRequest>) -> Reply<()> {
        let r = req.into_inner();
        if r.trans_type == TransKind::Workflow.as_str() {
            // a workflow client's final submit carries its outcome in ReqExtra
            let outcome = WorkflowOutcome {
                gid: r.gid,
                req_extra: r.req_extra.into_iter().collect(),
            };
            self.service
                .submit_workflow(outcome)
                .await
                .map_err(status)?;
        } else {
            self.service.submit(input(r)?).await.map_err(status)?;
        }
        Ok(Response::new(()))
    }

    async fn prepare(&self, req: Request<pb::DtmRequest>) -> Reply<()> {
        let input = input(req.into_inner())?;
        self.service.prepare(input).await.map_err(status)?;
        Ok(Response::new(()))
    }

    async fn abort(&self, req: Request<pb::DtmRequest>) -> Reply<()> {
        let r = req.into_inner();
        validate_gid(&r.gid, self.service.limits.max_gid_len).map_err(|e| status(e.into()))?;
        let call = Abort {
            kind: kind(&r.trans_type)?,
            wait: r.trans_options.is_some_and(|o| o.wait_result),
            gid: r.gid,
            rollback_reason: r.rollback_reason,
        };
        self.service.abort(call).await.map_err(status)?;
        Ok(Response::new(()))
    }

    async fn register_branch(&self, req: Request<pb::DtmBranchRequest>) -> Reply<()> {
        let r = req.into_inner();
        let mut fields: BTreeMap<String, String> = r.data.into_iter().collect();
        fields.insert("branch_id".into(), r.branch_id);
        if !r.op.is_empty() {
            fields.entry("op".into()).or_insert(r.op);
        }
        let call = RegisterBranch {
            kind: kind(&r.trans_type)?,
            gid: r.gid,
            fields,
            data: Some(r.busi_payload),
        };
        self.service.register_branch(call).await.map_err(status)?;
        Ok(Response::new(()))
    }

    async fn prepare_workflow(
        &self,
        req: Request<pb::DtmRequest>,
    ) -> Reply<pb::DtmProgressesReply> {
        let input = input(req.into_inner())?;
        if input.kind != TransKind::Workflow {
            return Err(Status::invalid_argument(
                "PrepareWorkflow needs TransType workflow",
            ));
        }
        let t = self.service.prepare_workflow(input).await.map_err(status)?;
        Ok(Response::new(progresses(&t)))
    }

    async fn subscribe(&self, req: Request<pb::DtmTopicRequest>) -> Reply<()> {
        let r = req.into_inner();
        self.service
            .subscribe(&r.topic, &r.url, &r.remark)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn unsubscribe(&self, req: Request<pb::DtmTopicRequest>) -> Reply<()> {
        let r = req.into_inner();
        self.service
            .unsubscribe(&r.topic, &r.url)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn delete_topic(&self, req: Request<pb::DtmTopicRequest>) -> Reply<()> {
        let r = req.into_inner();
        self.service.delete_topic(&r.topic).await.map_err(status)?;
        Ok(Response::new(()))
    }
}
