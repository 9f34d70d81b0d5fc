#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use medic_policy::{
    Action, FencingToken, HostId, Permit, PermitId, PermitRef, PermitRequest, PermitState,
    RequestId,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response};

use super::*;

/// How a fake coordinator answers.
#[derive(Clone, Default)]
enum Answer {
    /// As the leader, with well-formed replies.
    #[default]
    Leader,
    /// As a follower naming this URL in `medic-leader`.
    Follower(String),
    /// A grant with no permit in it.
    GrantWithoutPermit,
    /// RESOURCE_EXHAUSTED with this `retry-after-ms`, for the first
    /// `times` calls; then as the leader.
    Exhausted { hint: &'static str, times: usize },
}

/// A coordinator that answers every call as `answer` says, counting them.
#[derive(Clone, Default)]
struct Fake {
    answer: Answer,
    calls: Arc<AtomicUsize>,
}

fn permit() -> Permit {
    let now = SystemTime::now();
    Permit {
        id: PermitId::for_token(FencingToken(7)),
        token: FencingToken(7),
        request_id: RequestId::new("r-1").unwrap(),
        host: HostId::new("h1").unwrap(),
        action: Action::RestartJob,
        job: "ingest".into(),
        reason: "stuck".into(),
        labels: Default::default(),
        dry_run: false,
        granted_at: now,
        expires_at: now + Duration::from_secs(60),
        ttl: Duration::from_secs(60),
        state: PermitState::Active,
    }
}

impl Fake {
    fn answer<T>(&self, leader: impl FnOnce() -> T) -> Result<Response<T>, Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.answer {
            Answer::Follower(url) => {
                let mut s = Status::unavailable(format!("follower; the leader is {url}"));
                s.metadata_mut()
                    .insert(metadata::LEADER, url.parse().unwrap());
                Err(s)
            }
            Answer::Exhausted { hint, times } if n < *times => {
                let mut s = Status::resource_exhausted("too many calls");
                s.metadata_mut()
                    .insert(metadata::RETRY_AFTER_MS, hint.parse().unwrap());
                Err(s)
            }
            _ => Ok(Response::new(leader())),
        }
    }
}

#[tonic::async_trait]
impl pb::remediation_server::Remediation for Fake {
    async fn heartbeat(
        &self,
        _: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.answer(|| pb::HeartbeatResponse {
            heartbeat_interval: Some(medic_proto::convert::to_duration(Duration::from_secs(10))),
            ..Default::default()
        })
    }
    async fn request_permit(
        &self,
        _: Request<pb::RequestPermitRequest>,
    ) -> Result<Response<pb::RequestPermitResponse>, Status> {
        let without = matches!(self.answer, Answer::GrantWithoutPermit);
        self.answer(|| {
            if without {
                pb::RequestPermitResponse {
                    decision: Some(pb::request_permit_response::Decision::Granted(pb::Grant {
                        permit: None,
                        replayed: false,
                    })),
                }
            } else {
                Decision::Granted {
                    permit: permit(),
                    replayed: false,
                }
                .into()
            }
        })
    }
    async fn renew_permit(
        &self,
        _: Request<pb::RenewPermitRequest>,
    ) -> Result<Response<pb::RenewPermitResponse>, Status> {
        self.answer(|| pb::RenewPermitResponse {
            permit: Some(permit().into()),
        })
    }
    async fn report_outcome(
        &self,
        _: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        self.answer(|| pb::ReportOutcomeResponse { permit: None })
    }
}

/// A loopback listener and its URL.
async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// Serves `fake` on `listener`.
fn serve_on(listener: tokio::net::TcpListener, fake: Fake) {
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::remediation_server::RemediationServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
}

/// Serves a fake answering `answer`; its URL and call counter.
async fn serve(answer: Answer) -> (String, Arc<AtomicUsize>) {
    let (listener, url) = listen().await;
    let fake = Fake {
        answer,
        ..Fake::default()
    };
    let calls = fake.calls.clone();
    serve_on(listener, fake);
    (url, calls)
}

fn client(urls: &[&str]) -> Client {
    Client::new(Settings::new(
        Endpoints::new(urls.iter().copied()).unwrap(),
        Duration::from_secs(5),
    ))
    .unwrap()
}

fn heartbeat() -> Heartbeat {
    Heartbeat {
        state_error: None,
        host: HostId::new("h1").unwrap(),
        labels: Default::default(),
        agent_version: "test".into(),
        problems: Vec::new(),
        held_permit: None,
        needs_human: None,
    }
}

fn request() -> PermitRequest {
    PermitRequest {
        dry_run: false,
        request_id: RequestId::new("r-1").unwrap(),
        host: HostId::new("h1").unwrap(),
        action: Action::RestartJob,
        job: "ingest".into(),
        reason: "stuck".into(),
    }
}

#[tokio::test]
async fn a_follower_redirect_to_a_configured_coordinator_is_followed_at_once() {
    let (leader_url, leader_calls) = serve(Answer::Leader).await;
    let (follower_url, follower_calls) = serve(Answer::Follower(leader_url.clone())).await;
    // The follower first, as after an election moved the leadership.
    let c = client(&[&follower_url, &leader_url]);
    c.heartbeat(heartbeat()).await.unwrap();
    assert_eq!(c.current(), leader_url);
    assert_eq!(follower_calls.load(Ordering::SeqCst), 1);
    assert_eq!(leader_calls.load(Ordering::SeqCst), 1);
    // Later calls go straight to the leader.
    c.heartbeat(heartbeat()).await.unwrap();
    assert_eq!(follower_calls.load(Ordering::SeqCst), 1);
    assert_eq!(leader_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_redirect_to_an_unconfigured_address_is_never_followed() {
    let (elsewhere_url, elsewhere_calls) = serve(Answer::Leader).await;
    let (follower_url, follower_calls) = serve(Answer::Follower(elsewhere_url)).await;
    let c = client(&[&follower_url]);
    let e = c.heartbeat(heartbeat()).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(e.status().map(Status::code), Some(Code::Unavailable));
    assert!(e.to_string().contains("follower"), "{e}");
    assert_eq!(follower_calls.load(Ordering::SeqCst), 1);
    assert_eq!(elsewhere_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_redirect_is_retried_once_only() {
    // Two followers naming each other: one retry, then the error.
    let ((la, a_url), (lb, b_url)) = (listen().await, listen().await);
    let a = Fake {
        answer: Answer::Follower(b_url.clone()),
        ..Fake::default()
    };
    let b = Fake {
        answer: Answer::Follower(a_url.clone()),
        ..Fake::default()
    };
    let (a_calls, b_calls) = (a.calls.clone(), b.calls.clone());
    serve_on(la, a);
    serve_on(lb, b);
    let c = client(&[&a_url, &b_url]);
    let e = c.heartbeat(heartbeat()).await.unwrap_err();
    assert_eq!(e.status().map(Status::code), Some(Code::Unavailable));
    assert_eq!(a_calls.load(Ordering::SeqCst), 1);
    assert_eq!(b_calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.current(), a_url, "the last redirect is remembered");
}

#[tokio::test]
async fn a_grant_without_a_permit_is_a_malformed_reply_naming_the_field() {
    let (url, _) = serve(Answer::GrantWithoutPermit).await;
    let c = client(&[&url]);
    match c.request_permit(request()).await {
        Err(e @ CallError::Malformed { .. }) => {
            assert!(!e.is_transient());
            let text = e.to_string();
            assert!(text.contains(&url), "{text}");
            assert!(
                text.contains("response.granted.permit: must be set"),
                "{text}"
            );
        }
        other => panic!("expected a malformed reply, got {other:?}"),
    }
}

#[tokio::test]
async fn well_formed_replies_convert_to_medics_types() {
    let (url, _) = serve(Answer::Leader).await;
    let c = client(&[&url]);
    let reply = c.heartbeat(heartbeat()).await.unwrap();
    assert_eq!(reply.heartbeat_interval, Duration::from_secs(10));
    match c.request_permit(request()).await.unwrap() {
        Decision::Granted { permit, .. } => assert_eq!(permit.token, FencingToken(7)),
        other => panic!("expected a grant, got {other:?}"),
    }
    let renewal = Renewal {
        host: HostId::new("h1").unwrap(),
        permit: PermitRef {
            id: permit().id,
            token: permit().token,
        },
    };
    assert_eq!(
        c.renew_permit(renewal).await.unwrap().ttl,
        Duration::from_secs(60)
    );
    // An outcome's reply must carry the permit: this fake's does not.
    let report = OutcomeReport {
        host: HostId::new("h1").unwrap(),
        permit: PermitRef {
            id: permit().id,
            token: permit().token,
        },
        outcome: medic_policy::Outcome::Succeeded,
        detail: String::new(),
    };
    let e = c.report_outcome(report).await.unwrap_err();
    assert!(
        e.to_string().contains("response.permit: must be set"),
        "{e}"
    );
}

#[tokio::test]
async fn admission_refusals_are_retried_after_the_hint_when_asked() {
    let (url, calls) = serve(Answer::Exhausted {
        hint: "20",
        times: 2,
    })
    .await;
    let endpoints = Endpoints::new([url.as_str()]).unwrap();
    let patient =
        Client::new(Settings::new(endpoints.clone(), Duration::from_secs(5)).admission_retries(5))
            .unwrap();
    patient.heartbeat(heartbeat()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let (url, calls) = serve(Answer::Exhausted {
        hint: "1500",
        times: 1,
    })
    .await;
    // Without retries, the refusal comes back with its hint.
    let c = client(&[&url]);
    let e = c.heartbeat(heartbeat()).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));
    assert!(!e.is_transient());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unreachable_endpoints_are_all_named_and_a_live_one_is_used() {
    let gone = |l: std::net::TcpListener| format!("http://{}", l.local_addr().unwrap());
    let g1 = gone(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let g2 = gone(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let c = client(&[&g1, &g2]);
    match c.heartbeat(heartbeat()).await {
        Err(CallError::Unreachable { attempts }) => {
            let urls: Vec<&str> = attempts.iter().map(|a| a.url.as_str()).collect();
            assert_eq!(urls, [g1.as_str(), g2.as_str()]);
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
    let (live, _) = serve(Answer::Leader).await;
    let c = client(&[&g1, &live]);
    c.heartbeat(heartbeat()).await.unwrap();
    assert_eq!(c.current(), live);
}

#[test]
fn settings_that_cannot_work_are_refused_naming_the_endpoint() {
    let endpoints = |u: &[&str]| Endpoints::new(u.iter().copied()).unwrap();
    let t = Duration::from_secs(1);
    // A bearer token never crosses a network in plaintext...
    let bearer = Headers::none().with_bearer("t0ken").unwrap();
    let e =
        Client::new(Settings::new(endpoints(&["http://10.1.2.3:7470"]), t).headers(bearer.clone()))
            .unwrap_err();
    assert!(
        matches!(&e, ConfigError::BearerInPlaintext { url } if url == "http://10.1.2.3:7470"),
        "{e:?}"
    );
    // ... but may go to loopback.
    Client::new(Settings::new(endpoints(&["http://127.0.0.1:7470"]), t).headers(bearer)).unwrap();
    // TLS material with a plaintext endpoint: the caller meant TLS.
    let tls = ClientTls::from_pem(Some(b"-----BEGIN CERTIFICATE-----".to_vec()), None);
    let e = Client::new(Settings::new(endpoints(&["https://a:1", "http://b:2"]), t).tls(Some(tls)))
        .unwrap_err();
    assert!(
        matches!(&e, ConfigError::PlaintextWithTls { url } if url == "http://b:2"),
        "{e:?}"
    );
}

#[cfg(not(feature = "native-roots"))]
#[test]
fn https_without_a_ca_is_refused_without_the_system_trust_store() {
    let e = Client::new(Settings::new(
        Endpoints::new(["https://a:1"]).unwrap(),
        Duration::from_secs(1),
    ))
    .unwrap_err();
    assert!(
        matches!(&e, ConfigError::NoCa { url } if url == "https://a:1"),
        "{e:?}"
    );
}
