//! Every resource a caller can make the coordinator hold has a bound:
//! watch streams (per caller, in all, and what a reader that never reads
//! costs), and the hosts it remembers.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use medic_proto::pb::v1 as pb;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

fn config() -> String {
    format!(
        "[server]\nwatch_streams_per_caller = 2\nwatch_streams = 3\nwatch_stall_timeout = \
         \"1s\"\n[server.admission]\nper_second = 10000\nburst = 10000\n{FAST}"
    )
}

/// A channel whose streams take at most 1 KiB before the client reads:
/// a reader that does not read fills up at once.
async fn narrow_channel(server: &TestServer) -> Channel {
    Endpoint::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap()
}

/// `n` pauses and resumes: 2n history events.
async fn churn(admin: &mut Admin, n: usize) {
    for i in 0..n {
        admin
            .pause(pb::PauseRequest {
                scope: None,
                reason: format!("drill {i}"),
                duration: None,
            })
            .await
            .unwrap();
        admin
            .resume(pb::ResumeRequest {
                target: Some(pb::resume_request::Target::Scope(pb::Scope::default())),
                reason: format!("drill {i} over"),
            })
            .await
            .unwrap();
    }
}

async fn watch_all(
    channel: Channel,
) -> Result<tonic::Streaming<pb::WatchEventsResponse>, tonic::Status> {
    pb::admin_client::AdminClient::new(channel)
        .watch_events(pb::WatchEventsRequest {
            kinds: vec![],
            after_id: Some(0),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn watch_streams_are_capped_per_caller_and_a_reader_that_never_reads_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &config()).await;
    let mut admin = server.admin().await;
    churn(&mut admin, 300).await;

    // Two streams that never read: this caller's share.
    let mut first = watch_all(narrow_channel(&server).await).await.unwrap();
    let _second = watch_all(narrow_channel(&server).await).await.unwrap();
    let third = watch_all(narrow_channel(&server).await).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    assert!(
        third.message().contains("the most one caller may"),
        "{}",
        third.message()
    );

    // Stalled for the 1 s the config allows, both are cut off and their
    // places given back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _again = watch_all(narrow_channel(&server).await).await.unwrap();

    // The reader that comes back finds what was buffered, then why it
    // ended: at most one buffer's worth, not the whole backlog.
    let mut events = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), first.message())
            .await
            .expect("the stream ends")
        {
            Ok(Some(_)) => events += 1,
            Ok(None) => panic!("ended without saying why, after {events} events"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("read nothing for 1s"),
        "{status:?}"
    );
    assert!(status.message().contains("after_id"), "{status:?}");
    assert!(events < 600, "{events} events were buffered for one reader");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_backlog_is_streamed_in_full_to_a_reader_that_reads() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &config()).await;
    let mut admin = server.admin().await;
    churn(&mut admin, 400).await;
    let last = admin
        .get_history(pb::GetHistoryRequest {
            newest_first: true,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events[0]
        .id;
    let mut stream = watch_all(server.channel().await).await.unwrap();
    let mut ids = Vec::new();
    while ids.last() != Some(&last) {
        let e = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("the backlog keeps coming")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        ids.push(e.id);
    }
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(ids, expected, "every event once, in order");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn made_up_hosts_are_forgotten_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let toml = FAST.replace(
        "min_fleet_size = 1",
        "min_fleet_size = 1\nforget_hosts_after = \"10m\"",
    );
    let server = TestServer::start(dir.path(), &toml).await;
    let mut agent = server.agent().await;
    let mut admin = server.admin().await;
    for i in 0..500 {
        heartbeat(
            &mut agent,
            &format!("made-up-{i}"),
            labels(&[("rack", &format!("r{i}"))]),
            false,
        )
        .await;
    }
    heartbeat(&mut agent, "real-1", labels(&[]), true).await;
    server.advance(Duration::from_secs(3));
    let quarantined = "made-up-7";
    admin
        .quarantine(pb::QuarantineRequest {
            host_id: quarantined.into(),
            reason: "bad disk".into(),
        })
        .await
        .unwrap();
    let known = |admin: &mut Admin| {
        let mut admin = admin.clone();
        async move {
            admin
                .get_status(pb::GetStatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap()
                .known_hosts
        }
    };
    assert_eq!(known(&mut admin).await, 501);

    // The real host keeps heartbeating; the made-up ones never again.
    for _ in 0..11 {
        server.advance(Duration::from_secs(60));
        heartbeat(&mut agent, "real-1", labels(&[]), true).await;
    }
    // Forgetting is housekeeping: it happens on the next tick (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        known(&mut admin).await,
        2,
        "the live host and the quarantined one are kept"
    );
    let hosts = admin
        .list_hosts(pb::ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let mut ids: Vec<&str> = hosts.iter().map(|h| h.host_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["made-up-7", "real-1"]);
    server.stop().await.unwrap();
}

fn connection_config() -> String {
    format!(
        "[server]\nmax_connections_per_address = 3\nidle_timeout = \"2s\"\nrequest_timeout = \
         \"1s\"\n{}",
        FAST.replace(
            "heartbeat_interval = \"1s\"",
            "heartbeat_interval = \"500ms\""
        )
    )
}

#[tokio::test]
async fn connections_past_the_per_address_limit_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &connection_config()).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut fourth, Duration::from_millis(1000)).await,
        "the fourth connection from one address is closed"
    );
    let body = http_get(server.metrics_addr, "/metrics").await;
    assert!(
        body.contains("medic_connections_refused_total{reason=\"address\"} 1"),
        "{body}"
    );
    // One closed, one more fits.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(!closed_within(&mut again, Duration::from_millis(500)).await);
    drop(held);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &connection_config()).await;
    // A client that connects and never says anything.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // A watcher with an open stream and nothing to watch.
    let mut watcher = server.admin().await;
    let mut stream = watcher
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // An agent that calls every 500 ms.
    let mut agent = server.agent().await;
    let beating = async {
        for _ in 0..8 {
            heartbeat(&mut agent, "h1", labels(&[]), false).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (closed, ()) = tokio::join!(closed_within(&mut silent, Duration::from_secs(4)), beating);
    assert!(closed, "the silent connection was closed");
    // The agent's connection survived (the last heartbeat above went
    // through it), and so did the watcher's: an event still arrives.
    let mut admin = server.admin().await;
    admin
        .quarantine(pb::QuarantineRequest {
            host_id: "h1".into(),
            reason: "drill".into(),
        })
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the watch stream lives")
        .unwrap()
        .unwrap();
    assert!(e.event.is_some());
    let body = http_get(server.metrics_addr, "/metrics").await;
    assert!(
        body.contains("medic_connections_closed_idle_total 1"),
        "{body}"
    );
    server.stop().await.unwrap();
}

/// The embedded store, whose writes can be frozen, as a frozen disk would.
#[derive(Debug)]
struct Freezable {
    inner: medic_store::RedbStore,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl medic_store::Store for Freezable {
    fn load(&self) -> Result<medic_store::Loaded, medic_store::StoreError> {
        self.inner.load()
    }
    fn append(
        &self,
        records: Vec<(medic_policy::Time, medic_store::Record)>,
    ) -> Result<Vec<medic_store::Entry>, medic_store::StoreError> {
        while self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.inner.append(records)
    }
    fn snapshot(
        &self,
        state: &medic_policy::DurableState,
        upto: u64,
    ) -> Result<(), medic_store::StoreError> {
        self.inner.snapshot(state, upto)
    }
    fn history(
        &self,
        query: &medic_store::HistoryQuery,
    ) -> Result<medic_store::HistoryPage, medic_store::StoreError> {
        self.inner.history(query)
    }
    fn compact(
        &self,
        retention: medic_store::Retention,
        now: medic_policy::Time,
    ) -> Result<u64, medic_store::StoreError> {
        self.inner.compact(retention, now)
    }
}

#[tokio::test]
async fn healthz_reports_a_tick_stuck_behind_a_frozen_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = medic_coordinator::CoordinatorConfig::from_toml(&format!(
        "[server]\ntick_interval = \"100ms\"\n{FAST}"
    ))
    .unwrap();
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = Freezable {
        inner: medic_store::RedbStore::open(&dir.path().join("state")).unwrap(),
        frozen: frozen.clone(),
    };
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, metrics_addr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
    let (control, rx) = tokio::sync::mpsc::channel(4);
    let handle = tokio::spawn(medic_coordinator::run(
        config,
        None,
        store,
        medic_coordinator::Listeners { grpc, metrics },
        rx,
        std::sync::Arc::new(medic_coordinator::ManualClock::new(start_time())),
    ));
    let mut agent = Agent::new(
        Endpoint::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    heartbeat(&mut agent, "h1", labels(&[]), false).await;
    assert!(http_get(metrics_addr, "/healthz").await.contains("ok"));

    // The disk freezes under a write: a pause waits for its commit, and so
    // does every tick after it.
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut admin = Admin::new(
        Endpoint::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let pausing = tokio::spawn(async move {
        admin
            .pause(pb::PauseRequest {
                scope: None,
                reason: "drill".into(),
                duration: None,
            })
            .await
    });
    tokio::time::sleep(Duration::from_secs(11)).await;
    let body = http_get(metrics_addr, "/healthz").await;
    assert!(body.starts_with("HTTP/1.1 503"), "{body}");
    assert!(body.contains("stuck: the last tick finished"), "{body}");

    // Thawed, it catches up and says ok again.
    frozen.store(false, std::sync::atomic::Ordering::SeqCst);
    pausing.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(http_get(metrics_addr, "/healthz").await.contains("ok"));
    control
        .send(medic_coordinator::Control::Shutdown)
        .await
        .unwrap();
    handle.await.unwrap().unwrap();
}
