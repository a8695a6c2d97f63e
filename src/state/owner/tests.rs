//! The owner under deterministic interleavings: tokio's paused clock, and
//! commands and rounds queued in a chosen order before the owner runs (what
//! is queued together is applied as one batch, in queue order).

use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::oneshot;

use super::*;
use crate::{
    health::{Report, machine::Status, probe::Round, quorum::Votes},
    state::{Command, Input, store::FileStore},
    testing::{Fixture, ROWS},
};

const BASE: u64 = 1_800_000_000;
const ALL: [&str; 3] = ["europe1", "us1", "asia1"];

struct Rig {
    fixture: Fixture,
    handle: Handle,
    task: JoinHandle<()>,
}

/// An owner of `regions` (all probed), on the file store, with a clock that
/// follows tokio's (paused) one.
async fn rig(regions: &[&str]) -> Rig {
    rig_saved(regions, None).await
}

/// [`rig`] restarted from `saved`, the state file a previous run left.
async fn rig_saved(regions: &[&str], saved: Option<StateFile>) -> Rig {
    let fixture = Fixture::new(ROWS);
    if let Some(saved) = saved {
        crate::state::file::save(&fixture.path("state/health.json"), &saved).unwrap();
    }
    let data = fixture.load(regions, regions, "");
    let store = FileStore {
        state_file: fixture.path("state/health.json"),
        audit_log: fixture.path("state/audit.log"),
    };
    let start_at = tokio::time::Instant::now();
    let clock: Clock = Arc::new(move || BASE + start_at.elapsed().as_secs());
    let (handle, task) = start(
        data,
        fixture.path("mgnt.toml"),
        Box::new(store),
        false,
        clock,
    )
    .await;
    Rig {
        fixture,
        handle,
        task,
    }
}

impl Rig {
    fn queue(&self, input: Input) {
        self.handle.inputs.try_send(input).unwrap();
    }

    /// Queues a probe round; the receiver gets the machine unless the round
    /// was stale.
    fn round(&self, generation: u64, region: &str, ok: bool) -> oneshot::Receiver<Machine> {
        let (reply, answer) = oneshot::channel();
        self.queue(Input::Report(Report {
            generation,
            region: region.into(),
            round: Round {
                at: BASE,
                ok,
                results: vec![],
            },
            reply,
        }));
        answer
    }

    fn drain(
        &self,
        region: &str,
        until: Option<u64>,
        force: bool,
    ) -> oneshot::Receiver<Result<DrainRecord, StateError>> {
        let (reply, answer) = oneshot::channel();
        let request = DrainRequest {
            reason: "maintenance".into(),
            until,
            force,
            by: "ops".into(),
        };
        self.queue(Input::Command(Command::Drain {
            region: region.into(),
            request,
            reply,
        }));
        answer
    }

    /// Queues a reload to a config of `regions` (loaded here, not by the owner).
    fn reload(&self, regions: &[&str]) -> oneshot::Receiver<Result<ReloadReport, StateError>> {
        let data = self.fixture.load(regions, regions, "");
        let (reply, answer) = oneshot::channel();
        self.queue(Input::Command(Command::Reload {
            loaded: Ok(Box::new(data)),
            by: "ops".into(),
            reply,
        }));
        answer
    }

    /// Every region of the current snapshot by name: (serving, status, drained).
    fn regions(&self) -> Vec<(String, bool, Status, bool)> {
        let s = self.handle.snapshot();
        // The snapshot's tables follow its own data's region indices.
        assert_eq!(s.view.states.len(), s.data.config.regions.len());
        s.regions
            .iter()
            .zip(&s.data.config.regions)
            .zip(&s.view.states)
            .map(|((status, region), state)| {
                assert_eq!(status.name, region.name);
                assert_eq!(status.serving, state.serving);
                (
                    status.name.clone(),
                    status.serving,
                    status.health.machine.status,
                    status.drain.is_some(),
                )
            })
            .collect()
    }

    fn saved(&self) -> StateFile {
        crate::state::file::load(&self.fixture.path("state/health.json")).expect("a state file")
    }

    /// The audit log's entries, as JSON.
    fn audit(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.fixture.path("state/audit.log")).unwrap_or_default();
        crate::state::audit::read_lines(&text)
            .unwrap()
            .into_iter()
            .map(|(_, entry)| entry)
            .collect()
    }
}

use super::super::file::StateFile;

fn row(name: &str, serving: bool, status: Status, drained: bool) -> (String, bool, Status, bool) {
    (name.into(), serving, status, drained)
}

#[tokio::test(start_paused = true)]
async fn a_region_removed_and_added_back_amid_rounds_and_drains() {
    let rig = rig(&ALL).await;
    // us1 fails twice (fall = 2): down.
    let a = rig.round(1, "us1", false);
    let b = rig.round(1, "us1", false);
    assert!(a.await.is_ok() && b.await.unwrap().status == Status::Down);

    // One batch: us1 is reloaded away while its old loop still reports, asia1
    // is drained, europe1's new loop reports.
    let removed = rig.reload(&["europe1", "asia1"]);
    let stale = rig.round(1, "us1", true);
    let drained = rig.drain("asia1", None, false);
    let europe = rig.round(2, "europe1", true);
    assert_eq!(removed.await.unwrap().unwrap().generation, 2);
    assert!(
        stale.await.is_err(),
        "a round of a reloaded-away loop is dropped (and ends it)"
    );
    assert!(drained.await.unwrap().is_ok());
    assert!(europe.await.unwrap().confirmed);
    assert_eq!(
        rig.regions(),
        [
            row("asia1", false, Status::Up, true),
            row("europe1", true, Status::Up, false),
        ]
    );

    // us1 comes back (indices shift: asia1, europe1, us1) while the previous
    // generation's loops still report and a round of the new one arrives.
    let added = rig.reload(&ALL);
    let old = rig.round(2, "europe1", false);
    let new = rig.round(3, "us1", false);
    assert_eq!(added.await.unwrap().unwrap().generation, 3);
    assert!(old.await.is_err(), "stale");
    let us1 = new.await.unwrap();
    assert_eq!(
        (us1.status, us1.streak),
        (Status::Up, 1),
        "fresh, one failure of two"
    );
    assert_eq!(
        rig.regions(),
        [
            row("asia1", false, Status::Up, true),
            row("europe1", true, Status::Up, false),
            row("us1", true, Status::Up, false),
        ]
    );
    let saved = rig.saved();
    assert!(saved.drains.0.contains_key("asia1"));
    assert_eq!(saved.regions["europe1"].status, Status::Up);
}

#[tokio::test(start_paused = true)]
async fn a_drain_committed_while_an_older_drain_expires() {
    let rig = rig(&ALL).await;
    let first = rig.drain("europe1", Some(BASE + 10), false);
    assert!(first.await.unwrap().is_ok());
    // The first drain's time comes as the second drain is queued.
    tokio::time::advance(Duration::from_secs(10)).await;
    let second = rig.drain("us1", None, false);
    assert!(second.await.unwrap().is_ok());
    let drained: Vec<bool> = rig.regions().iter().map(|r| r.3).collect();
    assert_eq!(drained, [false, false, true], "asia1, europe1, us1");
    let saved = rig.saved();
    assert_eq!(saved.drains.0.keys().collect::<Vec<_>>(), ["us1"]);
    let audit = std::fs::read_to_string(rig.fixture.path("state/audit.log")).unwrap();
    let actions: Vec<&str> = audit
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["action"] == "drain" {
                "drain"
            } else {
                "drain-ended"
            }
        })
        .collect();
    assert_eq!(actions, ["drain", "drain", "drain-ended"]);
}

#[tokio::test(start_paused = true)]
async fn a_drain_ends_by_itself_at_until() {
    let rig = rig(&ALL).await;
    assert!(
        rig.drain("europe1", Some(BASE + 30), false)
            .await
            .unwrap()
            .is_ok()
    );
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(rig.regions()[1].3, "still drained");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!rig.regions()[1].3, "ended");
    assert!(rig.saved().drains.0.is_empty(), "and persisted");
    let ended = &rig.audit()[1];
    assert_eq!(
        (&ended["action"], &ended["region"], &ended["time"]),
        (
            &"drain-ended".into(),
            &"europe1".into(),
            &(BASE + 30).into()
        ),
        "audited when it ended: {ended}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_ended_while_stopped_ends_and_is_audited_at_start() {
    let mut saved = StateFile {
        version: 1,
        ..StateFile::default()
    };
    let record = |until| DrainRecord {
        reason: "maintenance".into(),
        by: "ops".into(),
        since: BASE - 100,
        until,
    };
    saved
        .drains
        .0
        .insert("europe1".into(), record(Some(BASE - 10)));
    saved.drains.0.insert("us1".into(), record(None));
    let rig = rig_saved(&ALL, Some(saved)).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let audit = rig.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (&audit[0]["action"], &audit[0]["region"], &audit[0]["time"]),
        (&"drain-ended".into(), &"europe1".into(), &BASE.into())
    );
    assert_eq!(rig.saved().drains.0.keys().collect::<Vec<_>>(), ["us1"]);
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_saved_and_published_once() {
    let rig = rig(&ALL).await;
    let before = rig.handle.counters().publishes.load(Relaxed);
    let rounds: Vec<_> = (0..10).map(|_| rig.round(1, "asia1", true)).collect();
    let drain = rig.drain("europe1", None, false);
    assert_eq!(rig.handle.queue_depth(), 11);
    assert!(drain.await.unwrap().is_ok());
    for r in rounds {
        r.await.unwrap();
    }
    assert_eq!(rig.handle.counters().publishes.load(Relaxed), before + 1);
    assert_eq!(rig.handle.queue_depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_last_serving_region_is_refused_in_order() {
    let rig = rig(&["europe1", "us1"]).await;
    // Queued together: the first drain leaves us1 the last one serving.
    let a = rig.drain("europe1", None, false);
    let b = rig.drain("us1", None, false);
    let c = rig.drain("mars1", None, true);
    assert!(a.await.unwrap().is_ok());
    match b.await.unwrap() {
        Err(StateError::LastServing { geo_names, .. }) => assert_eq!(geo_names, ["mgnt.mkcld.io."]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.await.unwrap(), Err(StateError::NoRegion(_))));
    assert!(
        rig.drain("us1", None, true).await.unwrap().is_ok(),
        "forced"
    );
    assert_eq!(rig.handle.counters().fail_open_events.load(Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn when_persisting_fails_rounds_are_published_and_operator_changes_refused() {
    let rig = rig(&ALL).await;
    // The state directory becomes a file: nothing can be written under it.
    let dir = rig.fixture.path("state");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::write(&dir, "").unwrap();
    let a = rig.round(1, "us1", false);
    let b = rig.round(1, "us1", false);
    let drain = rig.drain("europe1", None, false);
    let reload = rig.reload(&["europe1", "us1"]);
    assert_eq!(b.await.unwrap().status, Status::Down);
    assert!(a.await.is_ok());
    assert!(matches!(drain.await.unwrap(), Err(StateError::Persist(_))));
    assert!(matches!(reload.await.unwrap(), Err(StateError::Persist(_))));
    assert_eq!(
        rig.regions(),
        [
            row("asia1", true, Status::Up, false),
            row("europe1", true, Status::Up, false),
            row("us1", false, Status::Down, false),
        ],
        "health published, drain and reload undone"
    );
    assert_eq!(rig.handle.snapshot().data.generation, 1);
    assert_eq!(rig.handle.counters().persist_failures.load(Relaxed), 1);
    assert_eq!(rig.handle.counters().reload_failures.load(Relaxed), 1);
    // Writable again: the next command goes through.
    std::fs::remove_file(&dir).unwrap();
    assert!(rig.drain("europe1", None, false).await.unwrap().is_ok());
    assert_eq!(rig.saved().regions["us1"].status, Status::Down);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_owner_answers_stopped() {
    let rig = rig(&ALL).await;
    rig.task.abort();
    let request = DrainRequest {
        reason: "x".into(),
        until: None,
        force: false,
        by: "ops".into(),
    };
    assert!(matches!(
        rig.handle.drain("europe1", request).await,
        Err(StateError::Stopped)
    ));
}

#[tokio::test(start_paused = true)]
async fn restart_only_settings_are_compared_with_the_running_config() {
    let rig = rig(&ALL).await;
    let text = std::fs::read_to_string(rig.fixture.path("mgnt.toml")).unwrap();
    let moved = text.replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:5399\"]",
    );
    std::fs::write(rig.fixture.path("mgnt.toml"), &moved).unwrap();
    let report = rig.handle.reload("ops").await.unwrap();
    assert_eq!(report.needs_restart, ["dns.listen"]);
    assert_eq!(
        rig.handle.reload("ops").await.unwrap().needs_restart,
        ["dns.listen"],
        "still"
    );
    let port = |rig: &Rig| rig.handle.snapshot().data.config.dns.listen[0].port();
    assert_eq!(port(&rig), 0, "published as it runs");
    std::fs::write(rig.fixture.path("mgnt.toml"), &text).unwrap();
    assert!(
        rig.handle
            .reload("ops")
            .await
            .unwrap()
            .needs_restart
            .is_empty(),
        "back as started"
    );
    let audited: Vec<_> = rig
        .audit()
        .iter()
        .map(|e| e["needs_restart"].clone())
        .collect();
    let listen = serde_json::json!(["dns.listen"]);
    assert_eq!(audited, [listen.clone(), listen, serde_json::Value::Null]);
    let hash = rig.handle.snapshot().data.config_hash.to_string();
    assert_eq!(rig.audit()[2]["config_hash"], hash.as_str());
}

#[tokio::test(start_paused = true)]
async fn provisioning_added_by_a_reload_waits_for_a_restart() {
    let rig = rig(&ALL).await;
    let file = rig.fixture.path("mgnt.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let added =
        format!("{text}[provision]\npool = \"100.64.0.0/16\"\nconnect_to = \"vpn.example\"\n");
    std::fs::write(&file, added).unwrap();
    let report = rig.handle.reload("ops").await.unwrap();
    assert_eq!(report.needs_restart, ["provision"]);
    assert!(
        rig.handle.snapshot().data.config.provision.is_none(),
        "nothing started it: it is published as off"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_reload_is_audited_with_its_error() {
    let rig = rig(&ALL).await;
    std::fs::write(rig.fixture.path("mgnt.toml"), "[dns").unwrap();
    assert!(matches!(
        rig.handle.reload("SIGHUP").await,
        Err(StateError::Load(_))
    ));
    let audit = rig.audit();
    assert_eq!(
        (&audit[0]["action"], &audit[0]["token"]),
        (&"reload".into(), &"SIGHUP".into())
    );
    let outcome = audit[0]["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("failed: ") && outcome.contains("mgnt.toml"),
        "{outcome}"
    );
}

/// A shared store stand-in: what other nodes wrote arrives on channels,
/// and this node's last saved version is set by the test.
struct Shares {
    rx: std::sync::Mutex<Option<mpsc::Receiver<Shared>>>,
    votes: std::sync::Mutex<Option<mpsc::Receiver<Votes>>>,
    saved: Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl StateStore for Shares {
    async fn load(&self) -> Option<crate::state::file::StateFile> {
        None
    }

    async fn save(
        &self,
        _: crate::state::file::StateFile,
        _: Vec<audit::Entry>,
    ) -> Result<(), crate::state::store::StoreError> {
        Ok(())
    }

    fn shared(&self) -> Option<mpsc::Receiver<Shared>> {
        self.rx.lock().ok()?.take()
    }

    fn votes(&self) -> Option<mpsc::Receiver<Votes>> {
        self.votes.lock().ok()?.take()
    }

    fn saved_version(&self) -> u64 {
        self.saved.load(Relaxed)
    }
}

#[tokio::test(start_paused = true)]
async fn shared_drains_are_adopted_unless_older_than_our_own_last_change() {
    let fixture = Fixture::new(ROWS);
    let data = fixture.load(&ALL, &ALL, "");
    let (tx, rx) = mpsc::channel(4);
    let saved = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let store = Shares {
        rx: std::sync::Mutex::new(Some(rx)),
        votes: std::sync::Mutex::new(None),
        saved: saved.clone(),
    };
    let clock: Clock = Arc::new(|| BASE);
    let (handle, _task) = start(
        data,
        fixture.path("mgnt.toml"),
        Box::new(store),
        false,
        clock,
    )
    .await;
    let drained = |handle: &Handle| -> Vec<String> {
        let s = handle.snapshot();
        s.regions
            .iter()
            .filter(|r| r.drain.is_some())
            .map(|r| r.name.clone())
            .collect()
    };
    let record = DrainRecord {
        reason: "elsewhere".into(),
        by: "ops".into(),
        since: BASE,
        until: None,
    };
    let mut one = crate::state::drain::Drains::default();
    one.0.insert("us1".into(), record);
    let settle = || tokio::time::sleep(Duration::from_millis(10));

    tx.send(Shared {
        version: 3,
        drains: one.clone(),
    })
    .await
    .unwrap();
    settle().await;
    assert_eq!(drained(&handle), ["us1"], "another node's drain is adopted");

    // Our own change saved as version 5: a read of version 4 predates it.
    saved.store(5, Relaxed);
    let none = crate::state::drain::Drains::default();
    tx.send(Shared {
        version: 4,
        drains: none.clone(),
    })
    .await
    .unwrap();
    settle().await;
    assert_eq!(drained(&handle), ["us1"], "a stale read is not adopted");
    tx.send(Shared {
        version: 5,
        drains: none,
    })
    .await
    .unwrap();
    settle().await;
    assert!(drained(&handle).is_empty(), "the current one is");
}

#[tokio::test(start_paused = true)]
async fn other_nodes_votes_keep_a_region_until_they_fall_silent() {
    let fixture = Fixture::new(ROWS);
    let data = fixture.load(&ALL, &ALL, "[node]\nname = \"a\"\n");
    let (votes_tx, votes_rx) = mpsc::channel(4);
    let store = Shares {
        rx: std::sync::Mutex::new(None),
        votes: std::sync::Mutex::new(Some(votes_rx)),
        saved: Arc::default(),
    };
    let start_at = tokio::time::Instant::now();
    let clock: Clock = Arc::new(move || BASE + start_at.elapsed().as_secs());
    let (handle, _task) = start(
        data,
        fixture.path("mgnt.toml"),
        Box::new(store),
        false,
        clock,
    )
    .await;
    let us1 = |handle: &Handle| {
        let s = handle.snapshot();
        let r = s.regions.iter().find(|r| r.name == "us1").unwrap().clone();
        let v = r.votes.unwrap();
        (r.serving, v.down, v.counted, v.quorum)
    };
    let settle = || tokio::time::sleep(Duration::from_millis(10));
    let round = |ok| {
        let (reply, answer) = oneshot::channel();
        let report = Report {
            generation: 1,
            region: "us1".into(),
            round: Round {
                at: BASE,
                ok,
                results: vec![],
            },
            reply,
        };
        handle.inputs.try_send(Input::Report(report)).unwrap();
        answer
    };
    round(false).await.unwrap();
    assert_eq!(round(false).await.unwrap().status, Status::Down);
    assert_eq!(us1(&handle), (false, 1, 1, 1), "alone, a decides alone");

    // b reaches us1: one of two is not a majority.
    let b = |reported| {
        let vote = crate::health::quorum::Vote {
            node: "b".into(),
            down: false,
            reported,
        };
        Votes::from([("us1".to_owned(), vec![vote])])
    };
    votes_tx.send(b(BASE)).await.unwrap();
    settle().await;
    assert_eq!(us1(&handle), (true, 1, 2, 2));
    // The same say, reported again: nothing new to publish.
    let publishes = handle.counters().publishes.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(100)).await;
    votes_tx.send(b(BASE + 100)).await.unwrap();
    settle().await;
    assert_eq!(handle.counters().publishes.load(Relaxed), publishes);

    // b falls silent: two intervals (600 s) after its last report its vote
    // stops counting, and the owner publishes that by itself.
    tokio::time::sleep(Duration::from_secs(599)).await;
    assert_eq!(us1(&handle), (true, 1, 2, 2));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(us1(&handle), (false, 1, 1, 1));
}
