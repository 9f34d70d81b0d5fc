//! A grant the agent cannot use (here: one without a permit) is an error
//! that is reported: logged at error with its cause, counted in
//! `medic_agent_malformed_replies_total`, and a failed request that is
//! asked again (with the same request id, so a recovered coordinator
//! replays its grant) — never silently dropped, and never acted on.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use medic_agent::config::JobConfig;
use medic_agent::detect::{Evidence, JobDetectors, Verdict};
use medic_agent::effects::{ActionContext, CommandReport};
use medic_agent::{Agent, AgentConfig, Control, Environment, Host, HostError};
use medic_proto::pb::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// A coordinator that answers heartbeats and grants every request without
/// a permit, recording the request ids.
#[derive(Clone, Default)]
struct BrokenGrants {
    request_ids: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl pb::remediation_server::Remediation for BrokenGrants {
    async fn heartbeat(
        &self,
        _: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Ok(Response::new(pb::HeartbeatResponse {
            heartbeat_interval: Some(medic_proto::convert::to_duration(Duration::from_secs(1))),
            ..Default::default()
        }))
    }
    async fn request_permit(
        &self,
        r: Request<pb::RequestPermitRequest>,
    ) -> Result<Response<pb::RequestPermitResponse>, Status> {
        self.request_ids
            .lock()
            .unwrap()
            .push(r.into_inner().request_id);
        Ok(Response::new(pb::RequestPermitResponse {
            decision: Some(pb::request_permit_response::Decision::Granted(pb::Grant {
                permit: None,
                replayed: false,
            })),
        }))
    }
    async fn renew_permit(
        &self,
        _: Request<pb::RenewPermitRequest>,
    ) -> Result<Response<pb::RenewPermitResponse>, Status> {
        Err(Status::unimplemented("no permit was granted"))
    }
    async fn report_outcome(
        &self,
        _: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        Err(Status::unimplemented("no permit was granted"))
    }
}

/// A machine whose job is always stuck, counting what the agent does to it.
#[derive(Clone, Default)]
struct AlwaysStuck {
    actions: Arc<AtomicUsize>,
}

impl Host for AlwaysStuck {
    async fn check(&mut self, _: &JobConfig, _: &mut JobDetectors, _: SystemTime) -> Verdict {
        Verdict::Fired(Evidence {
            detector: "heartbeat_file",
            detail: "stale".into(),
        })
    }
    async fn restart(
        &mut self,
        _: &JobConfig,
        _: &JobDetectors,
        _: &ActionContext,
    ) -> Result<Option<CommandReport>, HostError> {
        self.actions.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    }
    async fn reboot(&mut self, _: &[String], _: &ActionContext) -> Result<(), HostError> {
        self.actions.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The log, captured.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn config(dir: &Path, coordinator: &str) -> AgentConfig {
    AgentConfig::from_toml(&format!(
        r#"
host_id = "h1"
coordinators = ["{coordinator}"]
check_interval = "100ms"
heartbeat_interval = "1s"
request_timeout = "2s"
state_dir = "{state}"
[[jobs]]
name = "ingest"
confirm = 1
[jobs.restart]
command = ["true"]
[jobs.heartbeat_file]
path = "{hb}"
stale_after = "1s"
"#,
        state = dir.join("state").display(),
        hb = dir.join("job.hb").display(),
    ))
    .unwrap()
}

// One thread: the captured log's subscriber covers the agent's task.
#[tokio::test]
async fn a_grant_without_a_permit_is_logged_counted_retried_and_never_acted_on() {
    let log = Log::default();
    let writer = log.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let coordinator = BrokenGrants::default();
    let request_ids = coordinator.request_ids.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::remediation_server::RemediationServer::new(coordinator))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let host = AlwaysStuck::default();
    let actions = host.actions.clone();
    let agent = Agent::with_host(config(dir.path(), &url), Environment::default(), host);
    let metrics = agent.metrics();
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(agent.run(rx));

    // Asked, failed, asked again after the backoff (1s at first).
    let deadline = Instant::now() + Duration::from_secs(15);
    while request_ids.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the request was not asked again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();

    let ids = request_ids.lock().unwrap().clone();
    assert_eq!(ids[0], ids[1], "retried under the same request id: {ids:?}");
    assert_eq!(
        actions.load(Ordering::SeqCst),
        0,
        "nothing is done without a permit"
    );
    let text = metrics.encode();
    assert!(
        !text.contains("medic_agent_malformed_replies_total 0\n")
            && text.contains("medic_agent_malformed_replies_total"),
        "{text}"
    );
    assert!(
        text.contains("medic_agent_permits_granted_total 0"),
        "{text}"
    );
    assert!(
        text.contains("medic_agent_coordinator_reachable 1"),
        "{text}"
    );
    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("permit request failed"))
        .unwrap_or_else(|| panic!("no error logged:\n{log}"));
    assert!(
        line.contains("response.granted.permit: must be set"),
        "the cause is logged: {line}"
    );
}
