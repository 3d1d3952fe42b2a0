//! Workflow against a real dtx, over the HTTP API and over the gRPC API:
//! one that succeeds, one that fails, and a resume that replays a
//! recorded step instead of running it again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use dtx_client::grpc::DtmGrpc;
use dtx_client::{Error, Workflow};

use crate::support::{free_port, gid, Dtx};

/// A dtx serving both APIs, and the workflows of one of them.
struct Api {
    dtx: Dtx,
    grpc: Option<DtmGrpc>,
}

impl Api {
    async fn start(grpc: bool) -> Self {
        let port = free_port().to_string();
        let dtx = Dtx::start_with(&[("DTX_GRPC_PORT", port.as_str())]);
        let grpc = match grpc {
            true => Some(
                DtmGrpc::connect(&format!("127.0.0.1:{port}"))
                    .await
                    .unwrap(),
            ),
            false => None,
        };
        Self { dtx, grpc }
    }

    fn workflow(&self, g: &str) -> Workflow {
        // The callback is never reached: the first one comes
        // timeout_to_fail (35 s by default) after prepare.
        match &self.grpc {
            Some(dtm) => dtm
                .workflow("transfer", g)
                .callback("127.0.0.1:9/workflow.Workflow/Execute"),
            None => {
                Workflow::new(&self.dtx.dtm, "transfer", g).callback("http://127.0.0.1:9/resume")
            }
        }
    }
}

#[tokio::test]
async fn workflow_succeeds_and_records_its_steps_and_result() {
    succeeds(Api::start(false).await).await
}

#[tokio::test]
async fn workflow_over_grpc_succeeds_and_records_its_steps_and_result() {
    succeeds(Api::start(true).await).await
}

async fn succeeds(api: Api) {
    let dtx = &api.dtx;
    let g = gid("wf-ok");
    let runs = Arc::new(AtomicUsize::new(0));
    let def = api.workflow(&g);
    let run = |runs: Arc<AtomicUsize>| {
        def.execute(b"30", move |wf| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let amount: i64 = std::str::from_utf8(wf.input()).unwrap().parse().unwrap();
            let out: i64 = wf.step(|| async move { Ok(-amount) }).await?;
            let inn: i64 = wf.step(|| async move { Ok(-out) }).await?;
            Ok(format!("moved {inn}").into_bytes())
        })
    };
    let result = run(runs.clone()).await.unwrap();
    assert_eq!(result, b"moved 30");
    assert_eq!(
        dtx.dtm.status(&g).await.unwrap().as_deref(),
        Some("succeed")
    );
    assert_eq!(dtx.branches(&g).await, ["action:succeed", "action:succeed"]);
    let q = dtx.dtm.query(&g).await.unwrap();
    let stored = base64::engine::general_purpose::STANDARD
        .decode(q["transaction"]["result"].as_str().unwrap())
        .unwrap();
    assert_eq!(stored, b"moved 30");
    // Running a finished workflow again returns its result, running nothing.
    assert_eq!(run(runs.clone()).await.unwrap(), b"moved 30");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn workflow_fails_with_its_reason() {
    fails(Api::start(false).await).await
}

#[tokio::test]
async fn workflow_over_grpc_fails_with_its_reason() {
    fails(Api::start(true).await).await
}

async fn fails(api: Api) {
    let dtx = &api.dtx;
    let g = gid("wf-fail");
    let err = api
        .workflow(&g)
        .execute(b"", |wf| async move {
            let _: i64 = wf.step(|| async { Ok(-30) }).await?;
            let _: i64 = wf
                .step(|| async { Err(Error::failure("insufficient balance")) })
                .await?;
            Ok(Vec::new())
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    assert_eq!(dtx.dtm.status(&g).await.unwrap().as_deref(), Some("failed"));
    assert_eq!(dtx.branches(&g).await, ["action:succeed", "action:failed"]);
    let q = dtx.dtm.query(&g).await.unwrap();
    assert!(q["transaction"]["rollback_reason"]
        .as_str()
        .unwrap()
        .contains("insufficient balance"));
    // The recorded failure is replayed on a second run.
    let again = api
        .workflow(&g)
        .execute(b"", |_wf| async { Ok(Vec::new()) })
        .await
        .unwrap_err();
    assert!(again.to_string().contains("insufficient balance"));
}

#[tokio::test]
async fn workflow_resume_replays_recorded_steps() {
    resumes(Api::start(false).await).await
}

#[tokio::test]
async fn workflow_over_grpc_resume_replays_recorded_steps() {
    resumes(Api::start(true).await).await
}

async fn resumes(api: Api) {
    let dtx = &api.dtx;
    let g = gid("wf-resume");
    let first = Arc::new(AtomicUsize::new(0));
    let second = Arc::new(AtomicUsize::new(0));
    let def = api.workflow(&g);
    let run = |fail_second: bool| {
        let (first, second) = (first.clone(), second.clone());
        def.execute(b"", move |wf| async move {
            // The first step's value differs per run unless it is replayed.
            let ticket: u64 = wf
                .step(|| async move {
                    first.fetch_add(1, Ordering::SeqCst);
                    Ok(fastrand::u64(..))
                })
                .await?;
            let _: u64 = wf
                .step(|| async move {
                    second.fetch_add(1, Ordering::SeqCst);
                    if fail_second {
                        // neither FAILURE nor success: not recorded
                        return Err(Error::other("network down"));
                    }
                    Ok(ticket)
                })
                .await?;
            Ok(ticket.to_string().into_bytes())
        })
    };
    let err = run(true).await.unwrap_err();
    assert!(!err.is_failure(), "{err}");
    assert_eq!(
        dtx.dtm.status(&g).await.unwrap().as_deref(),
        Some("prepared")
    );
    assert_eq!(dtx.branches(&g).await, ["action:succeed"]);
    let q = dtx.dtm.query(&g).await.unwrap();
    let recorded = base64::engine::general_purpose::STANDARD
        .decode(q["branches"][0]["bin_data"].as_str().unwrap())
        .unwrap();

    let result = run(false).await.unwrap();
    assert_eq!(result, recorded, "the replayed step keeps its first value");
    assert_eq!(
        first.load(Ordering::SeqCst),
        1,
        "the recorded step ran once"
    );
    assert_eq!(second.load(Ordering::SeqCst), 2);
    assert_eq!(
        dtx.dtm.status(&g).await.unwrap().as_deref(),
        Some("succeed")
    );
    assert_eq!(dtx.branches(&g).await, ["action:succeed", "action:succeed"]);
}
