//! `EtcdStore` and `Leader` against a real etcd: fencing of a deposed
//! leader, the local leadership deadline, batches split across
//! transactions, and refusal of foreign or newer state. (What the store
//! does with records is pinned by the contract test, `tests/contract.rs`,
//! against `RedbStore` and a reference model.)

#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{EtcdCluster, EtcdServer};
use medic_policy::{Event, HostId, Quarantine, QuarantineCause, Time};
use medic_store::{
    EtcdConfig, EtcdStore, HistoryQuery, Leader, Record, SCHEMA_VERSION, Store, StoreError,
};

fn t0() -> Time {
    Time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn quarantined(name: &str) -> Record {
    Record::Policy(Event::HostQuarantined(Quarantine {
        host: HostId::new(name).unwrap(),
        cause: QuarantineCause::Manual,
        actor: "alice".into(),
        reason: "flapping disk".into(),
        since: t0(),
    }))
}

fn batch(names: &[&str]) -> Vec<(Time, Record)> {
    names.iter().map(|n| (t0(), quarantined(n))).collect()
}

fn config(server: &EtcdServer, prefix: &str) -> EtcdConfig {
    EtcdConfig::new(vec![server.endpoint.clone()], prefix)
}

/// A store on `prefix` whose writes are fenced by a fresh campaign.
fn leading(server: &EtcdServer, prefix: &str, name: &str) -> (EtcdStore, Leader) {
    let store = EtcdStore::connect(&config(server, prefix)).unwrap();
    let leader = Leader::campaign(&store, name, Duration::from_secs(5)).unwrap();
    store.set_fence(Some(leader.fence().clone()));
    (store, leader)
}

fn all_ids(store: &EtcdStore) -> Vec<u64> {
    store
        .history(&HistoryQuery {
            limit: 10_000,
            ..Default::default()
        })
        .unwrap()
        .entries
        .iter()
        .map(|e| e.id)
        .collect()
}

fn assert_not_leader<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    match r {
        Err(StoreError::NotLeader { .. }) => {}
        other => panic!("expected NotLeader, got {other:?}"),
    }
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn deposed_leader_cannot_write_and_the_new_leader_continues_the_ids() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let (a, leader_a) = leading(&server, "/medic/fence", "coordinator-a");
    assert!(leader_a.is_leader());
    let first = a.append(batch(&["h1", "h2", "h3"])).unwrap();
    assert_eq!(first.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3]);
    // A snapshot, so that compaction would have entries to remove.
    a.snapshot(&a.load().unwrap().state, 3).unwrap();

    let b = EtcdStore::connect(&config(&server, "/medic/fence")).unwrap();
    assert!(
        Leader::try_acquire(&b, "coordinator-b", Duration::from_secs(5))
            .unwrap()
            .is_none(),
        "A leads: B cannot"
    );
    assert_not_leader(b.append(batch(&["b0"])));
    assert_eq!(b.leader_name().unwrap().as_deref(), Some("coordinator-a"));

    // A's lease ends behind its back (as when it expires while A is
    // paused or partitioned): etcd deletes A's leader key, B takes over.
    let lease = leader_a.fence().lease;
    server.with_client(async |c| c.lease_revoke(lease).await);
    assert_eq!(
        b.leader_name().unwrap(),
        None,
        "nobody leads once the lease is gone"
    );
    let leader_b = Leader::campaign(&b, "coordinator-b", Duration::from_secs(5)).unwrap();
    b.set_fence(Some(leader_b.fence().clone()));
    assert_eq!(a.leader_name().unwrap().as_deref(), Some("coordinator-b"));
    assert_ne!(leader_b.fence().revision, leader_a.fence().revision);

    // A's store still carries A's fence: the etcd transaction refuses it,
    // whatever A's local flag says.
    assert_not_leader(a.append(batch(&["a4"])));
    assert_not_leader(a.append(batch(&["a5", "a6", "a7"])));
    let state = a.load().unwrap().state;
    assert_not_leader(a.snapshot(&state, 3));
    assert_not_leader(a.compact(
        medic_store::Retention {
            max_age: Duration::ZERO,
            max_entries: 0,
        },
        t0(),
    ));
    assert_eq!(all_ids(&b), [1, 2, 3], "nothing of A's writes is visible");

    let next = b.append(batch(&["b4", "b5"])).unwrap();
    assert_eq!(next.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 5]);
    let loaded = a.load().unwrap();
    assert_eq!(loaded.last_id, 5);
    assert!(
        !loaded
            .state
            .quarantines
            .contains_key(&HostId::new("a4").unwrap())
    );
    assert_eq!(loaded.state.quarantines.len(), 5);

    // A's keep-alive hears that its lease is gone and stops believing.
    wait_until("A notices", Duration::from_secs(5), || {
        !leader_a.is_leader()
    });
    assert!(leader_b.is_leader());
}

#[test]
fn resigning_hands_leadership_over_at_once() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let (a, leader_a) = leading(&server, "/medic/resign", "a");
    a.append(batch(&["h1"])).unwrap();
    let b = EtcdStore::connect(&config(&server, "/medic/resign")).unwrap();
    let waiting = std::thread::spawn(move || {
        let leader = Leader::campaign(&b, "b", Duration::from_secs(30)).unwrap();
        b.set_fence(Some(leader.fence().clone()));
        let e = b.append(batch(&["h2"])).unwrap();
        (e[0].id, leader.is_leader())
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    leader_a.resign().unwrap();
    let (id, b_leads) = waiting.join().unwrap();
    assert_eq!(id, 2);
    assert!(b_leads);
    // The waiting campaign watched the key: it did not wait out a TTL.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_not_leader(a.append(batch(&["h3"])));
}

/// ARCHITECTURE.md, "High availability": a leader that loses its etcd session
/// stops granting at once, before its lease could have expired on the etcd side.
#[test]
fn leader_that_cannot_renew_stops_believing_before_its_lease_could_expire() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let ttl = Duration::from_secs(3);
    let store = EtcdStore::connect(&config(&server, "/medic/deadline")).unwrap();
    let leader = Leader::campaign(&store, "a", ttl).unwrap();
    // Renewals move the deadline forward.
    let first = leader.valid_until().unwrap();
    wait_until("a renewal", Duration::from_secs(3), || {
        leader.valid_until().is_some_and(|u| u > first)
    });

    // etcd freezes: no renewal can be confirmed from now on.
    let frozen = Instant::now();
    let stop = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &server.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    stop("-STOP");
    let until = leader.valid_until().unwrap();
    // The last confirmed renewal was sent before the freeze; etcd's expiry
    // is at least a TTL after it received it.
    assert!(
        until < frozen + ttl,
        "local deadline {:?} after the freeze must be under the TTL {ttl:?}",
        until - frozen
    );
    wait_until("leadership ends locally", ttl, || !leader.is_leader());
    let lost_after = frozen.elapsed();
    stop("-CONT");
    assert!(lost_after < ttl, "lost after {lost_after:?}");
    // Lost is for good, even though etcd may not have expired the lease.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!leader.is_leader());
    assert_eq!(leader.valid_until(), None);
}

#[test]
fn batches_larger_than_one_transaction_are_split_and_stay_in_order() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let (store, _leader) = leading(&server, "/medic/split", "a");
    // 300 entries: more than etcd's 128 operations per transaction.
    let names: Vec<String> = (0..300).map(|i| format!("h{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let entries = store.append(batch(&names)).unwrap();
    assert_eq!(
        entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        (1..=300).collect::<Vec<_>>()
    );
    assert_eq!(all_ids(&store), (1..=300).collect::<Vec<_>>());
    let loaded = store.load().unwrap();
    assert_eq!(loaded.last_id, 300);
    assert_eq!(loaded.state.quarantines.len(), 300);

    // A snapshot larger than one request is written in pieces and loads
    // back whole.
    let small = EtcdConfig {
        max_txn_bytes: 24 * 1024,
        max_txn_ops: 4,
        ..config(&server, "/medic/split")
    };
    let small_store = EtcdStore::connect(&small).unwrap();
    small_store.set_fence(store.fence());
    small_store.snapshot(&loaded.state, 300).unwrap();
    small_store.snapshot(&loaded.state, 300).unwrap();
    assert_eq!(store.load().unwrap(), loaded);
    let pieces = server.with_client(async |c| {
        c.get(
            "/medic/split/snap/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
    });
    assert!(pieces.kvs().len() > 1, "the snapshot should be in pieces");
    assert!(
        pieces.kvs().iter().all(|kv| kv
            .key_str()
            .unwrap()
            .starts_with("/medic/split/snap/00000000000000000002/")),
        "older generations are deleted"
    );
}

/// A split batch becomes visible in its last transaction, when `last_id`
/// moves. Entries past `last_id` (what a batch that failed half-way leaves)
/// are never read, and the next batch overwrites them.
#[test]
fn entries_past_last_id_from_a_failed_batch_are_invisible_and_overwritten() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let (store, _leader) = leading(&server, "/medic/staged", "a");
    store.append(batch(&["h1", "h2"])).unwrap();
    let before = store.load().unwrap();
    let stray = serde_json::to_vec(&medic_store::Entry {
        id: 3,
        at: t0(),
        record: quarantined("never-committed"),
    })
    .unwrap();
    server.with_client(async |c| {
        c.put(
            "/medic/staged/log/00000000000000000003",
            stray.clone(),
            None,
        )
        .await?;
        c.put(
            "/medic/staged/log/00000000000000000004",
            stray.clone(),
            None,
        )
        .await
    });
    assert_eq!(store.load().unwrap(), before);
    assert_eq!(all_ids(&store), [1, 2]);
    let page = store
        .history(&HistoryQuery {
            newest_first: true,
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        page.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        [2, 1]
    );

    let e = store.append(batch(&["h3"])).unwrap();
    assert_eq!(e[0].id, 3);
    assert_eq!(all_ids(&store), [1, 2, 3]);
    let loaded = store.load().unwrap();
    assert!(
        loaded
            .state
            .quarantines
            .contains_key(&HostId::new("h3").unwrap())
    );
    assert!(
        !loaded
            .state
            .quarantines
            .contains_key(&HostId::new("never-committed").unwrap())
    );
}

#[test]
fn record_larger_than_one_request_is_refused_and_nothing_is_written() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let (store, _leader) = leading(&server, "/medic/large", "a");
    let huge = Record::ConfigReloaded {
        actor: "alice".into(),
        reason: "x".repeat(2 * 1024 * 1024),
        errors: Vec::new(),
    };
    let r = store.append(vec![(t0(), quarantined("h1")), (t0(), huge)]);
    assert!(matches!(r, Err(StoreError::TooLarge { .. })), "{r:?}");
    assert!(all_ids(&store).is_empty());
    assert_eq!(store.append(batch(&["h1"])).unwrap()[0].id, 1);
}

#[test]
fn two_stores_of_one_leader_never_interleave_ids() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let (a, leader) = leading(&server, "/medic/twice", "a");
    let b = EtcdStore::connect(&config(&server, "/medic/twice")).unwrap();
    b.set_fence(Some(leader.fence().clone()));
    let a = std::sync::Arc::new(a);
    let b = std::sync::Arc::new(b);
    let threads: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for _ in 0..20 {
                    let e = s.append(batch(&["x", "y"])).unwrap();
                    assert_eq!(e[1].id, e[0].id + 1, "a batch's ids are consecutive");
                    ids.extend(e.iter().map(|e| e.id));
                }
                ids
            })
        })
        .collect();
    let mut ids: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=80).collect::<Vec<_>>());
    assert_eq!(all_ids(&a), ids);
}

#[test]
fn newer_schema_stops_connect_and_is_left_alone() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    drop(EtcdStore::connect(&config(&server, "/medic/newer")).unwrap());
    let newer = (SCHEMA_VERSION + 1).to_string();
    server.with_client(async |c| {
        c.put("/medic/newer/meta/schema_version", newer.clone(), None)
            .await
    });
    match EtcdStore::connect(&config(&server, "/medic/newer")) {
        Err(StoreError::NewerSchema {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let v = server.with_client(async |c| c.get("/medic/newer/meta/schema_version", None).await);
    assert_eq!(v.kvs()[0].value(), newer.as_bytes());
}

#[test]
fn state_without_schema_is_corrupt_not_reset() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    server.with_client(async |c| {
        c.put("/medic/foreign/log/00000000000000000001", "{}", None)
            .await
    });
    match EtcdStore::connect(&config(&server, "/medic/foreign")) {
        Err(e @ StoreError::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(text.contains("no schema version"), "{text}");
            assert!(text.contains("etcd:/medic/foreign@"), "{text}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let schema =
        server.with_client(async |c| c.get("/medic/foreign/meta/schema_version", None).await);
    assert!(schema.kvs().is_empty(), "nothing was created");
}

#[test]
fn unreachable_etcd_is_an_error_not_a_hang() {
    // A loopback port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = EtcdConfig::new(vec![format!("http://127.0.0.1:{port}")], "/medic");
    config.connect_timeout = Duration::from_millis(300);
    config.request_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let r = EtcdStore::connect(&config);
    assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn store_can_be_dropped_inside_an_async_context() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let (store, leader) = leading(&server, "/medic/drop", "a");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        drop(leader);
        drop(store);
    });
}

/// The measurement behind BENCHMARKS.md ("Store: etcd against redb"): one
/// grant-sized entry per append, each durable before it returns, on both
/// backends in the same run. Run with `--no-capture` to see it.
#[test]
fn durable_appends_per_second_etcd_against_redb() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    const N: usize = 200;
    let measure = |store: &dyn Store| {
        let mut took = Vec::with_capacity(N);
        let start = Instant::now();
        for i in 0..N {
            let t = Instant::now();
            store.append(batch(&[&format!("h{i}")])).unwrap();
            took.push(t.elapsed());
        }
        let per_second = N as f64 / start.elapsed().as_secs_f64();
        took.sort();
        (per_second, took[N / 2], took[N * 99 / 100])
    };
    let dir = tempfile::tempdir().unwrap();
    let redb = medic_store::RedbStore::open(dir.path()).unwrap();
    let (etcd, _leader) = leading(&server, "/medic/bench", "a");
    let r = measure(&redb);
    let e = measure(&etcd);
    for (name, (per_second, p50, p99)) in [("redb", r), ("etcd", e)] {
        eprintln!(
            "{name}: {per_second:.0} durable appends/s, p50 {p50:?}, p99 {p99:?} ({N} appends)"
        );
    }
    assert_eq!(etcd.load().unwrap().last_id, N as u64);
}

/// etcd-client refuses responses over 4 MiB: state larger than that, in
/// one page of the log or in the snapshot's pieces, still loads (a fleet
/// reaches it after some thousands of grants in a day).
#[test]
fn state_larger_than_one_etcd_response_loads_whole() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let (store, _leader) = leading(&server, "/medic/large", "a");
    let reason = "x".repeat(100 * 1024);
    let records: Vec<(Time, Record)> = (0..60)
        .map(|i| {
            (
                t0(),
                Record::Policy(Event::HostQuarantined(Quarantine {
                    host: HostId::new(format!("h{i}")).unwrap(),
                    cause: QuarantineCause::Manual,
                    actor: "alice".into(),
                    reason: reason.clone(),
                    since: t0(),
                })),
            )
        })
        .collect();
    // 60 entries of 100 KiB: one page of the log is 6 MB.
    for chunk in records.chunks(10) {
        store.append(chunk.to_vec()).unwrap();
    }
    let loaded = store.load().unwrap();
    assert_eq!(loaded.last_id, 60);
    assert_eq!(loaded.state.quarantines.len(), 60);
    // The same state as a snapshot: pieces of up to 1.5 MiB, 6 MB in all.
    store.snapshot(&loaded.state, 60).unwrap();
    let again = store.load().unwrap();
    assert_eq!(again, loaded);
}

/// Loses member `down` of a three-member cluster and checks that a store
/// listing all three keeps working: the leader made before the loss keeps
/// its lease through two TTLs (renewals through another member), appends
/// and reads go on, and a store connected while the member is down starts.
fn survives_the_loss_of(cluster: &mut EtcdCluster, down: usize, case: &str) {
    let prefix = format!("/medic/member-down-{case}");
    // Room for etcd's own election (its election timeout is 500 ms here)
    // when the member killed leads the raft, on a loaded machine.
    let ttl = Duration::from_secs(3);
    let mut config = EtcdConfig::new(cluster.endpoints(), prefix.clone());
    config.connect_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(2);
    let store = EtcdStore::connect(&config).unwrap();
    let leader = Leader::campaign(&store, "a", ttl).unwrap();
    store.set_fence(Some(leader.fence().clone()));
    store.append(batch(&["before"])).unwrap();

    cluster.kill(down);
    let killed = Instant::now();
    // Writes and reads in a loop for longer than a lease TTL (so renewals
    // went through another member): none fails, the leadership holds.
    let mut n = 0;
    while killed.elapsed() < ttl + Duration::from_secs(1) {
        n += 1;
        store
            .append(batch(&[&format!("during-{n}")]))
            .unwrap_or_else(|e| panic!("append {n} with member {down} down: {e}"));
        assert!(
            leader.is_leader(),
            "leadership lapsed {:?} after member {down} died",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(all_ids(&store).len(), n + 1);
    // A replica (re)started now connects, loads and reads.
    let late = EtcdStore::connect(&config)
        .unwrap_or_else(|e| panic!("connect with member {down} down: {e}"));
    assert_eq!(late.load().unwrap().last_id, n as u64 + 1);
    assert_eq!(late.leader_name().unwrap().as_deref(), Some("a"));

    cluster.restart(down);
    store.append(batch(&["after"])).unwrap();
    assert!(leader.is_leader());
    assert_eq!(late.load().unwrap().last_id, n as u64 + 2);
    println!("member {down} down: {n} appends, leadership kept");
}

#[test]
fn losing_any_one_member_of_three_keeps_reads_writes_and_the_lease() {
    let Some(mut cluster) = EtcdCluster::start() else {
        return;
    };
    // The first listed endpoint (where requests start), the middle, the last.
    for down in 0..3 {
        survives_the_loss_of(&mut cluster, down, &format!("position-{down}"));
    }
    // And the member leading etcd's raft, on purpose: until the others
    // elect a leader every member refuses with "no leader" (or lets the
    // request time out), and requests go round the members again.
    let leader = cluster.raft_leader();
    survives_the_loss_of(&mut cluster, leader, "raft-leader");
}

#[test]
fn with_quorum_lost_an_error_names_every_endpoint_tried() {
    let Some(mut cluster) = EtcdCluster::start() else {
        return;
    };
    let endpoints = cluster.endpoints();
    cluster.kill(0);
    cluster.kill(1);
    let mut config = EtcdConfig::new(endpoints.clone(), "/medic/quorum-lost");
    config.connect_timeout = Duration::from_millis(300);
    config.request_timeout = Duration::from_millis(1000);
    let started = Instant::now();
    let err = match EtcdStore::connect(&config) {
        Err(StoreError::Backend(e)) => e,
        other => panic!("expected a backend error, got {other:?}"),
    };
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    for e in &endpoints {
        assert!(err.contains(e.as_str()), "{e} not named in: {err}");
    }
    // The dead members refuse the connection; the survivor, alone, has no
    // leader (or times out before it notices): each is said.
    assert!(err.contains("tried each of the 3 endpoints"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    println!("quorum lost: {err}");
}

/// The append's transaction went in and its answer was lost: the store
/// reads back, finds its own entries and returns them; nothing is written
/// twice (I6: the grant is durable once, under the ids returned).
#[cfg(feature = "failpoints")]
#[test]
fn an_append_whose_reply_was_lost_is_found_in_etcd_and_not_written_twice() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let (store, _leader) = leading(&server, "/medic/reply-lost", "a");
    store.append(batch(&["first"])).unwrap();
    // Only this test's process: nextest runs each test in its own.
    fail::cfg("medic-store::etcd::reply-lost", "1*return").unwrap();
    let entries = store.append(batch(&["second", "third"]));
    fail::remove("medic-store::etcd::reply-lost");
    let ids: Vec<u64> = entries.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![2, 3]);
    assert_eq!(all_ids(&store), vec![1, 2, 3]);
    store.append(batch(&["fourth"])).unwrap();
    assert_eq!(all_ids(&store), vec![1, 2, 3, 4]);
}

/// The outcome is unknown and the transaction never went in: the read-back
/// finds `last_id` unmoved and the store sends it again, once.
#[cfg(feature = "failpoints")]
#[test]
fn an_append_whose_outcome_was_unknown_and_did_not_land_is_sent_again_once() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let (store, _leader) = leading(&server, "/medic/unknown-unsent", "a");
    store.append(batch(&["first"])).unwrap();
    fail::cfg("medic-store::etcd::write", "1*return(unknown)").unwrap();
    let entries = store.append(batch(&["second", "third"]));
    fail::remove("medic-store::etcd::write");
    let ids: Vec<u64> = entries.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![2, 3]);
    assert_eq!(all_ids(&store), vec![1, 2, 3]);
}
