//! Faulty links under load, through the kit's TCP proxy: between dtx and
//! Redis (slow, silent, reset, refusing) and between dtx and the branch
//! service (silent past the request timeout, reset). Every acknowledged
//! saga must end with each action applied and no compensation.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    check_each_ended_once, prefix, test_settings, Branches, Fault, FaultProxy, RedisServer,
    SagaLoad, TestApp,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_redis_link_loses_nothing_acknowledged() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port).await;
    let mut settings = test_settings(&format!("redis://127.0.0.1:{}", proxy.port), &prefix());
    // a silent link is noticed within a second
    settings.redis.response_timeout_ms = 1000;
    let app = Arc::new(TestApp::spawn_with(settings).await);
    let b = Branches::start().await;
    let load = SagaLoad::start(&app, &b, 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proxy.accepted();
    proxy
        .run(
            &[
                (Fault::Delay(Duration::from_millis(30)), 800),
                (Fault::Hold, 1_500),
                (Fault::Pass, 500),
                (Fault::Refuse, 700),
                (Fault::Pass, 500),
            ],
            true,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent = load.stop().await;
    assert!(
        proxy.accepted() > before,
        "dtx reconnected through the faults"
    );
    let outcome = check_each_ended_once(&app, &b, &sent, 30).await;
    eprintln!(
        "redis link: sent {}, acknowledged {}, lost {}, gone after calls {}, actions called again {}",
        outcome.sent,
        outcome.acknowledged,
        outcome.lost.len(),
        outcome.gone_after_calls.len(),
        outcome.repeated
    );
    assert!(outcome.acknowledged > 50, "{outcome:?}");
    assert!(outcome.lost.is_empty(), "{:?}", outcome.lost);
    // Redis itself lost nothing: a saga is gone only if its create never ran
    assert!(outcome.gone_after_calls.is_empty(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_branch_link_ends_every_saga_without_compensation() {
    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.trans.request_timeout_ms = 500;
    let app = Arc::new(TestApp::spawn_with(settings).await);
    let b = Branches::start().await;
    let proxy = FaultProxy::start(b.port()).await;
    // the sagas name the proxy; the calls are still recorded by `b`
    let mut via = b.clone();
    via.base = format!("http://127.0.0.1:{}", proxy.port);
    let load = SagaLoad::start(&app, &via, 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy
        .run(
            &[
                // silent past the request timeout: unknown outcomes, retried
                (Fault::Hold, 1_200),
                (Fault::Delay(Duration::from_millis(100)), 600),
                (Fault::Refuse, 400),
                (Fault::Pass, 300),
            ],
            true,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = load.stop().await;
    let outcome = check_each_ended_once(&app, &b, &sent, 30).await;
    eprintln!(
        "branch link: sent {}, acknowledged {}, actions called again {}",
        outcome.sent, outcome.acknowledged, outcome.repeated
    );
    assert_eq!(outcome.acknowledged, outcome.sent, "Redis was never cut");
    assert!(outcome.lost.is_empty() && outcome.gone_after_calls.is_empty());
    assert!(outcome.repeated > 0, "the faults hit no call: {outcome:?}");
}
