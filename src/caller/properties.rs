//! Property tests of `src/caller.rs`.

use proptest::prelude::*;

use super::classify::MAX_REASON;
use super::*;

/// Bodies with and without the keywords, anywhere, in any text.
fn arb_body() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("ONGOING".to_owned()),
        Just("FAILURE".to_owned()),
        Just("SUCCESS".to_owned()),
        Just("{\"dtm_result\":\"FAILURE\"}".to_owned()),
        "\\PC{0,40}",
        "[a-zA-Z ]{0,2000}",
    ];
    proptest::collection::vec(word, 0..4).prop_map(|w| w.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The contract's table (§2.2), in its order: 425 or ONGOING is
    /// ongoing; then 409 or FAILURE a failure; then 2xx success; any
    /// other status an unknown outcome. A reason is never longer than
    /// the URL, the status and 1 KiB of the body.
    #[test]
    fn replies_are_classified_as_the_contract_says(status in 100u16..600, body in arb_body()) {
        let url = "http://b/x";
        let got = classify(url, status, &body);
        let want = if status == 425 || body.contains("ONGOING") {
            "ongoing"
        } else if status == 409 || body.contains("FAILURE") {
            "failed"
        } else if (200..300).contains(&status) {
            "succeeded"
        } else {
            "unknown"
        };
        let (name, reason) = match &got {
            Outcome::Ongoing => ("ongoing", None),
            Outcome::Failed(r) => ("failed", Some(r)),
            Outcome::Succeeded => ("succeeded", None),
            Outcome::Unknown(r) => ("unknown", Some(r)),
        };
        prop_assert_eq!(name, want, "status {} body {:?}", status, body);
        if let Some(r) = reason {
            prop_assert!(r.len() <= MAX_REASON + 64, "{} bytes", r.len());
        }
    }

    /// A JSON-RPC reply is read from its error member only.
    #[test]
    fn json_rpc_replies_never_panic(code in proptest::option::of(-33000i64..-32000), message in "\\PC{0,30}") {
        let body = match code {
            None => serde_json::json!({"jsonrpc": "2.0", "id": "1", "result": {}}),
            Some(c) => serde_json::json!({"jsonrpc": "2.0", "id": "1", "error": {"code": c, "message": message}}),
        };
        let got = classify_rpc("http://b", &body.to_string());
        let ok = match code {
            None => got == Outcome::Succeeded,
            Some(-32901) => matches!(got, Outcome::Failed(_)),
            Some(-32902) => got == Outcome::Ongoing,
            Some(_) => matches!(got, Outcome::Unknown(_)),
        };
        prop_assert!(ok, "{:?} for {:?}", got, code);
    }
}
