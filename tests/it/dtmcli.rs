//! The published Python client `dtmcli` (PyPI 1.7.7.0), unchanged, drives
//! dtx: the first proof that clients we did not write work.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::{Branches, RedisServer, Reply, TestApp};

/// A virtualenv with dtmcli 1.7.7.0, made once per target directory.
fn venv_python() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dtmcli-venv");
    let python = dir.join("bin/python");
    let marker = dir.join(".dtmcli-1.7.7.0");
    if !marker.exists() {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&dir)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "python3 -m venv failed: install python3 and python3-venv"
        );
        let pip = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "dtmcli==1.7.7.0",
            ])
            .status();
        assert!(
            pip.is_ok_and(|s| s.success()),
            "pip install dtmcli==1.7.7.0 failed"
        );
        std::fs::write(&marker, "").unwrap();
    }
    python
}

#[tokio::test]
async fn python_dtmcli_drives_sagas_msgs_tcc_and_aborts() {
    let python = venv_python();
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.set_default("TransInRefused", Reply::Failure);
    b.set_default("TransInTryRefused", Reply::Failure);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/dtmcli_flows.py");
    let base = app.base.clone();
    let busi = b.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(base)
            .arg(busi)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "dtmcli script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gids: Value = serde_json::from_slice(&out.stdout).unwrap();
    let gid = |k: &str| gids[k].as_str().unwrap().to_owned();

    app.wait_status(&gid("commit"), "succeed", 10).await;
    assert_eq!(b.paths_for(&gid("commit")), ["TransOut", "TransIn"]);

    app.wait_status(&gid("rollback"), "failed", 10).await;
    assert_eq!(
        b.paths_for(&gid("rollback")),
        [
            "TransOut",
            "TransInRefused",
            "TransInCompensate",
            "TransOutCompensate"
        ]
    );

    app.wait_status(&gid("msg"), "succeed", 10).await;
    assert_eq!(b.paths_for(&gid("msg")), ["TransIn"]);
    let call = b
        .calls()
        .into_iter()
        .find(|c| c.query["gid"] == gid("msg"))
        .unwrap();
    assert_eq!(call.body, "{\"amount\": 30}");

    assert_eq!(gids["abort_refused"], true);

    // TCC: the client calls try itself; dtx confirms from the last branch to the first
    let commit = gid("tcc_commit");
    app.wait_status(&commit, "succeed", 10).await;
    let paths = b
        .calls()
        .into_iter()
        .filter(|c| c.query.get("gid") == Some(&commit))
        .map(|c| c.path)
        .collect::<Vec<_>>();
    assert_eq!(
        paths,
        [
            "TransOutTry",
            "TransInTry",
            "TransInConfirm",
            "TransOutConfirm"
        ]
    );
    assert_eq!(
        app.branch_statuses(&commit).await,
        ["prepared", "succeed", "prepared", "succeed"]
    );
    let rollback = gid("tcc_rollback");
    assert_eq!(gids["tcc_rollback_returned"], "");
    app.wait_status(&rollback, "failed", 10).await;
    let paths = b
        .calls()
        .into_iter()
        .filter(|c| c.query.get("gid") == Some(&rollback))
        .map(|c| c.path)
        .collect::<Vec<_>>();
    assert_eq!(
        paths,
        [
            "TransOutTry",
            "TransInTryRefused",
            "TransInCancel",
            "TransOutCancel"
        ]
    );
    assert_eq!(app.status(&gid("aborted")).await, "failed");
    assert!(b.paths_for(&gid("aborted")).is_empty());
}
