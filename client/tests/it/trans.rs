//! The transaction builders against a real dtx: saga (sequential,
//! concurrent with orders, rollback), tcc (confirm, cancel on error and on
//! panic), msg (submit, abort), and the axum helpers answering for the
//! branches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::any;
use axum::Router;
use dtx_client::axum::{BranchParams, Success};
use dtx_client::{tcc_global_transaction, Error, Msg, Saga};

use crate::support::{gid, serve, Calls, Dtx};

/// A branch service: `/{name}` records `name` and answers 200, or 409 for
/// names listed in `fail`.
#[derive(Clone, Default)]
struct Service {
    calls: Calls,
    fail: Arc<Mutex<HashMap<String, u16>>>,
}

async fn branch(
    State(s): State<Service>,
    Path(name): Path<String>,
    _params: BranchParams,
) -> dtx_client::Result<Success> {
    s.calls.push(name.clone());
    match s.fail.lock().unwrap().get(&name) {
        Some(409) => Err(Error::failure(format!("{name} refused"))),
        Some(_) => Err(Error::other("try again")),
        None => Ok(Success),
    }
}

async fn start_service() -> (Service, String) {
    let s = Service::default();
    let url = serve(
        Router::new()
            .route("/{name}", any(branch))
            .with_state(s.clone()),
    )
    .await;
    (s, url)
}

#[tokio::test]
async fn saga_commits_when_all_actions_succeed() {
    let dtx = Dtx::start();
    let (svc, url) = start_service().await;
    let g = gid("saga-ok");
    Saga::new(&dtx.dtm, &g)
        .add(&format!("{url}/a"), &format!("{url}/a-revert"), &1)
        .add(&format!("{url}/b"), &format!("{url}/b-revert"), &2)
        .wait_result()
        .submit()
        .await
        .unwrap();
    dtx.wait_status(&g, "succeed").await;
    assert_eq!(svc.calls.all(), ["a", "b"]);
    assert_eq!(
        dtx.branches(&g).await,
        [
            "compensate:prepared",
            "action:succeed",
            "compensate:prepared",
            "action:succeed"
        ]
    );
}

#[tokio::test]
async fn saga_compensates_in_reverse_after_failure() {
    let dtx = Dtx::start();
    let (svc, url) = start_service().await;
    svc.fail.lock().unwrap().insert("b".into(), 409);
    let g = gid("saga-rollback");
    let err = Saga::new(&dtx.dtm, &g)
        .add(&format!("{url}/a"), &format!("{url}/a-revert"), &1)
        .add(&format!("{url}/b"), &format!("{url}/b-revert"), &2)
        .wait_result()
        .submit()
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    dtx.wait_status(&g, "failed").await;
    assert_eq!(svc.calls.all(), ["a", "b", "b-revert", "a-revert"]);
}

#[tokio::test]
async fn concurrent_saga_honours_orders() {
    let dtx = Dtx::start();
    let (svc, url) = start_service().await;
    svc.fail.lock().unwrap().insert("a".into(), 409);
    let g = gid("saga-order");
    // Step 1 runs only after step 0 succeeded; step 0 fails, so it never runs.
    let _ = Saga::new(&dtx.dtm, &g)
        .add(&format!("{url}/a"), &format!("{url}/a-revert"), &1)
        .add(&format!("{url}/b"), &format!("{url}/b-revert"), &2)
        .concurrent()
        .add_branch_order(1, &[0])
        .retry_interval(1)
        .submit()
        .await;
    dtx.wait_status(&g, "failed").await;
    assert_eq!(svc.calls.count("b"), 0);
    assert_eq!(svc.calls.count("a-revert"), 1);
}

#[tokio::test]
async fn tcc_confirms_every_branch_on_success() {
    let dtx = Dtx::start();
    let (svc, url) = start_service().await;
    let g = gid("tcc-ok");
    let n = tcc_global_transaction(&dtx.dtm, &g, |tcc| {
        let url = url.clone();
        async move {
            for b in ["x", "y"] {
                tcc.call_branch(
                    &b,
                    &format!("{url}/{b}-try"),
                    &format!("{url}/{b}-confirm"),
                    &format!("{url}/{b}-cancel"),
                )
                .await?;
            }
            Ok(2)
        }
    })
    .await
    .unwrap();
    assert_eq!(n, 2);
    dtx.wait_status(&g, "succeed").await;
    let calls = svc.calls.all();
    assert_eq!(&calls[..2], ["x-try", "y-try"]);
    // The coordinator walks tcc branches from last to first.
    assert_eq!(&calls[2..], ["y-confirm", "x-confirm"]);
}

#[tokio::test]
async fn tcc_cancels_every_registered_branch_when_a_try_fails() {
    let dtx = Dtx::start();
    let (svc, url) = start_service().await;
    svc.fail.lock().unwrap().insert("y-try".into(), 409);
    let g = gid("tcc-fail");
    let err = tcc_global_transaction(&dtx.dtm, &g, |tcc| {
        let url = url.clone();
        async move {
            for b in ["x", "y"] {
                tcc.call_branch(
                    &b,
                    &format!("{url}/{b}-try"),
                    &format!("{url}/{b}-confirm"),
                    &format!("{url}/{b}-cancel"),
                )
                .await?;
            }
            Ok(())
        }
    })
    .await
    .unwrap_err();
    assert!(err.is_failure());
    dtx.wait_status(&g, "failed").await;
    let calls = svc.calls.all();
    assert_eq!(&calls[2..], ["y-cancel", "x-cancel"]);
    let q = dtx.dtm.query(&g).await.unwrap();
    assert!(q["transaction"]["rollback_reason"]
        .as_str()
        .unwrap()
        .contains("y-try refused"));
}

#[tokio::test]
async fn tcc_aborts_on_a_panic_and_resumes_it() {
    let dtx = Dtx::start();
    let (svc, url) = start_service().await;
    let g = gid("tcc-panic");
    let dtm = dtx.dtm.clone();
    let g2 = g.clone();
    let joined = tokio::spawn(async move {
        tcc_global_transaction(&dtm, &g2, |tcc| async move {
            tcc.call_branch(
                &1,
                &format!("{url}/x-try"),
                &format!("{url}/x-confirm"),
                &format!("{url}/x-cancel"),
            )
            .await?;
            if tcc.gid().starts_with("tcc-panic") {
                panic!("user code panicked");
            }
            Ok(())
        })
        .await
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    dtx.wait_status(&g, "failed").await;
    assert_eq!(svc.calls.all(), ["x-try", "x-cancel"]);
}

#[tokio::test]
async fn msg_submit_calls_actions_and_abort_calls_none() {
    let dtx = Dtx::start();
    let (svc, url) = start_service().await;
    let g = gid("msg-ok");
    let mut msg = Msg::new(&dtx.dtm, &g)
        .add(&format!("{url}/in1"), &1)
        .add(&format!("{url}/in2"), &2);
    msg.prepare(&format!("{url}/qp")).await.unwrap();
    assert_eq!(
        dtx.dtm.status(&g).await.unwrap().as_deref(),
        Some("prepared")
    );
    msg.submit().await.unwrap();
    dtx.wait_status(&g, "succeed").await;
    assert_eq!(svc.calls.all(), ["in1", "in2"]);

    let g2 = gid("msg-abort");
    let mut msg = Msg::new(&dtx.dtm, &g2).add(&format!("{url}/in3"), &1);
    msg.prepare(&format!("{url}/qp")).await.unwrap();
    msg.abort().await.unwrap();
    dtx.wait_status(&g2, "failed").await;
    assert_eq!(svc.calls.count("in3"), 0);
}

#[tokio::test]
async fn coordinator_errors_are_typed() {
    let dtx = Dtx::start();
    let g = gid("typed");
    Saga::new(&dtx.dtm, &g)
        .add("", "", &())
        .submit()
        .await
        .unwrap();
    dtx.wait_status(&g, "succeed").await;
    // Preparing a finished transaction is a FAILURE (409).
    let mut msg = Msg::new(&dtx.dtm, &g).add("", &());
    let e = msg.prepare("http://127.0.0.1:1/qp").await.unwrap_err();
    assert!(e.is_failure(), "{e}");
    // An unknown gid on forceStop is another error.
    let e = dtx.dtm.force_stop("no-such-gid").await.unwrap_err();
    assert!(matches!(e, Error::Status { .. }), "{e}");
}
