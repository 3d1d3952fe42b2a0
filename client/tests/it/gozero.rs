//! The go-zero scenario, end to end over gRPC: a user is registered by a
//! saga over two gRPC services found through etcd (user and score, each
//! writing its MariaDB table inside the sub-transaction barrier, the
//! barrier's identity read from gRPC metadata), submitted with
//! `wait_result` to the dtx found through etcd. A score of 10 is refused
//! with ABORTED: the saga fails and the user row is deleted by its
//! compensation. The services and the saga are the example's
//! (`examples/gozero_register.rs`).

use dtx_client::Error;
use etcd_client::Client;

use crate::support::{free_port, gid, Dtx, EtcdServer, MyDb};

#[path = "../../examples/gozero_register.rs"]
mod gozero_register;

use gozero_register::{find_dtx, register, rows, start_services, Db};

#[tokio::test]
async fn a_user_is_registered_by_a_grpc_saga_found_through_etcd_and_a_refused_score_rolls_it_back()
{
    let etcd = EtcdServer::start();
    let grpc_port = free_port().to_string();
    let dtmservice = format!("etcd://{}/dtmservice", etcd.addr());
    let dtx = Dtx::start_with(&[
        ("DTX_GRPC_PORT", grpc_port.as_str()),
        ("DTX_GRPC_REGISTER", dtmservice.as_str()),
    ]);
    let my = MyDb::create().await;
    let db = Db {
        pool: my.pool.clone(),
        barrier_table: my.barrier_table.clone(),
    };
    gozero_register::setup(&db).await.unwrap();
    let mut etcd_client = Client::connect([etcd.addr()], None).await.unwrap();
    start_services(&db, &mut etcd_client).await.unwrap();
    let e = etcd.addr();
    let dtm = find_dtx(&e).await.unwrap();

    // success: both rows are there
    let g = dtm.new_gid().await.unwrap();
    register(&dtm, &e, &g, "u1", 90).await.unwrap();
    assert_eq!(rows(&db, "u1").await.unwrap(), (1, 1));
    assert_eq!(
        dtx.dtm.status(&g).await.unwrap().as_deref(),
        Some("succeed")
    );

    // a score of 10: ABORTED, the saga fails, the user row is compensated
    let g = gid("gozero-refused");
    let refused = register(&dtm, &e, &g, "u2", 10).await;
    assert!(matches!(refused, Err(Error::Failure(_))), "{refused:?}");
    assert_eq!(dtx.dtm.status(&g).await.unwrap().as_deref(), Some("failed"));
    assert_eq!(rows(&db, "u2").await.unwrap(), (0, 0), "compensated");
    let branches = dtx.branches(&g).await;
    assert_eq!(
        branches,
        [
            "compensate:succeed",
            "action:succeed",
            "compensate:succeed",
            "action:failed"
        ]
    );
}
