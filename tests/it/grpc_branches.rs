//! gRPC branches (contract §3.4, §2.3, §7.2): branch URLs
//! `[grpc://|grpcs://]host:port/package.Service/Method` called with the
//! stored payload bytes and dtm's metadata, replies read by status;
//! check-backs and the workflow call-back over gRPC.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use serde_json::json;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};

use dtx::grpc::pb::{DtmRequest, DtmTransOptions};
use dtx::proto::workflow::{workflow_server, WorkflowData};

use crate::grpc::client as dtm;
use crate::support::{gid, prefix, test_settings, until, RedisServer, TestApp};

mod busi {
    #![allow(clippy::all, unreachable_pub)]
    tonic::include_proto!("busi");
}

use busi::busi_server::{self, BusiServer};
use busi::BusiReq;

/// One call the business service received.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) meta: HashMap<String, String>,
    amount: i64,
}

/// The tests' gRPC business service (and workflow call-back): records
/// every call and answers as scripted, OK by default.
#[derive(Clone, Default)]
pub(crate) struct Busi {
    calls: Arc<Mutex<Vec<Call>>>,
    script: Arc<Mutex<HashMap<String, VecDeque<Status>>>>,
}

impl Busi {
    /// Serves it on a free port; returns it and its `host:port`.
    pub(crate) async fn start() -> (Self, String) {
        Self::serve(tonic::transport::Server::builder()).await
    }

    /// Serves it over TLS with this certificate and key (PEM); returns it
    /// and its port.
    async fn start_tls(cert: &str, key: &str) -> (Self, u16) {
        let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        let server = tonic::transport::Server::builder().tls_config(tls).unwrap();
        let (busi, addr) = Self::serve(server).await;
        (busi, addr.rsplit_once(':').unwrap().1.parse().unwrap())
    }

    async fn serve(mut server: tonic::transport::Server) -> (Self, String) {
        let busi = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let router = server
            .add_service(BusiServer::new(busi.clone()))
            .add_service(workflow_server::WorkflowServer::new(busi.clone()));
        tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
        (busi, addr)
    }

    pub(crate) fn script(&self, method: &str, replies: Vec<Status>) {
        self.script
            .lock()
            .unwrap()
            .entry(method.to_owned())
            .or_default()
            .extend(replies);
    }

    pub(crate) fn calls_for(&self, gid: &str) -> Vec<Call> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|c| c.meta.get("dtm-gid").map(String::as_str) == Some(gid))
            .cloned()
            .collect()
    }

    pub(crate) fn methods_for(&self, gid: &str) -> Vec<String> {
        self.calls_for(gid).into_iter().map(|c| c.method).collect()
    }

    fn answer<T>(&self, method: &str, r: &Request<T>, amount: i64) -> Result<Response<()>, Status> {
        let meta = r
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                }
                _ => None,
            })
            .collect();
        self.calls.lock().unwrap().push(Call {
            method: method.to_owned(),
            meta,
            amount,
        });
        let next = self
            .script
            .lock()
            .unwrap()
            .get_mut(method)
            .and_then(VecDeque::pop_front);
        match next {
            Some(status) => Err(status),
            None => Ok(Response::new(())),
        }
    }
}

#[tonic::async_trait]
impl busi_server::Busi for Busi {
    async fn trans_out(&self, r: Request<BusiReq>) -> Result<Response<()>, Status> {
        let amount = r.get_ref().amount;
        self.answer("TransOut", &r, amount)
    }
    async fn trans_out_revert(&self, r: Request<BusiReq>) -> Result<Response<()>, Status> {
        let amount = r.get_ref().amount;
        self.answer("TransOutRevert", &r, amount)
    }
    async fn trans_in(&self, r: Request<BusiReq>) -> Result<Response<()>, Status> {
        let amount = r.get_ref().amount;
        self.answer("TransIn", &r, amount)
    }
    async fn trans_in_revert(&self, r: Request<BusiReq>) -> Result<Response<()>, Status> {
        let amount = r.get_ref().amount;
        self.answer("TransInRevert", &r, amount)
    }
    async fn query_prepared(&self, r: Request<BusiReq>) -> Result<Response<()>, Status> {
        self.answer("QueryPrepared", &r, 0)
    }
}

#[tonic::async_trait]
impl workflow_server::Workflow for Busi {
    async fn execute(&self, r: Request<WorkflowData>) -> Result<Response<()>, Status> {
        // the input is a BusiReq's bytes in these tests
        let amount = BusiReq::decode(r.get_ref().data.as_slice())
            .map(|b| b.amount)
            .unwrap_or(-1);
        self.answer("Execute", &r, amount)
    }
}

fn payload(amount: i64) -> Vec<u8> {
    BusiReq {
        amount,
        user_id: "u1".into(),
    }
    .encode_to_vec()
}

/// A transfer saga over gRPC: TransOut then TransIn on `addr` (a
/// `host:port`, or `etcd://host:port/key`).
pub(crate) fn transfer(gid: &str, addr: &str, amount: i64) -> DtmRequest {
    let url = |m: &str| format!("{addr}/busi.Busi/{m}");
    DtmRequest {
        gid: gid.to_owned(),
        trans_type: "saga".into(),
        trans_options: Some(DtmTransOptions {
            wait_result: true,
            branch_headers: [("x-tenant".to_owned(), "t1".to_owned())].into(),
            ..Default::default()
        }),
        steps: json!([
            {"action": url("TransOut"), "compensate": url("TransOutRevert")},
            {"action": url("TransIn"), "compensate": url("TransInRevert")},
        ])
        .to_string(),
        bin_payloads: vec![payload(amount), payload(amount)],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_grpc_saga_calls_its_grpc_branches_with_the_payload_bytes_and_dtm_metadata() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let (busi, addr) = Busi::start().await;
    let g = gid("grpc-branches");
    dtm(&app)
        .await
        .submit(transfer(&g, &addr, 30))
        .await
        .unwrap();
    assert_eq!(app.status(&g).await, "succeed");
    let calls = busi.calls_for(&g);
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(methods, ["TransOut", "TransIn"]);
    for (c, id) in calls.iter().zip(["01", "02"]) {
        assert_eq!(c.amount, 30, "the payload bytes arrive unchanged");
        assert_eq!(c.meta["dtm-trans_type"], "saga");
        assert_eq!(c.meta["dtm-branch_id"], id);
        assert_eq!(c.meta["dtm-op"], "action");
        assert_eq!(c.meta["dtm-dtm"], "");
        assert_eq!(
            c.meta["x-tenant"], "t1",
            "branch_headers travel as metadata"
        );
        assert!(
            c.meta.contains_key("grpc-timeout"),
            "the request timeout is the deadline"
        );
    }
}

#[tokio::test]
async fn aborted_rolls_back_and_unavailable_is_retried_never_compensated() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let (busi, addr) = Busi::start().await;
    let mut dtm = dtm(&app).await;
    // Aborted: the saga fails; every step applied, the failed one included,
    // is compensated in reverse
    let g = gid("grpc-aborted");
    busi.script("TransIn", vec![Status::aborted("score 10 refused")]);
    let e = dtm.submit(transfer(&g, &addr, 10)).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert_eq!(app.status(&g).await, "failed");
    assert_eq!(
        busi.methods_for(&g),
        ["TransOut", "TransIn", "TransInRevert", "TransOutRevert"]
    );
    // Unavailable once, Internal once: errors, retried until they pass
    let g = gid("grpc-unavailable");
    busi.script(
        "TransIn",
        vec![
            Status::unavailable("restarting"),
            Status::internal("retry me"),
        ],
    );
    let mut req = transfer(&g, &addr, 20);
    req.trans_options.as_mut().unwrap().wait_result = false;
    dtm.submit(req).await.unwrap();
    app.wait_status(&g, "succeed", 10).await;
    assert_eq!(
        busi.methods_for(&g),
        ["TransOut", "TransIn", "TransIn", "TransIn"]
    );
    // FailedPrecondition is ONGOING: asked again, never failed
    let g = gid("grpc-ongoing");
    busi.script("TransOut", vec![Status::failed_precondition("not yet")]);
    let mut req = transfer(&g, &addr, 5);
    req.trans_options.as_mut().unwrap().wait_result = false;
    dtm.submit(req).await.unwrap();
    app.wait_status(&g, "succeed", 10).await;
    assert_eq!(busi.methods_for(&g), ["TransOut", "TransOut", "TransIn"]);
}

#[tokio::test]
async fn check_backs_and_the_workflow_call_back_go_over_grpc() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let (busi, addr) = Busi::start().await;
    let mut dtm = dtm(&app).await;
    // a prepared msg whose client went quiet: QueryPrepared answers OK, so
    // the msg is submitted and its step runs
    let g = gid("grpc-msg");
    let msg = DtmRequest {
        gid: g.clone(),
        trans_type: "msg".into(),
        trans_options: Some(DtmTransOptions {
            timeout_to_fail: 1,
            ..Default::default()
        }),
        steps: json!([{"action": format!("{addr}/busi.Busi/TransIn")}]).to_string(),
        bin_payloads: vec![payload(7)],
        query_prepared: format!("{addr}/busi.Busi/QueryPrepared"),
        ..Default::default()
    };
    dtm.prepare(msg).await.unwrap();
    app.wait_status(&g, "succeed", 10).await;
    assert_eq!(busi.methods_for(&g), ["QueryPrepared", "TransIn"]);
    let check = &busi.calls_for(&g)[0];
    assert_eq!(
        (
            check.meta["dtm-branch_id"].as_str(),
            check.meta["dtm-op"].as_str()
        ),
        ("00", "msg")
    );
    // a quiet workflow is resumed through workflow.Workflow/Execute with
    // its input in WorkflowData and its name as dtm-op
    let g = gid("grpc-wf");
    let input = payload(42);
    use base64::Engine as _;
    let custom = json!({
        "name": "transfer",
        "data": base64::engine::general_purpose::STANDARD.encode(&input),
    });
    let wf = DtmRequest {
        gid: g.clone(),
        trans_type: "workflow".into(),
        trans_options: Some(DtmTransOptions {
            timeout_to_fail: 1,
            ..Default::default()
        }),
        customed_data: custom.to_string(),
        query_prepared: format!("{addr}/workflow.Workflow/Execute"),
        ..Default::default()
    };
    dtm.prepare_workflow(wf).await.unwrap();
    until("the workflow is called back", || {
        !busi.calls_for(&g).is_empty()
    })
    .await;
    let call = &busi.calls_for(&g)[0];
    assert_eq!(call.method, "Execute");
    assert_eq!(call.amount, 42, "the input arrives in WorkflowData.Data");
    assert_eq!(call.meta["dtm-op"], "transfer");
    assert_eq!(call.meta["dtm-branch_id"], "00");
}

/// A private CA and a certificate for `localhost` it signed: (CA PEM,
/// certificate PEM, key PEM).
fn private_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn grpc_and_grpcs_targets_are_called_plainly_and_over_verified_tls() {
    let redis = RedisServer::start();
    let (ca, cert, key) = private_ca();
    let ca_file = std::env::temp_dir().join(format!("{}.pem", gid("dtx-test-ca")));
    std::fs::write(&ca_file, &ca).unwrap();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.branch.grpc_ca_file = ca_file.to_string_lossy().into_owned();
    let app = TestApp::spawn_with(settings).await;
    std::fs::remove_file(&ca_file).unwrap();
    let mut dtm = dtm(&app).await;
    // grpc:// is the plain call
    let (busi, addr) = Busi::start().await;
    let g = gid("grpc-scheme");
    dtm.submit(transfer(&g, &format!("grpc://{addr}"), 30))
        .await
        .unwrap();
    assert_eq!(app.status(&g).await, "succeed");
    assert_eq!(busi.methods_for(&g), ["TransOut", "TransIn"]);
    // grpcs:// goes over TLS, the server's certificate checked for the
    // URL's host against branch.grpc_ca_file
    let (tls_busi, port) = Busi::start_tls(&cert, &key).await;
    let target = format!("grpcs://localhost:{port}");
    let g = gid("grpcs");
    dtm.submit(transfer(&g, &target, 30)).await.unwrap();
    assert_eq!(app.status(&g).await, "succeed");
    assert_eq!(tls_busi.methods_for(&g), ["TransOut", "TransIn"]);
    assert_eq!(tls_busi.calls_for(&g)[0].amount, 30);
    // a name the certificate does not hold is refused before any call:
    // an error, retried, never a failure
    let g = gid("grpcs-wrong-name");
    let mut req = transfer(&g, &format!("grpcs://127.0.0.1:{port}"), 30);
    req.trans_options.as_mut().unwrap().wait_result = false;
    dtm.submit(req).await.unwrap();
    // a replica that does not trust the CA never gets through either
    let other_redis = RedisServer::start();
    let other = TestApp::spawn(&other_redis).await;
    let g2 = gid("grpcs-untrusted");
    let mut req = transfer(&g2, &target, 30);
    req.trans_options.as_mut().unwrap().wait_result = false;
    crate::grpc::client(&other).await.submit(req).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.status(&g).await, "submitted");
    assert_eq!(other.status(&g2).await, "submitted");
    assert!(tls_busi.calls_for(&g).is_empty());
    assert!(tls_busi.calls_for(&g2).is_empty());
    for statuses in [
        app.branch_statuses(&g).await,
        other.branch_statuses(&g2).await,
    ] {
        assert!(statuses.iter().all(|s| s == "prepared"), "{statuses:?}");
    }
}
