//! Unit tests of `src/caller.rs`.

use super::classify::MAX_REASON;
use super::*;

#[test]
fn classification_follows_the_contract_order() {
    let u = "http://x";
    assert_eq!(
        classify(u, 200, "{\"dtm_result\":\"SUCCESS\"}"),
        Outcome::Succeeded
    );
    assert_eq!(classify(u, 204, ""), Outcome::Succeeded);
    assert_eq!(classify(u, 425, ""), Outcome::Ongoing);
    // ONGOING is checked before FAILURE, and bodies count whatever the status
    assert_eq!(classify(u, 409, "ONGOING"), Outcome::Ongoing);
    assert_eq!(
        classify(u, 200, "{\"dtm_result\":\"ONGOING\"}"),
        Outcome::Ongoing
    );
    assert!(matches!(classify(u, 409, ""), Outcome::Failed(_)));
    assert!(matches!(
        classify(u, 200, "{\"dtm_result\":\"FAILURE\"}"),
        Outcome::Failed(_)
    ));
    assert!(matches!(
        classify(u, 500, "FAILURE here"),
        Outcome::Failed(_)
    ));
    assert!(matches!(classify(u, 500, "oops"), Outcome::Unknown(_)));
    assert!(matches!(classify(u, 404, ""), Outcome::Unknown(_)));
    match classify(u, 409, "no money") {
        Outcome::Failed(r) => assert!(r.contains("no money"), "{r}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn json_rpc_error_codes_are_read() {
    let u = "http://x";
    assert_eq!(
        classify_rpc(u, r#"{"jsonrpc":"2.0","id":"1","result":{}}"#),
        Outcome::Succeeded
    );
    assert!(matches!(
        classify_rpc(
            u,
            r#"{"jsonrpc":"2.0","id":"1","error":{"code":-32901,"message":"no"}}"#
        ),
        Outcome::Failed(_)
    ));
    assert_eq!(
        classify_rpc(
            u,
            r#"{"jsonrpc":"2.0","id":"1","error":{"code":-32902,"message":"later"}}"#
        ),
        Outcome::Ongoing
    );
    assert!(matches!(
        classify_rpc(
            u,
            r#"{"jsonrpc":"2.0","id":"1","error":{"code":-32000,"message":"x"}}"#
        ),
        Outcome::Unknown(_)
    ));
    assert!(matches!(classify_rpc(u, "not json"), Outcome::Unknown(_)));
}

#[test]
fn long_reasons_are_cut_on_a_char_boundary() {
    let long = "é".repeat(MAX_REASON);
    assert!(truncate(&long).len() <= MAX_REASON);
}
