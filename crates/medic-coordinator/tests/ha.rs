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
use medic_client::{Client, Endpoints, Settings};
use medic_coordinator::ha::run_replicated;
use medic_coordinator::{Control, CoordinatorConfig, Listeners, RunError, SystemClock};
use medic_policy::{Decision, Event};
use medic_proto::pb::v1 as pb;
use medic_store::{EtcdConfig, EtcdStore, HistoryQuery, Record, Store};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Code;

const TIMEOUT: Duration = Duration::from_secs(30);

struct Replica {
    url: String,
    /// `/metrics` address.
    metrics: std::net::SocketAddr,
    handle: JoinHandle<Result<(), RunError>>,
    control: mpsc::Sender<Control>,
}

/// The fleet-wide limits these tests push: caps far above what they ask
/// for, so that only leadership decides.
const FLEET: &str = r#"
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
rate = { count = 10000, per = "1h", burst = 1000 }
"#;

/// The same, with `max_in_flight` restart permits at once.
fn fleet_capped(max_in_flight: u32) -> String {
    FLEET.replace(
        "max_in_flight = 1000",
        &format!("max_in_flight = {max_in_flight}"),
    )
}

/// A replica's own file: its addresses and the etcd it shares.
fn replica_toml(endpoint: &str, prefix: &str, url: &str) -> String {
    format!(
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
"#
    )
}

/// Validates and stores `fleet` as the fleet config of `prefix`.
async fn push(endpoint: &str, prefix: &str, fleet: &str) -> i64 {
    let replica =
        CoordinatorConfig::from_toml(&replica_toml(endpoint, prefix, "http://127.0.0.1:1"))
            .unwrap();
    let fleet = fleet.to_owned();
    tokio::task::spawn_blocking(move || medic_coordinator::fleet::push(&replica, &fleet))
        .await
        .unwrap()
        .unwrap()
}

/// Runs `f` on a fresh store on `prefix`, off the async runtime: the
/// tests' way to read and plant state as another party would.
async fn with_store<T: Send + 'static>(
    endpoint: &str,
    prefix: &str,
    f: impl FnOnce(&EtcdStore) -> T + Send + 'static,
) -> T {
    let config = EtcdConfig::new(vec![endpoint.to_owned()], prefix);
    tokio::task::spawn_blocking(move || f(&EtcdStore::connect(&config).unwrap()))
        .await
        .unwrap()
}

/// The whole audit history of `prefix`.
async fn history(endpoint: &str, prefix: &str) -> Vec<medic_store::Entry> {
    with_store(endpoint, prefix, |s| {
        s.history(&HistoryQuery {
            limit: 100_000,
            ..Default::default()
        })
        .unwrap()
        .entries
    })
    .await
}

/// Starts a replica, pushing [`FLEET`] first if nothing was pushed yet.
async fn start(endpoint: &str, prefix: &str) -> Replica {
    let pushed = with_store(endpoint, prefix, |s| s.fleet_config().unwrap()).await;
    if pushed.is_none() {
        push(endpoint, prefix, FLEET).await;
    }
    start_replica(endpoint, prefix).await
}

async fn start_replica(endpoint: &str, prefix: &str) -> Replica {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    let metrics_addr = metrics.local_addr().unwrap();
    let config = CoordinatorConfig::from_toml(&replica_toml(endpoint, prefix, &url)).unwrap();
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
        metrics: metrics_addr,
        handle,
        control,
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

/// A client of `urls`, as an agent listing them.
fn client(urls: Vec<String>) -> Client {
    Client::new(Settings::new(
        Endpoints::new(urls).unwrap(),
        Duration::from_secs(5),
    ))
    .unwrap()
}

/// A request as medic's type, for [`Client`].
fn domain<W, D: TryFrom<W, Error = medic_policy::InvalidInput>>(wire: W) -> D {
    D::try_from(wire).unwrap()
}

fn permit(host: &str, request_id: &str) -> pb::RequestPermitRequest {
    pb::RequestPermitRequest {
        dry_run: false,
        request_id: request_id.into(),
        host_id: host.into(),
        action: pb::Action::RestartJob.into(),
        action_name: String::new(),
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
async fn granted(c: &Client, host: &str, request_id: &str) -> pb::Permit {
    let start = Instant::now();
    loop {
        let last = match c.heartbeat(domain(heartbeat(host))).await {
            Err(e) => format!("heartbeat: {e}"),
            Ok(_) => match c.request_permit(domain(permit(host, request_id))).await {
                Ok(Decision::Granted { permit, .. }) => return permit.into(),
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
    history(endpoint, prefix)
        .await
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
    let c = client(vec![follower.url.clone(), leader.url.clone()]);
    let grant = granted(&c, "web-1", "req-1").await;
    assert_eq!(c.current(), leader.url);
    assert!(grant.fencing_token > 0);

    // An agent that lists only the follower is never sent elsewhere.
    let only_follower = client(vec![follower.url.clone()]);
    let r = only_follower.heartbeat(domain(heartbeat("web-2"))).await;
    assert!(
        r.as_ref()
            .is_err_and(|e| e.status().map(tonic::Status::code) == Some(tonic::Code::Unavailable)),
        "{r:?}"
    );
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
    let c = client(replicas.iter().map(|r| r.url.clone()).collect());
    returned.push(("req-0".to_owned(), granted(&c, "host-0", "req-0").await));
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
        let c = client(replicas.iter().map(|r| r.url.clone()).collect());
        let (host, request_id) = (format!("host-{round}"), format!("req-{round}"));
        let g = granted(&c, &host, &request_id).await;
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
    let c = client(vec![replica.url.clone()]);
    granted(&c, "host-0", "req-0").await;
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

/// The election's first write (the audit of the configuration it decides
/// with) fails: the core is failed before the serve loop looks at it. The
/// replica must still step down: refuse, give up its lease (the leader key
/// goes at once, not after the TTL) and return `StoreFailed`.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_first_write_after_election_fails_steps_down_at_once() {
    let Some(server) = etcd().await else { return };
    let prefix = "/medic/first-write";
    push(&server.endpoint, prefix, FLEET).await;
    // Only this test's process: nextest runs each test in its own.
    fail::cfg("medic-store::etcd::write", "1*return(injected)").unwrap();
    let started = Instant::now();
    let replica = start_replica(&server.endpoint, prefix).await;
    let bound = Duration::from_secs(5);
    let outcome = tokio::time::timeout(bound, replica.handle)
        .await
        .unwrap_or_else(|_| panic!("still leading {bound:?} after its first write failed"))
        .unwrap();
    let took = started.elapsed();
    fail::remove("medic-store::etcd::write");
    // The first write is the clock mark of its start-up (stopping the
    // start) or a later one (stopping it serving): a store failure either way.
    match outcome {
        Err(RunError::StoreFailed(why)) => assert!(why.to_string().contains("failpoint"), "{why}"),
        Err(e @ RunError::Store(_)) => assert!(e.to_string().contains("failpoint"), "{e}"),
        other => panic!("expected a store failure, got {other:?}"),
    }
    // It resigned: the key is gone well before its 2 s lease could expire.
    let leader = with_store(&server.endpoint, prefix, |s| s.leader_name().unwrap()).await;
    assert_eq!(leader, None, "the failed leader still holds the leader key");
    println!("first write failed -> stepped down and resigned after {took:?}");
    // The next replica leads and grants.
    let next = start(&server.endpoint, prefix).await;
    let c = client(vec![next.url.clone()]);
    granted(&c, "host-0", "req-0").await;
}

/// One gauge of a replica's `/metrics`.
async fn gauge(replica: &Replica, name: &str) -> i64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(replica.metrics)
        .await
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}

/// Asks once through `c`: granted (`true`) or denied (`false`); anything
/// else fails the test.
async fn asks(c: &Client, host: &str, request_id: &str) -> bool {
    c.heartbeat(domain(heartbeat(host))).await.unwrap();
    match c
        .request_permit(domain(permit(host, request_id)))
        .await
        .unwrap()
    {
        Decision::Granted { .. } => true,
        Decision::Denied(_) => false,
        Decision::Waiting(w) => panic!("no approvals are configured: {w:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pushed_fleet_config_applies_on_sighup_and_when_a_new_leader_is_elected() {
    let Some(server) = etcd().await else { return };
    let prefix = "/medic/fleet-config";
    let first = push(&server.endpoint, prefix, &fleet_capped(1)).await;
    let mut replicas = vec![
        start_replica(&server.endpoint, prefix).await,
        start_replica(&server.endpoint, prefix).await,
    ];
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let c = client(urls.clone());
    granted(&c, "host-1", "req-1").await;
    for r in &replicas {
        assert_eq!(gauge(r, "medic_fleet_config_revision").await, first);
        assert_eq!(gauge(r, "medic_fleet_config_stored_revision").await, first);
    }
    let leader = leader_of(&replicas.iter().collect::<Vec<_>>()).await;
    for (i, r) in replicas.iter().enumerate() {
        assert_eq!(gauge(r, "medic_leader").await, i64::from(i == leader));
    }
    assert!(!asks(&c, "host-2", "req-2").await, "cap 1 holds");

    // Stored, but the leader keeps its limits until told to reload.
    push(&server.endpoint, prefix, &fleet_capped(2)).await;
    assert!(
        !asks(&c, "host-2", "req-2b").await,
        "a push alone changes nothing"
    );
    let refs: Vec<&Replica> = replicas.iter().collect();
    let leader = leader_of(&refs).await;
    for r in &replicas {
        r.control.send(Control::Reload).await.unwrap();
    }
    let start = Instant::now();
    while !asks(&c, "host-2", "req-2c").await {
        assert!(
            start.elapsed() < TIMEOUT,
            "cap 2 never applied after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!asks(&c, "host-3", "req-3").await, "cap 2 holds");

    // A replica elected later reads what etcd holds then.
    push(&server.endpoint, prefix, &fleet_capped(3)).await;
    let killed = replicas.remove(leader);
    killed.handle.abort();
    let _ = killed.handle.await;
    let c = client(urls);
    granted(&c, "host-3", "req-3b").await;
    assert!(
        !asks(&c, "host-4", "req-4").await,
        "the new leader's cap is 3, with host-1 and host-2 still in flight"
    );
    // Each election recorded the configuration it decides with (I9).
    let elections: Vec<String> = history(&server.endpoint, prefix)
        .await
        .into_iter()
        .filter_map(|e| match e.record {
            Record::ConfigReloaded {
                actor,
                reason,
                errors,
            } if actor == "election" && errors.is_empty() => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(elections.len(), 2, "{elections:?}");
    assert!(
        elections[1].starts_with("elected: fleet config of etcd revision"),
        "{elections:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_config_this_replica_cannot_read_is_rejected_and_the_last_valid_one_stays() {
    let Some(server) = etcd().await else { return };
    let prefix = "/medic/fleet-invalid";
    push(&server.endpoint, prefix, &fleet_capped(1)).await;
    let replica = start_replica(&server.endpoint, prefix).await;
    let c = client(vec![replica.url.clone()]);
    granted(&c, "host-1", "req-1").await;

    // As a newer medic might write it: `config push` would refuse it.
    let invalid = fleet_capped(1).replace("max_in_flight = 1", "max_in_flight = \"lots\"");
    assert!(medic_coordinator::config::FleetConfig::from_toml(&invalid).is_err());
    with_store(&server.endpoint, prefix, move |s| {
        s.put_fleet_config(&invalid, None).unwrap()
    })
    .await;
    replica.control.send(Control::Reload).await.unwrap();
    // The reload is audited as rejected, naming the fleet config's key.
    let start = Instant::now();
    let rejected = loop {
        let found = history(&server.endpoint, prefix)
            .await
            .into_iter()
            .find_map(|e| match e.record {
                Record::ConfigReloaded { errors, .. } if !errors.is_empty() => Some(errors),
                _ => None,
            });
        if let Some(errors) = found {
            break errors;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "no rejected reload in the history"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        rejected.iter().any(|e| {
            let e = e.to_string();
            e.contains("fleet config (etcd revision") && e.contains("max_in_flight")
        }),
        "{rejected:?}"
    );
    assert!(!asks(&c, "host-2", "req-2").await, "cap 1 still holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_reach_etcd_over_mutual_tls_and_a_replica_without_a_client_certificate_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let certs = medic_coordinator::testing::dev_certs(dir.path(), &["etcd-client"]);
    let tls = etcd::Tls {
        ca: certs.join("ca.pem"),
        server: (certs.join("server.pem"), certs.join("server.key")),
        client: (
            certs.join("agents/etcd-client.pem"),
            certs.join("agents/etcd-client.key"),
        ),
    };
    let Some(server) = tokio::task::spawn_blocking(move || EtcdServer::start_tls(&tls))
        .await
        .unwrap()
    else {
        return;
    };
    assert!(server.endpoint.starts_with("https://"));
    let prefix = "/medic/tls";
    let replica_toml = |url: &str, identity: bool| {
        let mut t = replica_toml(&server.endpoint, prefix, url);
        t.push_str(&format!(
            "[store.tls]\nca = \"{c}/ca.pem\"\nserver_name = \"localhost\"\n",
            c = certs.display()
        ));
        if identity {
            t.push_str(&format!(
                "cert = \"{c}/agents/etcd-client.pem\"\nkey = \"{c}/agents/etcd-client.key\"\n",
                c = certs.display()
            ));
        }
        CoordinatorConfig::from_toml(&t).unwrap()
    };

    let pusher = replica_toml("http://127.0.0.1:1", true);
    let revision =
        tokio::task::spawn_blocking(move || medic_coordinator::fleet::push(&pusher, FLEET))
            .await
            .unwrap()
            .unwrap();
    assert!(revision > 0);

    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    let (_control, rx) = mpsc::channel(4);
    let handle = tokio::spawn(run_replicated(
        replica_toml(&url, true),
        None,
        Listeners { grpc, metrics },
        rx,
        Arc::new(SystemClock),
    ));
    let c = client(vec![url]);
    granted(&c, "host-1", "req-1").await;
    handle.abort();

    // etcd's --client-cert-auth refuses a client without a certificate.
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    let (_control, rx) = mpsc::channel(4);
    let refused = tokio::time::timeout(
        TIMEOUT,
        run_replicated(
            replica_toml(&url, false),
            None,
            Listeners { grpc, metrics },
            rx,
            Arc::new(SystemClock),
        ),
    )
    .await
    .expect("a replica etcd refuses stops at once");
    let e = refused.expect_err("refused").to_string();
    assert!(e.contains("etcd"), "{e}");
}

#[test]
fn config_push_and_show_from_the_command_line() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("coordinator.toml");
    std::fs::write(
        &replica,
        replica_toml(&server.endpoint, "/medic/cli", "http://127.0.0.1:7470"),
    )
    .unwrap();
    let fleet = dir.path().join("fleet.toml");
    let text = format!("# the fleet's limits\n{}", fleet_capped(7));
    std::fs::write(&fleet, &text).unwrap();
    let (r, f) = (replica.to_str().unwrap(), fleet.to_str().unwrap());
    let cli = |args: &[&str]| {
        let args: Vec<&str> = args
            .iter()
            .map(|a| match *a {
                "REPLICA" => r,
                "FLEET" => f,
                a => a,
            })
            .collect();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic-coordinator"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let show = ["config", "show", "--config", "REPLICA"];
    let push = ["config", "push", "--config", "REPLICA", "FLEET"];

    // A prefix without medic state is a mistake unless told otherwise.
    for (args, hint) in [(&show[..], false), (&push[..], true)] {
        let (code, _, err) = cli(args);
        assert_eq!(err.contains("add --init"), hint, "{err}");
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("holds no medic state under /medic/cli"),
            "{err}"
        );
    }
    let (code, out, err) = cli(&[&push[..], &["--init"]].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("stored as the fleet config at etcd revision"),
        "{out}"
    );
    let (code, out, err) = cli(&show);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, text, "stored as written, comments included");
    let revision: i64 = err
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {err:?}"));

    // A stale --expect-revision stores nothing.
    std::fs::write(&fleet, fleet_capped(8)).unwrap();
    let (code, _, err) = cli(&[&push[..], &["--expect-revision", "1"]].concat());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("someone pushed in between"), "{err}");
    assert_eq!(cli(&show).1, text);

    // An invalid file: every error with its key path, exit 78.
    std::fs::write(
        &fleet,
        "[server]\nlisten = \"0.0.0.0:1\"\n[fleet]\nwarmup = \"soon\"\n",
    )
    .unwrap();
    let (code, _, err) = cli(&push);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("server: is not fleet-wide"), "{err}");
    assert!(err.contains("fleet.warmup: invalid duration"), "{err}");
    let (_, out, err) = cli(&show);
    assert_eq!(out, text, "nothing stored");
    assert!(err.contains(&format!("revision {revision}")), "{err}");
}
