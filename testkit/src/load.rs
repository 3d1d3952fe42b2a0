//! A steady load of 2-step sagas on a replica while a test injects a
//! fault, and the check that every saga ended once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{gid, saga_body, Branches, TestApp};

/// Submitters looping until stopped, each recording every saga it sent
/// and whether its submit was acknowledged (200).
pub struct SagaLoad {
    sent: Arc<Mutex<Vec<(String, bool)>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl SagaLoad {
    /// `workers` submitters on `app`, their sagas on `b`'s paths `a1`, `a2`.
    pub fn start(app: &Arc<TestApp>, b: &Branches, workers: usize) -> Self {
        let sent: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|w| {
                let (app, b, sent, stop) = (app.clone(), b.clone(), sent.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let g = gid(&format!("load{w}-{i}"));
                        let (status, _) = app.post("submit", &saga_body(&g, &b)).await;
                        sent.lock().unwrap().push((g, status == 200));
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            sent,
            stop,
            workers,
        }
    }

    /// How many submits were acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, ok)| *ok)
            .count()
    }

    /// Stops the submitters; every saga sent, with its acknowledgement.
    pub async fn stop(self) -> Vec<(String, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

/// How the sagas of a [`SagaLoad`] ended.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Sent.
    pub sent: usize,
    /// Acknowledged.
    pub acknowledged: usize,
    /// Acknowledged, but Redis no longer holds them.
    pub lost: Vec<String>,
    /// Sent (acknowledged or not), no longer held by Redis, yet an action
    /// of theirs was called: their record was lost after the pass began.
    pub gone_after_calls: Vec<String>,
    /// Action calls beyond the first of each (a reply lost in the fault).
    pub repeated: usize,
}

/// Waits until every saga of `sent` that Redis holds has succeeded (each
/// within `secs`), and checks on `b`'s calls that each such saga called
/// `a1` first, both actions, and no compensation (panics otherwise).
/// Counts the sagas Redis no longer holds: acknowledged ones are lost.
pub async fn check_each_ended_once(
    app: &TestApp,
    b: &Branches,
    sent: &[(String, bool)],
    secs: u64,
) -> LoadOutcome {
    let mut out = LoadOutcome {
        sent: sent.len(),
        acknowledged: sent.iter().filter(|(_, ok)| *ok).count(),
        ..LoadOutcome::default()
    };
    let mut gone = HashSet::new();
    for (g, ok) in sent {
        // an unknown gid is a 200 with a null transaction (dtm's answer)
        if app.query(g).await["transaction"].is_object() {
            app.wait_status(g, "succeed", secs).await;
        } else {
            gone.insert(g.as_str());
            if *ok {
                out.lost.push(g.clone());
            }
        }
    }
    let calls = b.calls();
    let mut by_gid: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in &calls {
        by_gid
            .entry(c.query["gid"].as_str())
            .or_default()
            .push(c.path.as_str());
    }
    for (g, _) in sent {
        let paths = by_gid.get(g.as_str()).cloned().unwrap_or_default();
        if gone.contains(g.as_str()) {
            if !paths.is_empty() {
                out.gone_after_calls.push(g.clone());
            }
            continue;
        }
        let distinct: HashSet<&str> = paths.iter().copied().collect();
        assert_eq!(
            distinct,
            HashSet::from(["a1", "a2"]),
            "{g}: each action, no compensation ({paths:?})"
        );
        assert_eq!(paths[0], "a1", "{g}: in order ({paths:?})");
        out.repeated += paths.len() - 2;
    }
    out
}
