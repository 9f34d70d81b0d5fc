//! Replicated coordinators on a real etcd, in-process on loopback port 0:
//! one leads and the other redirects; agents follow the redirect; a killed
//! leader is replaced, whose successor warms up and grants with larger
//! fencing tokens and nothing lost or duplicated; a leader whose lease is
//! revoked refuses every decision and stops.

#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)]

// medic-store's throwaway etcd servers, shared rather than copied.
#[path = "../../medic-store/tests/common/mod.rs"]
mod etcd;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd::EtcdServer;
use medic_agent::client::{CallError, Coordinators};
use medic_coordinator::ha::run_replicated;
use medic_coordinator::{Control, CoordinatorConfig, Listeners, RunError, SystemClock};
use medic_policy::Event;
use medic_proto::pb::v1 as pb;
use medic_store::{EtcdConfig, EtcdStore, HistoryQuery, Record, Store};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Code;

const TIMEOUT: Duration = Duration::from_secs(30);

struct Replica {
    url: String,
    handle: JoinHandle<Result<(), RunError>>,
    _control: mpsc::Sender<Control>,
}

async fn start(endpoint: &str, prefix: &str) -> Replica {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
tick_interval = "100ms"
admission = {{ per_second = 10000, burst = 10000 }}
[store]
kind = "etcd"
endpoints = ["{endpoint}"]
prefix = "{prefix}"
lease_ttl = "2s"
advertise = "{url}"
[fleet]
heartbeat_interval = "1s"
host_ttl = "60s"
warmup = "1s"
min_fleet_size = 1
[breaker]
unhealthy_percent = 100
[limits.restart_job]
max_in_flight = 1000
permit_ttl = "300s"
cooldown = "0s"
rate = {{ count = 10000, per = "1h", burst = 1000 }}
"#
    );
    let config = CoordinatorConfig::from_toml(&toml).unwrap();
    let (control, rx) = mpsc::channel(4);
    let handle = tokio::spawn(run_replicated(
        config,
        None,
        Listeners { grpc, metrics },
        rx,
        Arc::new(SystemClock),
    ));
    Replica {
        url,
        handle,
        _control: control,
    }
}

async fn etcd() -> Option<EtcdServer> {
    tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap()
}

fn heartbeat(host: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        host_id: host.into(),
        agent_version: "test".into(),
        ..Default::default()
    }
}

fn permit(host: &str, request_id: &str) -> pb::RequestPermitRequest {
    pb::RequestPermitRequest {
        request_id: request_id.into(),
        host_id: host.into(),
        action: pb::Action::RestartJob.into(),
        job: "ingest".into(),
        reason: "stuck".into(),
    }
}

async fn agent(url: &str) -> pb::remediation_client::RemediationClient<tonic::transport::Channel> {
    pb::remediation_client::RemediationClient::connect(url.to_owned())
        .await
        .unwrap()
}

/// Which replica answers a heartbeat (the leader), waiting for an election.
async fn leader_of(replicas: &[&Replica]) -> usize {
    let start = Instant::now();
    loop {
        for (i, r) in replicas.iter().enumerate() {
            if let Ok(mut a) =
                pb::remediation_client::RemediationClient::connect(r.url.clone()).await
                && a.heartbeat(heartbeat("probe")).await.is_ok()
            {
                return i;
            }
        }
        assert!(start.elapsed() < TIMEOUT, "no leader within {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Heartbeats and asks through `c` until granted (waiting out elections
/// and warm-up); returns the grant.
async fn granted(c: &mut Coordinators, host: &str, request_id: &str) -> pb::Permit {
    let start = Instant::now();
    loop {
        let last = match c
            .call(
                heartbeat(host),
                |mut c, r| async move { c.heartbeat(r).await },
            )
            .await
        {
            Err(e) => format!("heartbeat: {e}"),
            Ok(_) => match c
                .call(permit(host, request_id), |mut c, r| async move {
                    c.request_permit(r).await
                })
                .await
            {
                Ok(pb::RequestPermitResponse {
                    decision: Some(pb::request_permit_response::Decision::Granted(g)),
                }) => return g.permit.expect("a granted permit"),
                other => format!("{other:?}"),
            },
        };
        assert!(
            start.elapsed() < TIMEOUT,
            "{request_id}: not granted within {TIMEOUT:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every grant in the audit history, in log order: (request id, permit id,
/// fencing token).
async fn grants_in_history(endpoint: &str, prefix: &str) -> Vec<(String, String, u64)> {
    let config = EtcdConfig::new(vec![endpoint.to_owned()], prefix);
    tokio::task::spawn_blocking(move || {
        let store = EtcdStore::connect(&config).unwrap();
        store
            .history(&HistoryQuery {
                limit: 100_000,
                ..Default::default()
            })
            .unwrap()
            .entries
            .into_iter()
            .filter_map(|e| match e.record {
                Record::Policy(Event::PermitGranted { permit }) => Some((
                    permit.request_id.to_string(),
                    permit.id.to_string(),
                    permit.token.0,
                )),
                _ => None,
            })
            .collect()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_redirects_and_an_agent_ends_up_granted_by_the_leader() {
    let Some(server) = etcd().await else { return };
    let prefix = "/medic/redirect";
    let a = start(&server.endpoint, prefix).await;
    let b = start(&server.endpoint, prefix).await;
    let (leader, follower) = match leader_of(&[&a, &b]).await {
        0 => (&a, &b),
        _ => (&b, &a),
    };

    // The follower: UNAVAILABLE, naming the leader in metadata and message
    // (once it has read the leader key: it polls it).
    let started = Instant::now();
    let status = loop {
        let status = agent(&follower.url)
            .await
            .heartbeat(heartbeat("web-1"))
            .await
            .unwrap_err();
        if status.metadata().get("medic-leader").is_some() {
            break status;
        }
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(
            started.elapsed() < TIMEOUT,
            "the follower never names the leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status
            .metadata()
            .get("medic-leader")
            .unwrap()
            .to_str()
            .unwrap(),
        leader.url
    );
    assert!(
        status.message().contains(&leader.url),
        "{}",
        status.message()
    );
    let admin_status = pb::admin_client::AdminClient::connect(follower.url.clone())
        .await
        .unwrap()
        .get_status(pb::GetStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(admin_status.code(), Code::Unavailable);
    assert_eq!(
        admin_status
            .metadata()
            .get("medic-leader")
            .unwrap()
            .to_str()
            .unwrap(),
        leader.url
    );
    let health = |url: String| async move {
        tonic_health::pb::health_client::HealthClient::new(
            tonic::transport::Channel::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap(),
        )
        .check(tonic_health::pb::HealthCheckRequest {
            service: "medic.v1.Remediation".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
    };
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(
        health(follower.url.clone()).await,
        ServingStatus::NotServing
    );
    assert_eq!(health(leader.url.clone()).await, ServingStatus::Serving);

    // An agent listing both, the follower first, is granted by the leader.
    let mut c = Coordinators::new(
        vec![follower.url.clone(), leader.url.clone()],
        Duration::from_secs(5),
        None,
    );
    let grant = granted(&mut c, "web-1", "req-1").await;
    assert_eq!(c.current(), leader.url);
    assert!(grant.fencing_token > 0);

    // An agent that lists only the follower is never sent elsewhere.
    let mut only_follower =
        Coordinators::new(vec![follower.url.clone()], Duration::from_secs(5), None);
    let r = only_follower
        .call(heartbeat("web-2"), |mut c, r| async move {
            c.heartbeat(r).await
        })
        .await;
    assert!(matches!(r, Err(CallError::Unavailable(_))), "{r:?}");
    assert_eq!(only_follower.current(), follower.url);

    a.handle.abort();
    b.handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_leaders_are_replaced_and_no_grant_is_lost_or_duplicated() {
    let Some(server) = etcd().await else { return };
    let prefix = "/medic/failover";
    let mut replicas = vec![
        start(&server.endpoint, prefix).await,
        start(&server.endpoint, prefix).await,
    ];
    let mut returned = Vec::new();
    let mut c = Coordinators::new(
        replicas.iter().map(|r| r.url.clone()).collect(),
        Duration::from_secs(5),
        None,
    );
    returned.push(("req-0".to_owned(), granted(&mut c, "host-0", "req-0").await));
    let mut failovers = Vec::new();
    const KILLS: usize = 5;
    for round in 1..=KILLS {
        let refs: Vec<&Replica> = replicas.iter().collect();
        let leader = leader_of(&refs).await;
        // Killed without a clean shutdown: its task is dropped mid-flight
        // (no drain, no resignation; its lease goes when its Leader drops,
        // or expires).
        let killed = replicas.remove(leader);
        let killed_at = Instant::now();
        killed.handle.abort();
        let _ = killed.handle.await;
        // Agents list every replica, as a fleet would (the one just killed
        // is replaced by a new one, as systemd restarts it).
        let mut c = Coordinators::new(
            replicas.iter().map(|r| r.url.clone()).collect(),
            Duration::from_secs(5),
            None,
        );
        let (host, request_id) = (format!("host-{round}"), format!("req-{round}"));
        let g = granted(&mut c, &host, &request_id).await;
        failovers.push(killed_at.elapsed());
        returned.push((request_id, g));
        replicas.push(start(&server.endpoint, prefix).await);
    }
    let ms: Vec<u128> = failovers.iter().map(Duration::as_millis).collect();
    println!(
        "failover (leader task killed -> first grant by the new leader, lease_ttl 2s, warmup 1s, \
         {KILLS} kills): {ms:?} ms"
    );

    let history = grants_in_history(&server.endpoint, prefix).await;
    let tokens: Vec<u64> = history.iter().map(|g| g.2).collect();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens strictly increase across leaders: {tokens:?}"
    );
    let ids: BTreeSet<&str> = history.iter().map(|g| g.1.as_str()).collect();
    assert_eq!(ids.len(), history.len(), "no permit granted twice");
    let requests: BTreeSet<&str> = history.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(requests.len(), history.len(), "no request granted twice");
    for (request_id, g) in &returned {
        assert!(
            history
                .iter()
                .any(|h| &h.0 == request_id && h.1 == g.permit_id && h.2 == g.fencing_token),
            "grant {request_id} returned to the agent is in the history"
        );
    }
    assert_eq!(history.len(), KILLS + 1, "every grant, and only those");
    for r in replicas {
        r.handle.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_lease_is_revoked_refuses_every_decision_and_stops() {
    let Some(server) = etcd().await else { return };
    let prefix = "/medic/revoked";
    let replica = start(&server.endpoint, prefix).await;
    let mut c = Coordinators::new(vec![replica.url.clone()], Duration::from_secs(5), None);
    granted(&mut c, "host-0", "req-0").await;
    let before = grants_in_history(&server.endpoint, prefix).await.len();
    assert_eq!(before, 1);

    // Another party revokes the leader's lease: etcd deletes its key.
    let key = format!("{prefix}/leader");
    let handle = tokio::runtime::Handle::current();
    let lease = tokio::task::spawn_blocking({
        let key = key.clone();
        let server_ep = server.endpoint.clone();
        move || {
            let _ = handle;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = medic_store::etcd_client::Client::connect([server_ep], None)
                    .await
                    .unwrap();
                let lease = c.get(key, None).await.unwrap().kvs()[0].lease();
                c.lease_revoke(lease).await.unwrap();
                lease
            })
        }
    })
    .await
    .unwrap();
    assert!(lease != 0);

    // From now on nothing is granted: requests for fresh hosts are
    // refused (UNAVAILABLE) until the replica stops; none is granted.
    let mut a = agent(&replica.url).await;
    let start_at = Instant::now();
    let mut refusals = 0;
    let mut n = 0;
    while !replica.handle.is_finished() {
        n += 1;
        let host = format!("late-{n}");
        let _ = a.heartbeat(heartbeat(&host)).await;
        match a.request_permit(permit(&host, &format!("late-{n}"))).await {
            Ok(r) => assert!(
                !matches!(
                    r.into_inner().decision,
                    Some(pb::request_permit_response::Decision::Granted(_))
                ),
                "granted after the lease was revoked"
            ),
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{s}");
                refusals += 1;
            }
        }
        assert!(
            start_at.elapsed() < TIMEOUT,
            "still running {TIMEOUT:?} after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match replica.handle.await.unwrap() {
        Err(RunError::LostLeadership(why)) => assert!(why.contains("lease"), "{why}"),
        other => panic!("expected LostLeadership, got {other:?}"),
    }
    println!(
        "lease revoked -> run ended after {:?} ({refusals} refusals)",
        start_at.elapsed()
    );
    assert_eq!(
        grants_in_history(&server.endpoint, prefix).await.len(),
        before,
        "no grant was written after the revocation"
    );
}
