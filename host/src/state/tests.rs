//! What every state store must do, checked on each: SQLite (in memory) and
//! PostgreSQL (the server on this machine, `SYNCHOST_TEST_POSTGRES` or
//! postgres://postgres@127.0.0.1:5432/test, in a schema of the test's own,
//! dropped after it). Without the server these tests fail, naming it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// The fleet's lease time, as a host would open the store with it.
const LEASE_TIME: Duration = Duration::from_secs(15);

fn postgres_url() -> String {
    std::env::var("SYNCHOST_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of its own in the test database, dropped with this.
struct TestSchema {
    name: String,
}

impl TestSchema {
    fn new() -> TestSchema {
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("synchost_state_test_{}_{nanos}_{made}", std::process::id());
        let schema = TestSchema { name };
        schema.execute(&format!("CREATE SCHEMA {}", schema.name));
        schema
    }

    /// A URL whose sessions keep their tables in this schema.
    fn url(&self) -> String {
        format!("{}?options=-csearch_path%3D{}", postgres_url(), self.name)
    }

    fn store(&self) -> PostgresStore {
        PostgresStore::open(&self.url(), None, LEASE_TIME)
            .unwrap_or_else(|e| panic!("cannot open the PostgreSQL store: {e}"))
    }

    /// Runs `sql` on a session of its own, in this schema.
    fn execute(&self, sql: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let url = postgres_url();
            let (client, connection) =
                tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(&url, tokio_postgres::NoTls))
                    .await
                    .unwrap_or_else(|_| panic!("PostgreSQL at {url} did not answer in 10 s: these tests need it"))
                    .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url} (these tests need it): {e}"));
            tokio::spawn(connection);
            client
                .batch_execute(&format!("SET search_path TO {}; {sql}", self.name))
                .await
                .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
        });
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        self.execute(&format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

const LEASE: Duration = Duration::from_secs(60);

/// Starts a run of `pipeline` as holder `test`, taking its lease first.
fn start(store: &dyn StateStore, pipeline: &PipelineId, mode: Mode) -> RunId {
    store.start_run(&lease(store, pipeline, "test"), mode, &BTreeMap::new()).unwrap()
}

/// The lease of `pipeline` for `holder`, which must be free.
fn lease(store: &dyn StateStore, pipeline: &PipelineId, holder: &str) -> Lease {
    match store.acquire_lease(pipeline, holder, LEASE, Some("v1")).unwrap() {
        LeaseAnswer::Granted(lease) => lease,
        LeaseAnswer::HeldBy(lease) => panic!("{pipeline} is held by {}", lease.holder),
    }
}

/// Runs `test` on each store.
fn each_store(test: impl Fn(&dyn StateStore)) {
    test(&SqliteStore::in_memory().unwrap());
    let schema = TestSchema::new();
    test(&schema.store());
}

#[test]
fn a_committed_batch_moves_the_cursor_and_keeps_dead_letters() {
    each_store(|store| {
        let pipeline = PipelineId::new("acme", "orders");
        assert_eq!(store.cursor(&pipeline).unwrap(), None);
        let run = start(store, &pipeline, Mode::Event);
        let letter = NewDeadLetter {
            position: "42".into(),
            key: "k1".into(),
            operation: serde_json::json!({"delete": "k1"}),
            reason: "rejected error: no such record".into(),
        };
        let stats = RunStats { read: 3, batches: 1, ..RunStats::default() };
        let batch = BatchStats { seq: 1, cursor_after: "120".into(), ..BatchStats::default() };
        store
            .commit_event_batch(&EventCommit {
                run,
                pipeline: &pipeline,
                cursor: "120",
                queued: &[],
                unqueued: &[],
                dead_letters: &[letter],
                superseded_letters: &[],
                queue_seen_up_to: 0,
                applied_keys: &|_| false,
                batch: &batch,
                previous_commit_ms: None,
                stats: &stats,
            })
            .unwrap();
        assert_eq!(store.cursor(&pipeline).unwrap().as_deref(), Some("120"));
        let letters = store.dead_letters(&pipeline).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!((letters[0].key.as_str(), letters[0].run), ("k1", run));
        assert_eq!(letters[0].operation, serde_json::json!({"delete": "k1"}));
        assert_eq!(store.run(run).unwrap().unwrap().stats, stats);
        // Another pipeline's cursor is its own.
        assert_eq!(store.cursor(&PipelineId::new("acme", "other")).unwrap(), None);
    });
}

#[test]
fn runs_are_listed_newest_first_with_their_outcome_and_found_by_filter() {
    each_store(|store| {
        let pipeline = PipelineId::new("acme", "roster");
        let mut plugins = BTreeMap::new();
        plugins.insert("source".to_string(), "ab12".to_string());
        let first = store.start_run(&lease(store, &pipeline, "test"), Mode::Diff, &plugins).unwrap();
        let stats = RunStats { created: 5, cursor_after: Some("x".into()), ..RunStats::default() };
        store.finish_run(first, RunStatus::Failed, &stats, Some("source failed")).unwrap();
        let second = start(store, &pipeline, Mode::Diff);
        let other = start(store, &PipelineId::new("globex", "roster"), Mode::Event);

        let runs = store.runs(Some(&pipeline), 10).unwrap();
        assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![second, first]);
        assert_eq!(runs[1].status, RunStatus::Failed);
        assert_eq!(runs[1].error.as_deref(), Some("source failed"));
        assert_eq!(runs[1].stats, stats);
        assert_eq!(runs[1].plugins, plugins);
        assert!(runs[1].finished_at.is_some());
        assert_eq!(runs[0].status, RunStatus::Running);
        assert_eq!(store.runs(None, 2).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![other, second]);

        let found = |filter: RunFilter| store.find_runs(&filter).unwrap().iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            found(RunFilter { tenant: Some("acme".into()), limit: 10, ..RunFilter::default() }),
            [second, first]
        );
        assert_eq!(found(RunFilter { status: Some(RunStatus::Failed), limit: 10, ..RunFilter::default() }), [first]);
        assert_eq!(found(RunFilter { before: Some(other), limit: 1, ..RunFilter::default() }), [second]);
        assert_eq!(found(RunFilter { pipeline: Some("roster".into()), limit: 10, ..RunFilter::default() }).len(), 3);

        let event_run = store.run(other).unwrap().unwrap();
        assert_eq!((event_run.mode, event_run.pipeline.tenant.as_str()), (Mode::Event, "globex"));
        store.forget_run(other).unwrap();
        assert!(store.run(other).unwrap().is_none());
    });
}

#[test]
fn pauses_managed_keys_and_permitted_loads_are_kept_per_pipeline() {
    each_store(|store| {
        let orders = PipelineId::new("acme", "orders");
        let roster = PipelineId::new("acme", "roster");
        let pause = Pause { at: now(), reason: Some("maintenance".into()) };
        store.set_pause(&orders, Some(&pause)).unwrap();
        store.set_pause(&orders, Some(&pause)).unwrap();
        assert_eq!(store.pauses().unwrap().into_iter().collect::<Vec<_>>(), [(orders.clone(), pause)]);
        store.set_pause(&orders, None).unwrap();
        assert!(store.pauses().unwrap().is_empty());

        let run = start(store, &roster, Mode::Diff);
        store.update_managed_keys(run, &["a".into(), "b".into(), "c".into()], &[]).unwrap();
        store.update_managed_keys(run, &["a".into(), "d".into()], &["b".into()]).unwrap();
        let mut keys: Vec<String> = store.managed_keys(&roster).unwrap().into_iter().collect();
        keys.sort();
        assert_eq!(keys, ["a", "c", "d"]);
        assert!(store.managed_keys(&orders).unwrap().is_empty());

        assert_eq!(store.permitted_load(&roster).unwrap(), None);
        let load = PermittedLoad { run: 7, why: "initial load".into(), writes: 100, deletes: 0 };
        store.set_permitted_load(run, Some(&load)).unwrap();
        let approved = PermittedLoad { run: 9, why: "approved plan".into(), writes: 3, deletes: 2 };
        store.set_permitted_load(run, Some(&approved)).unwrap();
        assert_eq!(store.permitted_load(&roster).unwrap(), Some(approved));
        store.set_permitted_load(run, None).unwrap();
        assert_eq!(store.permitted_load(&roster).unwrap(), None);
    });
}

fn retry(key: &str, position: &str, attempts: u32) -> NewRetry {
    NewRetry {
        key: key.into(),
        position: position.into(),
        operation: serde_json::json!({"delete": key}),
        attempts,
        next_attempt_at: 1_000,
        last_error: "transient error: busy".into(),
    }
}

#[derive(Default)]
struct CommitParts {
    queued: Vec<NewRetry>,
    unqueued: Vec<String>,
    dead_letters: Vec<NewDeadLetter>,
    superseded: Vec<(String, String)>,
    applied: Vec<&'static str>,
    seen: i64,
}

fn commit(store: &dyn StateStore, run: RunId, pipeline: &PipelineId, seq: u64, parts: CommitParts) {
    let applied: Vec<String> = parts.applied.iter().map(|k| k.to_string()).collect();
    let applied_keys = move |key: &str| applied.iter().any(|k| k == key);
    let batch = BatchStats { seq, ..BatchStats::default() };
    store
        .commit_event_batch(&EventCommit {
            run,
            pipeline,
            cursor: &format!("{seq}0"),
            queued: &parts.queued,
            unqueued: &parts.unqueued,
            dead_letters: &parts.dead_letters,
            superseded_letters: &parts.superseded,
            queue_seen_up_to: parts.seen,
            applied_keys: &applied_keys,
            batch: &batch,
            previous_commit_ms: (seq > 1).then_some((seq - 1, 2.5)),
            stats: &RunStats::default(),
        })
        .unwrap();
}

#[test]
fn run_archives_are_kept_appended_to_and_pruned_per_run() {
    each_store(|store| {
        let pipeline = PipelineId::new("acme", "main");
        let first = start(store, &pipeline, Mode::Diff);
        // Bytes as they are: zstd frames, with every byte value.
        let plan: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024).collect();
        store.append_archive(first, "plan.jsonl.zst", &plan).unwrap();
        store.append_archive(first, "outcomes.jsonl.zst", b"\0first\n").unwrap();
        store.append_archive(first, "outcomes.jsonl.zst", b"approved\0\n").unwrap();
        assert_eq!(store.archive(first, "plan.jsonl.zst").unwrap().as_deref(), Some(&plan[..]));
        assert_eq!(store.archive(first, "outcomes.jsonl.zst").unwrap().as_deref(), Some(&b"\0first\napproved\0\n"[..]));
        assert_eq!(store.archive(first, "meta.json").unwrap(), None);

        store.finish_run(first, RunStatus::Succeeded, &RunStats::default(), None).unwrap();
        let second = store.start_run(&store.lease(&pipeline).unwrap().unwrap(), Mode::Diff, &BTreeMap::new()).unwrap();
        store.append_archive(second, "meta.json", b"{}").unwrap();
        store.drop_archives_except(&pipeline, &[second]).unwrap();
        assert_eq!(store.archive(first, "plan.jsonl.zst").unwrap(), None, "pruned");
        assert!(store.run(first).unwrap().is_some(), "the run's record stays");
        store.forget_run(second).unwrap();
        assert_eq!(store.archive(second, "meta.json").unwrap(), None, "a forgotten run keeps no archive");
    });
}

#[test]
fn an_approval_request_is_taken_by_one_live_host_and_left_to_another_once_that_one_is_gone() {
    each_store(|store| {
        let pipeline = PipelineId::new("acme", "main");
        let run = start(store, &pipeline, Mode::Diff);
        for host in ["host-a", "host-b"] {
            store.heartbeat(host, LEASE, 0, &BTreeMap::new()).unwrap();
        }
        store.request_approval(run, &pipeline, "command:x:1").unwrap();
        let pending = store.approval_requests().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].run, &pending[0].pipeline, pending[0].requested_by.as_str()),
            (run, &pipeline, "command:x:1")
        );

        assert!(store.claim_approval(run, "host-a").unwrap());
        assert!(!store.claim_approval(run, "host-b").unwrap(), "host-a is live and has it");
        store.leave("host-a").unwrap();
        assert!(store.claim_approval(run, "host-b").unwrap(), "host-a is gone: its request passes on");
        store.answer_approval(run, "{\"refused\":\"no\"}").unwrap();
        assert!(store.approval_requests().unwrap().is_empty(), "answered");
        assert!(!store.claim_approval(run, "host-c").unwrap(), "an answered request is not taken");
        let kept = store.approval(run).unwrap().unwrap();
        assert_eq!(
            (kept.claimed_by.as_deref(), kept.answer.as_deref()),
            (Some("host-b"), Some("{\"refused\":\"no\"}"))
        );

        // Asked again, it is asked anew.
        store.request_approval(run, &pipeline, "command:y:2").unwrap();
        let again = store.approval(run).unwrap().unwrap();
        assert_eq!((again.claimed_by, again.answer, again.requested_by.as_str()), (None, None, "command:y:2"));
    });
}

#[test]
fn the_retry_queue_holds_one_item_per_key_and_batches_keep_their_stats() {
    each_store(|store| {
        let pipeline = PipelineId::new("acme", "events");
        let run = start(store, &pipeline, Mode::Event);
        commit(
            store,
            run,
            &pipeline,
            1,
            CommitParts { queued: vec![retry("a", "1", 1), retry("b", "2", 1)], ..Default::default() },
        );
        // A later operation for `a` replaces its item (the last of two in one
        // batch wins); `b` is done with.
        commit(
            store,
            run,
            &pipeline,
            2,
            CommitParts {
                queued: vec![retry("a", "6", 2), retry("a", "7", 2)],
                unqueued: vec!["b".into()],
                seen: 2,
                ..Default::default()
            },
        );
        let queue = store.retry_queue(&pipeline).unwrap();
        assert_eq!(queue.len(), 1);
        assert_eq!((queue[0].key.as_str(), queue[0].position.as_str(), queue[0].attempts), ("a", "7", 2));
        assert_eq!(queue[0].operation, serde_json::json!({"delete": "a"}));
        assert_eq!(store.cursor(&pipeline).unwrap().as_deref(), Some("20"));
        store.set_batch_commit_time(run, 2, 4.0).unwrap();
        let batches = store.batches(run).unwrap();
        assert_eq!(batches.iter().map(|b| (b.seq, b.commit_ms)).collect::<Vec<_>>(), [(1, Some(2.5)), (2, Some(4.0))]);
    });
}

#[test]
fn dead_letters_are_requeued_unless_superseded_and_dropped_by_id() {
    each_store(|store| {
        let pipeline = PipelineId::new("acme", "events");
        let run = start(store, &pipeline, Mode::Event);
        let letter = |key: &str| NewDeadLetter {
            position: "5".into(),
            key: key.into(),
            operation: serde_json::json!({"delete": key}),
            reason: "rejected error: no".into(),
        };
        commit(
            store,
            run,
            &pipeline,
            1,
            CommitParts { dead_letters: vec![letter("a"), letter("b"), letter("c")], ..Default::default() },
        );
        commit(
            store,
            run,
            &pipeline,
            2,
            CommitParts { superseded: vec![("b".into(), "9".into()), ("b".into(), "12".into())], ..Default::default() },
        );
        let letters = store.dead_letters(&pipeline).unwrap();
        assert_eq!(letters.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(letters[1].superseded_by.as_deref(), Some("9"));

        let outcome = store.requeue_dead_letters(&pipeline, Some(&[letters[0].id, letters[1].id])).unwrap();
        assert_eq!(outcome.requeued, vec![letters[0].id]);
        assert_eq!(outcome.refused.len(), 1);
        assert!(outcome.refused[0].1.contains("was applied since"), "{:?}", outcome.refused);
        assert_eq!(store.retry_queue(&pipeline).unwrap()[0].key, "a");
        assert_eq!(store.dead_letters(&pipeline).unwrap().len(), 2, "the requeued letter left the dead letters");

        // A requeued item whose key a batch applied meanwhile is dropped by that batch's commit.
        commit(store, run, &pipeline, 3, CommitParts { applied: vec!["a"], seen: 0, ..Default::default() });
        assert!(store.retry_queue(&pipeline).unwrap().is_empty());

        assert_eq!(store.drop_dead_letters(&pipeline, Some(&[letters[2].id])).unwrap(), 1);
        assert_eq!(store.drop_dead_letters(&pipeline, None).unwrap(), 1);
        assert!(store.dead_letters(&pipeline).unwrap().is_empty());
    });
}

#[test]
fn a_lease_has_one_holder_until_it_ends_and_each_new_holder_gets_a_higher_token() {
    each_store(|store| {
        let pipeline = PipelineId::new("acme", "orders");
        let first = lease(store, &pipeline, "host-a");
        assert_eq!(first.token, 1);
        match store.acquire_lease(&pipeline, "host-b", LEASE, None).unwrap() {
            LeaseAnswer::HeldBy(held) => assert_eq!((held.holder.as_str(), held.token), ("host-a", 1)),
            LeaseAnswer::Granted(_) => panic!("two holders of one lease"),
        }
        // The holder asking again renews: same token.
        assert_eq!(lease(store, &pipeline, "host-a").token, 1);
        let renewed = store.renew_lease(&first, LEASE).unwrap().expect("still the holder");
        assert!(renewed.expires_at_ms >= first.expires_at_ms);
        // Released, it is free at once; the next holder's token is higher.
        store.release_lease(&first).unwrap();
        let second = lease(store, &pipeline, "host-b");
        assert_eq!(second.token, 2);
        assert_eq!(store.renew_lease(&first, LEASE).unwrap(), None, "the old holder learns it is gone");
        // A lease that ended without a release passes on too.
        let short = match store.acquire_lease(&pipeline, "host-b", Duration::from_millis(1), None).unwrap() {
            LeaseAnswer::Granted(lease) => lease,
            LeaseAnswer::HeldBy(_) => panic!("the holder's own lease"),
        };
        assert_eq!(short.token, 2);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(lease(store, &pipeline, "host-c").token, 3);
        let leases = store.leases().unwrap();
        assert_eq!(leases.iter().map(|l| (l.holder.as_str(), l.token)).collect::<Vec<_>>(), [("host-c", 3)]);
        assert_eq!(leases[0].version.as_deref(), Some("v1"));
        assert_eq!(store.lease(&pipeline).unwrap().as_ref(), leases.first());
        assert_eq!(store.lease(&PipelineId::new("acme", "never")).unwrap(), None);
    });
}

#[test]
fn a_run_whose_lease_passed_on_writes_nothing_and_each_refusal_is_counted() {
    each_store(|store| {
        let pipeline = PipelineId::new("acme", "events");
        let stale = lease(store, &pipeline, "host-a");
        let run = store.start_run(&stale, Mode::Event, &BTreeMap::new()).unwrap();
        commit(store, run, &pipeline, 1, CommitParts::default());
        assert_eq!(store.cursor(&pipeline).unwrap().as_deref(), Some("10"));

        // host-a stalls past its lease; host-b takes the pipeline over.
        store.release_lease(&stale).unwrap();
        let fresh = lease(store, &pipeline, "host-b");
        let taken_over = store.start_run(&fresh, Mode::Event, &BTreeMap::new()).unwrap();
        let old = store.run(run).unwrap().unwrap();
        assert_eq!(old.status, RunStatus::Abandoned, "the new holder's run ends the old one");
        assert!(old.error.unwrap().contains("passed to another holder"));

        // host-a comes back: none of its writes goes through.
        let batch = BatchStats { seq: 2, ..BatchStats::default() };
        let error = store
            .commit_event_batch(&EventCommit {
                run,
                pipeline: &pipeline,
                cursor: "99",
                queued: &[retry("k", "98", 1)],
                unqueued: &[],
                dead_letters: &[],
                superseded_letters: &[],
                queue_seen_up_to: 0,
                applied_keys: &|_| false,
                batch: &batch,
                previous_commit_ms: None,
                stats: &RunStats::default(),
            })
            .unwrap_err();
        assert!(error.is_fenced(), "{error}");
        assert!(error.to_string().contains("`host-b`'s, token 2"), "{error}");
        assert!(store.finish_run(run, RunStatus::Succeeded, &RunStats::default(), None).unwrap_err().is_fenced());
        assert!(store.update_managed_keys(run, &["k".into()], &[]).unwrap_err().is_fenced());
        assert!(store.append_archive(run, "plan.jsonl.zst", b"stale").unwrap_err().is_fenced());
        assert!(store.start_run(&stale, Mode::Event, &BTreeMap::new()).unwrap_err().is_fenced());
        assert_eq!(store.cursor(&pipeline).unwrap().as_deref(), Some("10"), "the cursor did not move");
        assert!(store.retry_queue(&pipeline).unwrap().is_empty());
        assert_eq!(store.run(run).unwrap().unwrap().status, RunStatus::Abandoned);
        assert_eq!(store.run(run).unwrap().unwrap().status, RunStatus::Abandoned);
        assert_eq!(store.archive(run, "plan.jsonl.zst").unwrap(), None, "nothing archived");
        assert_eq!(store.fenced_writes().unwrap().get(&pipeline), Some(&5));

        // The new holder's run writes as usual.
        commit(store, taken_over, &pipeline, 1, CommitParts::default());
        store.finish_run(taken_over, RunStatus::Succeeded, &RunStats::default(), None).unwrap();
        assert_eq!(store.run(taken_over).unwrap().unwrap().status, RunStatus::Succeeded);
    });
}

#[test]
fn hosts_are_live_while_they_beat_and_gone_once_they_leave_or_stop() {
    each_store(|store| {
        let versions = |v: &str| BTreeMap::from([("acme".to_string(), v.to_string())]);
        store.heartbeat("host-a", LEASE, 3, &versions("v1")).unwrap();
        store.heartbeat("host-b", Duration::from_millis(1), 2, &versions("v1")).unwrap();
        store.heartbeat("host-c", LEASE, 0, &BTreeMap::new()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        store.heartbeat("host-a", LEASE, 4, &versions("v2")).unwrap();
        let hosts = store.hosts().unwrap();
        assert_eq!(
            hosts.iter().map(|h| (h.id.as_str(), h.pipelines)).collect::<Vec<_>>(),
            [("host-a", 4), ("host-c", 0)]
        );
        assert_eq!(hosts[0].versions, versions("v2"));
        store.leave("host-c").unwrap();
        assert_eq!(store.hosts().unwrap().len(), 1);
    });
}

// --- PostgreSQL only ---

#[test]
fn hosts_opening_a_new_postgres_state_at_once_each_migrate_it_once() {
    let schema = TestSchema::new();
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let url = schema.url();
            std::thread::spawn(move || PostgresStore::open(&url, None, LEASE_TIME).map(drop).map_err(|e| e.to_string()))
        })
        .collect();
    for opener in openers {
        opener.join().unwrap().expect("every opener gets the store");
    }
    let store = schema.store();
    let run = start(&store, &PipelineId::new("acme", "orders"), Mode::Diff);
    assert!(store.run(run).unwrap().is_some());
}

/// The identity scoping the fences handed to destinations: the same state
/// keeps it across opens (and hosts), a new state gets another.
#[test]
fn a_state_keeps_its_identity_across_opens_and_a_new_state_has_another() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sqlite = |dir: &tempfile::TempDir| SqliteStore::open(dir.path()).unwrap().identity().to_string();
    let identity = sqlite(&first);
    assert_eq!(identity.len(), 32, "{identity}");
    assert_eq!(sqlite(&first), identity);
    assert_ne!(sqlite(&second), identity);

    let (first, second) = (TestSchema::new(), TestSchema::new());
    let identity = first.store().identity().to_string();
    assert_eq!(identity.len(), 32, "{identity}");
    assert_eq!(first.store().identity(), identity);
    assert_ne!(second.store().identity(), identity);
}

#[test]
fn a_postgres_state_newer_than_this_synchost_is_refused_naming_both_versions() {
    let schema = TestSchema::new();
    drop(schema.store());
    schema.execute("UPDATE synchost_schema_version SET version = 99");
    let error =
        PostgresStore::open(&schema.url(), None, LEASE_TIME).err().expect("a newer schema is refused").to_string();
    assert!(error.contains("schema version 99"), "{error}");
    assert!(error.contains(&format!("versions up to {}", postgres::MIGRATIONS.len())), "{error}");
}

#[test]
fn a_postgres_run_whose_process_died_on_this_machine_is_abandoned_but_not_one_of_another_machine() {
    let schema = TestSchema::new();
    let store = schema.store();
    let pipeline = PipelineId::new("acme", "orders");
    let here = start(&store, &pipeline, Mode::Event);
    let elsewhere = start(&store, &pipeline, Mode::Event);
    // A process that has ended: its id is free.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    schema.execute(&format!("UPDATE runs SET pid = {dead} WHERE id IN ({here}, {elsewhere})"));
    schema.execute(&format!("UPDATE runs SET host = 'another-machine' WHERE id = {elsewhere}"));

    let next = start(&store, &pipeline, Mode::Event);
    let here = store.run(here).unwrap().unwrap();
    assert_eq!(here.status, RunStatus::Abandoned);
    assert!(here.error.unwrap().contains(&format!("pid {dead}")));
    // Whether a process of another machine is gone, only that machine knows.
    assert_eq!(store.run(elsewhere).unwrap().unwrap().status, RunStatus::Running);
    assert_eq!(store.run(next).unwrap().unwrap().status, RunStatus::Running);
}

#[test]
fn a_lease_whose_holder_process_on_this_machine_is_gone_can_be_taken_at_once() {
    let schema = TestSchema::new();
    let store = schema.store();
    let pipeline = PipelineId::new("acme", "orders");
    let killed = lease(&store, &pipeline, "command:killed");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    schema.execute(&format!("UPDATE leases SET pid = {dead}"));
    let next = lease(&store, &pipeline, "command:next");
    assert_eq!(next.token, killed.token + 1);
    // A live holder's lease is never taken early.
    assert!(matches!(store.acquire_lease(&pipeline, "command:third", LEASE, None).unwrap(), LeaseAnswer::HeldBy(_)));
}
