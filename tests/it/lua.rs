//! Each Lua script against a real Redis: the happy path, a lost
//! compare-and-set, a stale epoch, and nothing written when refused; plus
//! the check that each script's header agrees with its body and wrapper.

use std::collections::BTreeSet;

use dtx::domain::{
    build_new, BranchInput, BranchStatus, GlobalStatus, NewTransInput, TransKind, TransOptions,
};
use dtx::store::{Created, Held, Move, Record, Schedule, Stamp, Store, StoreError};

use crate::support::{prefix, test_settings, RedisServer};

async fn store(redis: &RedisServer, prefix: &str) -> Store {
    let s = test_settings(&redis.url(), prefix);
    Store::connect(&s.redis, 60).await.unwrap()
}

const LIMITS: dtx::domain::Limits = dtx::domain::Limits {
    max_gid_len: 128,
    max_branches: 6,
    max_payload_bytes: 40,
};

fn saga(gid: &str, status: GlobalStatus, now: u64) -> dtx::domain::Trans {
    build_new(
        NewTransInput {
            gid: gid.into(),
            kind: TransKind::Saga,
            steps: vec![
                BranchInput {
                    action: "http://x/a1".into(),
                    compensate: "http://x/c1".into(),
                },
                BranchInput {
                    action: "http://x/a2".into(),
                    compensate: "http://x/c2".into(),
                },
            ],
            payloads: vec!["{}".into(), "{}".into()],
            custom_data: String::new(),
            query_prepared: String::new(),
            protocol: String::new(),
            opts: TransOptions::default(),
            topics: Default::default(),
        },
        status,
        now,
        &LIMITS,
    )
    .unwrap()
}

/// Everything under `prefix`, as text, to compare before and after.
fn snapshot(redis: &RedisServer, prefix: &str) -> Vec<String> {
    let mut c = redis.conn();
    let mut out = Vec::new();
    for key in redis.keys(prefix) {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut c).unwrap();
        let content: Vec<String> = match kind.as_str() {
            "hash" => {
                let mut v: Vec<(String, String)> =
                    redis::cmd("HGETALL").arg(&key).query(&mut c).unwrap();
                v.sort();
                v.into_iter().map(|(a, b)| format!("{a}={b}")).collect()
            }
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(&mut c)
                .unwrap(),
            _ => vec![],
        };
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut c).unwrap();
        out.push(format!("{key} {kind} ttl={} {content:?}", ttl > 0));
    }
    out
}

fn zscore(redis: &RedisServer, key: &str, member: &str) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg(key)
        .arg(member)
        .query(&mut redis.conn())
        .unwrap()
}

#[tokio::test]
async fn create_trans_stores_indexes_and_refuses_a_taken_gid() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = store(&redis, &p).await;
    let t = saga("g1", GlobalStatus::Submitted, 1_000);
    assert_eq!(
        st.create_trans(&t, 1, Some(5_000)).await.unwrap(),
        Created::New
    );
    let k = st.keys().trans("g1");
    assert_eq!(zscore(&redis, &k.due, "g1"), Some(5_000.0));
    assert_eq!(zscore(&redis, &k.created, "g1"), Some(1_000.0));
    let loaded = st.load("g1").await.unwrap().unwrap();
    assert_eq!(loaded.branches, t.branches);
    assert_eq!(loaded.status, GlobalStatus::Submitted);

    let before = snapshot(&redis, &p);
    let again = saga("g1", GlobalStatus::Prepared, 2_000);
    assert_eq!(
        st.create_trans(&again, 1, None).await.unwrap(),
        Created::Exists(GlobalStatus::Submitted, TransKind::Saga)
    );
    assert_eq!(
        snapshot(&redis, &p),
        before,
        "a refused create wrote something"
    );
}

#[tokio::test]
async fn record_writes_rows_and_finishes_with_a_ttl() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = store(&redis, &p).await;
    let t = saga("g2", GlobalStatus::Submitted, 1_000);
    st.create_trans(&t, 1, Some(3_000)).await.unwrap();
    let rows = vec![
        (
            "01:action".to_owned(),
            BranchStatus::Prepared,
            BranchStatus::Succeed,
        ),
        (
            "02:action".to_owned(),
            BranchStatus::Prepared,
            BranchStatus::Succeed,
        ),
    ];
    st.record(
        &Held {
            gid: "g2",
            create_ms: 1_000,
            epoch: 1,
            status: GlobalStatus::Submitted,
        },
        Stamp {
            owner: "me",
            now_ms: 2_000,
        },
        &Record {
            status: Some(GlobalStatus::Succeed),
            fields: vec![("finish_ms", "2000".into())],
            branches: rows,
            schedule: Schedule::Finish,
        },
    )
    .await
    .unwrap();
    let t = st.load("g2").await.unwrap().unwrap();
    assert_eq!(t.status, GlobalStatus::Succeed);
    assert_eq!(t.finish_ms, Some(2_000));
    let statuses: Vec<&str> = t.branches.iter().map(|b| b.status.as_str()).collect();
    assert_eq!(statuses, ["prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(t.branches[1].update_ms, 2_000);
    assert_eq!(
        t.branches[1].url, "http://x/a1",
        "the rest of the row is kept"
    );
    let k = st.keys().trans("g2");
    assert_eq!(
        zscore(&redis, &k.due, "g2"),
        None,
        "finished leaves the due set"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&k.trans)
        .query(&mut redis.conn())
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&k.branches)
        .query(&mut redis.conn())
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
}

#[tokio::test]
async fn record_refuses_stale_epoch_lost_cas_and_bad_rows_without_writing() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = store(&redis, &p).await;
    st.create_trans(&saga("g3", GlobalStatus::Submitted, 1_000), 2, Some(3_000))
        .await
        .unwrap();
    let rec = |rows: Vec<(String, BranchStatus, BranchStatus)>| Record {
        status: Some(GlobalStatus::Aborting),
        fields: vec![("reason", "x".into())],
        branches: rows,
        schedule: Schedule::Hold(9_000),
    };
    let row = || {
        vec![(
            "01:action".to_owned(),
            BranchStatus::Prepared,
            BranchStatus::Failed,
        )]
    };
    let before = snapshot(&redis, &p);

    let stale = st
        .record(
            &Held {
                gid: "g3",
                create_ms: 1_000,
                epoch: 1,
                status: GlobalStatus::Submitted,
            },
            Stamp {
                owner: "me",
                now_ms: 2_000,
            },
            &rec(row()),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::StaleEpoch(2))), "{stale:?}");
    let lost = st
        .record(
            &Held {
                gid: "g3",
                create_ms: 1_000,
                epoch: 2,
                status: GlobalStatus::Prepared,
            },
            Stamp {
                owner: "me",
                now_ms: 2_000,
            },
            &rec(row()),
        )
        .await;
    assert!(
        matches!(&lost, Err(StoreError::Conflict { actual, .. }) if *actual == GlobalStatus::Submitted),
        "{lost:?}"
    );
    let bad_row = vec![(
        "01:action".to_owned(),
        BranchStatus::Succeed,
        BranchStatus::Failed,
    )];
    let refused = st
        .record(
            &Held {
                gid: "g3",
                create_ms: 1_000,
                epoch: 2,
                status: GlobalStatus::Submitted,
            },
            Stamp {
                owner: "me",
                now_ms: 2_000,
            },
            &rec(bad_row),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::BranchConflict(_))),
        "{refused:?}"
    );
    let missing = vec![(
        "09:action".to_owned(),
        BranchStatus::Prepared,
        BranchStatus::Failed,
    )];
    let refused = st
        .record(
            &Held {
                gid: "g3",
                create_ms: 1_000,
                epoch: 2,
                status: GlobalStatus::Submitted,
            },
            Stamp {
                owner: "me",
                now_ms: 2_000,
            },
            &rec(missing),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::BranchConflict(_))),
        "{refused:?}"
    );
    let unknown = st
        .record(
            &Held {
                gid: "nope",
                create_ms: 1_000,
                epoch: 2,
                status: GlobalStatus::Submitted,
            },
            Stamp {
                owner: "me",
                now_ms: 2_000,
            },
            &rec(row()),
        )
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
    assert_eq!(
        snapshot(&redis, &p),
        before,
        "a refused record wrote something"
    );

    // and the right epoch and status go through
    st.record(
        &Held {
            gid: "g3",
            create_ms: 1_000,
            epoch: 2,
            status: GlobalStatus::Submitted,
        },
        Stamp {
            owner: "me",
            now_ms: 2_000,
        },
        &rec(row()),
    )
    .await
    .unwrap();
    let t = st.load("g3").await.unwrap().unwrap();
    assert_eq!(t.status, GlobalStatus::Aborting);
    assert_eq!(t.owner, "me");
    assert_eq!(
        zscore(&redis, &st.keys().trans("g3").due, "g3"),
        Some(9_000.0)
    );
}

#[tokio::test]
async fn claim_due_leases_only_due_work_and_bumps_the_epoch() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = store(&redis, &p).await;
    // pick gids in one shard so one claim sees them all
    let shard = st.keys().shard_of("due-0");
    let gids: Vec<String> = (0..200)
        .map(|i| format!("due-{i}"))
        .filter(|g| st.keys().shard_of(g) == shard)
        .take(3)
        .collect();
    st.create_trans(
        &saga(&gids[0], GlobalStatus::Submitted, 1_000),
        1,
        Some(1_500),
    )
    .await
    .unwrap();
    st.create_trans(
        &saga(&gids[1], GlobalStatus::Submitted, 1_000),
        1,
        Some(9_000),
    )
    .await
    .unwrap();
    st.create_trans(
        &saga(&gids[2], GlobalStatus::Submitted, 1_000),
        1,
        Some(1_600),
    )
    .await
    .unwrap();
    // an orphan: due entry without its transaction
    let due = st.keys().due(shard);
    let _: i64 = redis::cmd("ZADD")
        .arg(&due)
        .arg(1_000)
        .arg("ghost")
        .query(&mut redis.conn())
        .unwrap();

    let claim = st.claim_due(shard, 2_000, 7_000, "r1", 10).await.unwrap();
    let mut got = claim.leased.clone();
    got.sort();
    let mut want = vec![(gids[0].clone(), 2), (gids[2].clone(), 2)];
    want.sort();
    assert_eq!(got, want);
    // the reply carries no records; the lease is in the stored one
    let claimed = st.load(&gids[0]).await.unwrap().unwrap();
    assert_eq!(
        (claimed.owner.as_str(), claimed.next_ms),
        ("r1", Some(7_000))
    );
    assert_eq!(claim.next_due, Some(7_000));
    assert_eq!(zscore(&redis, &due, &gids[0]), Some(7_000.0));
    assert_eq!(
        zscore(&redis, &due, &gids[1]),
        Some(9_000.0),
        "not yet due: untouched"
    );
    assert_eq!(zscore(&redis, &due, "ghost"), None, "orphan removed");
    // the old holder is fenced out
    let rec = Record {
        status: None,
        fields: vec![],
        branches: vec![],
        schedule: Schedule::Release(3_000),
    };
    let old = st
        .record(
            &Held {
                gid: &gids[0],
                create_ms: 1_000,
                epoch: 1,
                status: GlobalStatus::Submitted,
            },
            Stamp {
                owner: "r0",
                now_ms: 2_000,
            },
            &rec,
        )
        .await;
    assert!(matches!(old, Err(StoreError::StaleEpoch(2))), "{old:?}");
    // nothing due any more until the leases end
    let again = st.claim_due(shard, 2_000, 7_000, "r2", 10).await.unwrap();
    assert!(again.leased.is_empty());
}

#[tokio::test]
async fn set_aside_needs_the_claiming_epoch_and_leaves_the_record() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = store(&redis, &p).await;
    st.create_trans(&saga("bad", GlobalStatus::Submitted, 1_000), 3, Some(1_000))
        .await
        .unwrap();
    let shard = st.keys().shard_of("bad");
    let before = snapshot(&redis, &p);
    assert!(!st.set_aside("bad", 2, 2_000, "why").await.unwrap());
    assert!(!st.set_aside("gone", 1, 2_000, "why").await.unwrap());
    assert_eq!(snapshot(&redis, &p), before, "a refused set_aside wrote");
    assert!(st.set_aside("bad", 3, 2_000, "status \"x\"").await.unwrap());
    assert_eq!(zscore(&redis, &st.keys().due(shard), "bad"), None);
    assert_eq!(
        st.set_aside_list(10).await.unwrap(),
        [("bad".to_owned(), 2_000, "status \"x\"".to_owned())]
    );
    assert!(st.load("bad").await.unwrap().is_some(), "the record stays");
}

#[tokio::test]
async fn transition_takes_over_with_a_new_epoch_or_refuses_without_writing() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = store(&redis, &p).await;
    let mut t = saga("g5", GlobalStatus::Prepared, 1_000);
    t.kind = TransKind::Msg;
    st.create_trans(&t, 0, Some(30_000)).await.unwrap();
    let before = snapshot(&redis, &p);
    let lost = st
        .transition(
            &Move {
                gid: "g5",
                kind: None,
                from: GlobalStatus::Submitted,
                to: GlobalStatus::Succeed,
                hold_until_ms: None,
                fields: &[],
            },
            Stamp {
                owner: "me",
                now_ms: 2_000,
            },
        )
        .await;
    assert!(
        matches!(&lost, Err(StoreError::Conflict { actual, .. }) if *actual == GlobalStatus::Prepared),
        "{lost:?}"
    );
    let unknown = st
        .transition(
            &Move {
                gid: "zz",
                kind: None,
                from: GlobalStatus::Prepared,
                to: GlobalStatus::Submitted,
                hold_until_ms: None,
                fields: &[],
            },
            Stamp {
                owner: "me",
                now_ms: 2_000,
            },
        )
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)));
    let other_kind = st
        .transition(
            &Move {
                gid: "g5",
                kind: Some(TransKind::Workflow),
                from: GlobalStatus::Prepared,
                to: GlobalStatus::Submitted,
                hold_until_ms: Some(6_000),
                fields: &[],
            },
            Stamp {
                owner: "me",
                now_ms: 2_000,
            },
        )
        .await;
    assert!(
        matches!(&other_kind, Err(StoreError::KindConflict(k)) if *k == TransKind::Msg),
        "{other_kind:?}"
    );
    assert_eq!(
        snapshot(&redis, &p),
        before,
        "a refused transition wrote something"
    );

    let leased = st
        .transition(
            &Move {
                gid: "g5",
                kind: None,
                from: GlobalStatus::Prepared,
                to: GlobalStatus::Submitted,
                hold_until_ms: Some(6_000),
                fields: &[],
            },
            Stamp {
                owner: "me",
                now_ms: 2_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(leased.epoch, 1);
    assert_eq!(leased.trans.status, GlobalStatus::Submitted);
    assert_eq!(leased.trans.branches.len(), 4);
    assert_eq!(
        zscore(&redis, &st.keys().trans("g5").due, "g5"),
        Some(6_000.0)
    );
    // finishing through transition leaves the due set and sets a TTL
    st.transition(
        &Move {
            gid: "g5",
            kind: None,
            from: GlobalStatus::Submitted,
            to: GlobalStatus::Failed,
            hold_until_ms: None,
            fields: &[],
        },
        Stamp {
            owner: "me",
            now_ms: 3_000,
        },
    )
    .await
    .unwrap();
    assert_eq!(zscore(&redis, &st.keys().trans("g5").due, "g5"), None);
}

#[tokio::test]
async fn startup_refuses_an_evicting_redis_and_a_changed_shard_count() {
    let redis = RedisServer::start();
    let p = prefix();
    let mut s = test_settings(&redis.url(), &p);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut redis.conn())
        .unwrap();
    let err = Store::connect(&s.redis, 60)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("allkeys-lru") && err.contains("noeviction"),
        "{err}"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query(&mut redis.conn())
        .unwrap();
    Store::connect(&s.redis, 60).await.unwrap();
    s.redis.shards = 8;
    let err = Store::connect(&s.redis, 60)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("DTX_REDIS_SHARDS=4"), "{err}");
    s.redis.url = "redis://127.0.0.1:1".into();
    let err = Store::connect(&s.redis, 60)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cannot reach Redis") && err.contains("--dev"),
        "{err}"
    );
}

/// The numeric indices `prefix[n]` used in `text` (e.g. `KEYS[3]`).
fn indices(text: &str, prefix: &str) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(pos) = rest.find(prefix) {
        rest = &rest[pos + prefix.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && rest[digits.len()..].starts_with(']') {
            out.insert(digits.parse().unwrap());
        }
    }
    out
}

#[test]
fn script_headers_agree_with_bodies_and_wrappers() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let listing = |dir: &str, ext: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(ext).map(str::to_owned)
            })
            .collect();
        names.sort();
        names
    };
    // every script file is declared once, and has one wrapper file
    let mut declared: Vec<String> = dtx::store::scripts::SOURCES
        .iter()
        .map(|s| s.0.to_owned())
        .collect();
    declared.sort();
    assert_eq!(
        listing("lua", ".lua"),
        declared,
        "lua/*.lua vs the declared scripts"
    );
    let mut wrapper_files = listing("src/store/scripts", ".rs");
    wrapper_files.retain(|f| f != "mod");
    assert_eq!(
        wrapper_files, declared,
        "src/store/scripts/*.rs vs the declared scripts"
    );
    for (name, source) in dtx::store::scripts::SOURCES {
        let wrappers =
            std::fs::read_to_string(root.join(format!("src/store/scripts/{name}.rs"))).unwrap();
        let (header, body): (Vec<&str>, Vec<&str>) =
            source.lines().partition(|l| l.starts_with("--"));
        let header = header.join("\n");
        let body = body.join("\n");
        assert!(
            header.starts_with(&format!("-- {name}: ")),
            "{name}: header must start with its name"
        );
        for section in ["Returns:", "Writes:"] {
            assert!(header.contains(section), "{name}: header lacks {section}");
        }
        for kind in ["KEYS[", "ARGV["] {
            let documented = indices(&header, &format!("-- {kind}"));
            let used = indices(&body, kind);
            for i in &used {
                assert!(
                    documented.contains(i),
                    "{name}: {kind}{i}] is used but not documented"
                );
            }
            for i in &documented {
                assert!(
                    used.contains(i),
                    "{name}: {kind}{i}] is documented but never bound"
                );
            }
        }
        // the wrapper pushes exactly the fixed keys the header documents
        let start = wrappers
            .find(&format!("pub async fn {name}("))
            .unwrap_or_else(|| panic!("no wrapper Store::{name}"));
        let end = wrappers[start + 1..]
            .find("    pub async fn ")
            .map(|e| start + 1 + e)
            .unwrap_or(wrappers.len());
        let pushed = indices(&wrappers[start..end], "// KEYS[");
        let documented = indices(&header, "-- KEYS[");
        assert_eq!(
            pushed, documented,
            "{name}: wrapper keys differ from the header"
        );
    }
}

#[tokio::test]
async fn prune_created_drops_only_expired_old_entries() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = store(&redis, &p).await;
    let shard = st.keys().shard_of("p-0");
    let gids: Vec<String> = (0..300)
        .map(|i| format!("p-{i}"))
        .filter(|g| st.keys().shard_of(g) == shard)
        .take(3)
        .collect();
    for (i, g) in gids.iter().enumerate() {
        st.create_trans(&saga(g, GlobalStatus::Submitted, 1_000 + i as u64), 1, None)
            .await
            .unwrap();
    }
    // gids[0] expired; gids[1] still exists; gids[2] expired but is newer than the cutoff
    let mut c = redis.conn();
    for g in [&gids[0], &gids[2]] {
        let k = st.keys().trans(g);
        let _: i64 = redis::cmd("DEL")
            .arg(&k.trans)
            .arg(&k.branches)
            .query(&mut c)
            .unwrap();
    }
    let dropped = st.prune_created(shard, 1_001, 100).await.unwrap();
    assert_eq!(dropped, 1);
    let created = st.keys().created(shard);
    assert_eq!(zscore(&redis, &created, &gids[0]), None);
    assert_eq!(zscore(&redis, &created, &gids[1]), Some(1_001.0));
    assert_eq!(zscore(&redis, &created, &gids[2]), Some(1_002.0));
    assert_eq!(st.prune_created(shard, 1_001, 100).await.unwrap(), 0);
}

#[tokio::test]
async fn reset_due_leaves_live_leases_alone() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = store(&redis, &p).await;
    let mut held = saga("held", GlobalStatus::Submitted, 1_000);
    held.owner = "r1".into();
    st.create_trans(&held, 1, Some(9_000)).await.unwrap();
    st.create_trans(
        &saga("idle", GlobalStatus::Submitted, 1_000),
        1,
        Some(60_000),
    )
    .await
    .unwrap();
    let before = snapshot(&redis, &p);
    let shard = st.keys().shard_of("held");
    assert_eq!(
        st.reset_due(shard, &["held".into()], 2_000, None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(snapshot(&redis, &p), before);
    let shard = st.keys().shard_of("idle");
    assert_eq!(
        st.reset_due(shard, &["idle".into()], 2_000, None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(zscore(&redis, &st.keys().due(shard), "idle"), Some(2_000.0));
    // past its expiry a lease no longer protects
    let shard = st.keys().shard_of("held");
    assert_eq!(
        st.reset_due(shard, &["held".into()], 10_000, None)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn register_branch_adds_numbered_rows_or_refuses_without_writing() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = store(&redis, &p).await;
    let mut t = saga("tcc1", GlobalStatus::Prepared, 1_000);
    t.kind = TransKind::Tcc;
    t.branches.clear();
    st.create_trans(&t, 0, Some(40_000)).await.unwrap();
    let fields = |id: &str| -> std::collections::BTreeMap<String, String> {
        [
            ("branch_id", id),
            ("confirm", "http://x/c"),
            ("cancel", "http://x/x"),
            ("data", "{}"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let rows = dtx::domain::build_registered(TransKind::Tcc, &fields("01"), 2_000).unwrap();
    st.register_branch("tcc1", TransKind::Tcc, &rows, &LIMITS, 2_000)
        .await
        .unwrap();
    let rows2 = dtx::domain::build_registered(TransKind::Tcc, &fields("02"), 2_000).unwrap();
    st.register_branch("tcc1", TransKind::Tcc, &rows2, &LIMITS, 2_000)
        .await
        .unwrap();
    let loaded = st.load("tcc1").await.unwrap().unwrap();
    let got: Vec<(String, u32)> = loaded.branches.iter().map(|b| (b.field(), b.seq)).collect();
    assert_eq!(
        got,
        [
            ("01:cancel".to_string(), 0),
            ("01:confirm".to_string(), 1),
            ("02:cancel".to_string(), 2),
            ("02:confirm".to_string(), 3)
        ]
    );
    let before = snapshot(&redis, &p);
    let dup = st
        .register_branch("tcc1", TransKind::Tcc, &rows, &LIMITS, 3_000)
        .await;
    assert!(matches!(dup, Err(StoreError::BranchConflict(_))), "{dup:?}");
    let unknown = st
        .register_branch("nope", TransKind::Tcc, &rows, &LIMITS, 3_000)
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
    let rows3 = dtx::domain::build_registered(TransKind::Tcc, &fields("03"), 3_000).unwrap();
    let xa = st
        .register_branch("tcc1", TransKind::Xa, &rows3, &LIMITS, 3_000)
        .await;
    assert!(
        matches!(&xa, Err(StoreError::KindConflict(k)) if *k == TransKind::Tcc),
        "{xa:?}"
    );
    // 4 rows held, 6 allowed: two more fit, four do not
    let mut four = rows3.clone();
    four.extend(dtx::domain::build_registered(TransKind::Tcc, &fields("04"), 3_000).unwrap());
    let rows_over = st
        .register_branch("tcc1", TransKind::Tcc, &four, &LIMITS, 3_000)
        .await;
    assert!(
        matches!(
            &rows_over,
            Err(StoreError::Limit {
                what: dtx::store::LimitKind::Rows,
                held: 4
            })
        ),
        "{rows_over:?}"
    );
    // 8 payload bytes held, 40 allowed
    let mut big = rows3.clone();
    for b in &mut big {
        b.data = "x".repeat(17).into_bytes();
    }
    let bytes_over = st
        .register_branch("tcc1", TransKind::Tcc, &big, &LIMITS, 3_000)
        .await;
    assert!(
        matches!(
            &bytes_over,
            Err(StoreError::Limit {
                what: dtx::store::LimitKind::Bytes,
                held: 8
            })
        ),
        "{bytes_over:?}"
    );
    assert_eq!(
        snapshot(&redis, &p),
        before,
        "a refused registration wrote something"
    );
    // once it is no longer prepared, nothing more registers
    st.transition(
        &Move {
            gid: "tcc1",
            kind: None,
            from: GlobalStatus::Prepared,
            to: GlobalStatus::Submitted,
            hold_until_ms: Some(9_000),
            fields: &[],
        },
        Stamp {
            owner: "me",
            now_ms: 3_000,
        },
    )
    .await
    .unwrap();
    let before = snapshot(&redis, &p);
    let late = st
        .register_branch("tcc1", TransKind::Tcc, &rows3, &LIMITS, 3_000)
        .await;
    assert!(
        matches!(&late, Err(StoreError::Conflict { actual, .. }) if *actual == GlobalStatus::Submitted),
        "{late:?}"
    );
    assert_eq!(snapshot(&redis, &p), before);
}

#[tokio::test]
async fn kv_put_is_guarded_by_version() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = store(&redis, &p).await;
    assert_eq!(
        st.kv_put("topics", "t", 0, Some("[1]"), 1_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        st.kv_put("topics", "t", 1, Some("[2]"), 2_000)
            .await
            .unwrap(),
        2
    );
    let before = snapshot(&redis, &p);
    let stale = st.kv_put("topics", "t", 1, Some("[3]"), 3_000).await;
    assert!(
        matches!(&stale, Err(StoreError::VersionConflict { actual: 2, .. })),
        "{stale:?}"
    );
    let exists = st.kv_put("topics", "t", 0, Some("[3]"), 3_000).await;
    assert!(matches!(exists, Err(StoreError::VersionConflict { .. })));
    let missing = st.kv_put("topics", "u", 4, Some("[3]"), 3_000).await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
    assert_eq!(
        snapshot(&redis, &p),
        before,
        "a refused put wrote something"
    );
    let e = st.kv_get("topics", "t").await.unwrap().unwrap();
    assert_eq!(
        (e.value.as_str(), e.version, e.create_ms, e.update_ms),
        ("[2]", 2, 1_000, 2_000)
    );
    assert_eq!(st.kv_put("topics", "t", 2, None, 4_000).await.unwrap(), 0);
    assert_eq!(st.kv_get("topics", "t").await.unwrap(), None);
    assert!(
        redis.keys(&p).iter().all(|k| !k.contains("kv:")),
        "{:?}",
        redis.keys(&p)
    );
}

#[tokio::test]
async fn heartbeat_keeps_live_replicas_and_forgets_lapsed_ones() {
    let redis = RedisServer::start();
    let p = prefix();
    let st = store(&redis, &p).await;
    let set = st.keys().replicas();
    assert_eq!(st.heartbeat("b", 1_000, Some(6_000)).await.unwrap(), ["b"]);
    assert_eq!(
        st.heartbeat("a", 2_000, Some(3_000)).await.unwrap(),
        ["a", "b"],
        "sorted by id"
    );
    assert_eq!(zscore(&redis, &set, "a"), Some(3_000.0));
    // a beat moves the caller's time on
    assert_eq!(
        st.heartbeat("b", 2_500, Some(7_500)).await.unwrap(),
        ["a", "b"]
    );
    assert_eq!(zscore(&redis, &set, "b"), Some(7_500.0));
    // alive until 3_000 means alive at 3_000, gone after it
    assert_eq!(
        st.heartbeat("c", 3_000, Some(8_000)).await.unwrap(),
        ["a", "b", "c"]
    );
    assert_eq!(
        st.heartbeat("c", 3_001, Some(8_001)).await.unwrap(),
        ["b", "c"]
    );
    assert_eq!(zscore(&redis, &set, "a"), None, "a lapsed entry is dropped");
    // leaving
    assert_eq!(st.heartbeat("b", 3_002, None).await.unwrap(), ["c"]);
    assert_eq!(zscore(&redis, &set, "b"), None);
    assert_eq!(st.heartbeat("b", 3_003, None).await.unwrap(), ["c"]);
    assert_eq!(
        st.heartbeat("c", 3_004, None).await.unwrap(),
        Vec::<String>::new()
    );
    assert!(!redis.keys(&p).contains(&set), "an empty set is no key");
}

#[test]
fn architecture_lists_every_script_and_no_other() {
    let doc = include_str!("../../ARCHITECTURE.md");
    let section = doc
        .split("## Redis layout and scripts")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("ARCHITECTURE.md has a scripts section");
    let listed: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split_once("`:").map(|(name, _)| name))
        .collect();
    let declared: Vec<&str> = dtx::store::scripts::SOURCES.iter().map(|s| s.0).collect();
    assert_eq!(listed, declared, "ARCHITECTURE.md's script list");
    let readme = include_str!("../../lua/README.md");
    let lint = "script_headers_agree_with_bodies_and_wrappers";
    assert!(readme.contains(lint), "lua/README.md names the header lint");
    assert!(
        include_str!("lua.rs").contains(&format!("fn {lint}()")),
        "the test lua/README.md names exists"
    );
}
