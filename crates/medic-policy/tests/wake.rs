//! The wake-up value in heartbeat replies: it changes when something
//! happens that can turn a denial into a grant (a pause ends, a breaker goes
//! half-open or closes, the policy is reloaded, the host is released), and
//! only then, so that agents waiting on a denial ask again at once instead
//! of sleeping out its `retry_after`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use medic_policy::{
    Action, Decision, Engine, Heartbeat, HostId, Outcome, PermitRef, PermitRequest, PolicyConfig,
    Problem, RequestId, ResumeTarget, Scope, Time,
};

const POLICY: &str = r#"
[breaker]
unhealthy_percent = 30
[limits.restart_job]
max_in_flight = 10
cooldown = "0s"
"#;

fn t0() -> Time {
    Time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn config(toml: &str) -> PolicyConfig {
    PolicyConfig::from_toml(toml).unwrap_or_else(|e| panic!("invalid test config:\n{e}"))
}

/// An engine and ten hosts `h1`..`h10` that heartbeat as time passes.
struct Fleet {
    engine: Engine,
    now: Time,
    stuck: Vec<bool>,
    next_request: u32,
}

impl Fleet {
    fn ready() -> Self {
        let mut f = Self {
            engine: Engine::new(config(POLICY), t0()),
            now: t0(),
            stuck: vec![false; 10],
            next_request: 0,
        };
        let warmup = f.engine.config().fleet.warmup;
        f.advance(warmup);
        f
    }

    fn host(i: usize) -> HostId {
        HostId::new(format!("h{}", i + 1)).unwrap()
    }

    /// One heartbeat of host `i`, with `needs_human` if given; its wake-up
    /// value.
    fn beat(&mut self, i: usize, needs_human: Option<&str>) -> u64 {
        let hb = Heartbeat {
            state_error: None,
            host: Self::host(i),
            labels: Default::default(),
            agent_version: "0.1.0".into(),
            problems: if self.stuck[i] {
                vec![Problem {
                    job: "ingest".into(),
                    detector: "heartbeat_file".into(),
                    since: self.now,
                    detail: "heartbeat file 12m old".into(),
                }]
            } else {
                Vec::new()
            },
            held_permit: None,
            needs_human: needs_human.map(str::to_owned),
        };
        self.engine.heartbeat(hb, self.now).wake
    }

    /// Lets `d` pass, every host heartbeating each interval.
    fn advance(&mut self, d: Duration) {
        let step = self.engine.config().fleet.heartbeat_interval;
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + step).min(end);
            for i in 0..self.stuck.len() {
                self.beat(i, None);
            }
        }
    }

    fn request(&mut self, i: usize) -> Decision {
        self.next_request += 1;
        let req = PermitRequest {
            dry_run: false,
            request_id: RequestId::new(format!("r{}", self.next_request)).unwrap(),
            host: Self::host(i),
            action: Action::RestartJob,
            job: "ingest".into(),
            reason: "stuck".into(),
        };
        self.engine.request_permit(req, self.now).unwrap()
    }

    /// Opens the fleet breaker: four of ten hosts stuck for a while.
    fn open_breaker(&mut self) {
        for i in 0..4 {
            self.stuck[i] = true;
        }
        self.advance(Duration::from_secs(60));
        assert!(matches!(self.request(0), Decision::Denied(_)));
        assert!(!self.engine.durable().breakers.is_empty(), "breaker open");
    }
}

#[test]
fn wake_stays_the_same_while_nothing_can_turn_a_denial_into_a_grant() {
    let mut f = Fleet::ready();
    let before = f.beat(0, None);
    f.advance(Duration::from_secs(300));
    let Decision::Granted { permit, .. } = f.request(1) else {
        panic!("granted");
    };
    let r = PermitRef {
        id: permit.id.clone(),
        token: permit.token,
    };
    f.engine
        .report_outcome(
            &HostId::new("h2").unwrap(),
            &r,
            Outcome::Succeeded,
            "",
            f.now,
        )
        .unwrap();
    f.engine
        .pause(Scope::fleet(), "alice", "maintenance", None, f.now);
    assert!(matches!(f.request(0), Decision::Denied(_)));
    assert_eq!(f.beat(0, None), before);
}

#[test]
fn wake_changes_when_a_pause_is_resumed() {
    let mut f = Fleet::ready();
    let p = f
        .engine
        .pause(Scope::fleet(), "alice", "maintenance", None, f.now);
    let paused = f.beat(0, None);
    f.engine
        .resume(ResumeTarget::Id(p.id), "alice", "done", f.now)
        .unwrap();
    assert_ne!(f.beat(0, None), paused);
}

#[test]
fn wake_changes_when_a_pause_expires() {
    let mut f = Fleet::ready();
    let until = f.now + Duration::from_secs(120);
    f.engine
        .pause(Scope::fleet(), "alice", "maintenance", Some(until), f.now);
    let paused = f.beat(0, None);
    f.advance(Duration::from_secs(60));
    assert_eq!(f.beat(0, None), paused, "still paused");
    f.advance(Duration::from_secs(61));
    assert_ne!(f.beat(0, None), paused);
}

#[test]
fn wake_changes_when_a_breaker_is_reset_to_half_open_and_again_when_it_closes() {
    let mut f = Fleet::ready();
    f.open_breaker();
    let open = f.beat(5, None);
    for i in 0..4 {
        f.stuck[i] = false;
    }
    f.advance(Duration::from_secs(10));
    assert_eq!(f.beat(5, None), open, "an open breaker wakes nobody");
    f.engine
        .reset_breaker(None, "bob", "database is back", f.now)
        .unwrap();
    let half_open = f.beat(5, None);
    assert_ne!(half_open, open);

    let probes = f.engine.config().breaker.half_open_successes;
    for i in 0..probes as usize {
        let Decision::Granted { permit, .. } = f.request(i) else {
            panic!("probe {i} granted");
        };
        let r = PermitRef {
            id: permit.id.clone(),
            token: permit.token,
        };
        f.engine
            .report_outcome(&permit.host, &r, Outcome::Succeeded, "", f.now)
            .unwrap();
    }
    f.advance(Duration::from_secs(10));
    assert!(f.engine.durable().breakers.is_empty(), "breaker closed");
    assert_ne!(f.beat(5, None), half_open);
}

#[test]
fn wake_changes_for_a_released_host_and_only_for_it() {
    let mut f = Fleet::ready();
    f.beat(0, Some("job ingest is still stuck after 2 failed restarts"));
    let (mine, other) = (f.beat(0, None), f.beat(1, None));
    f.engine
        .unquarantine(&Fleet::host(0), "dave", "fixed ingest by hand", f.now)
        .unwrap();
    assert_ne!(f.beat(0, None), mine);
    assert_eq!(f.beat(1, None), other);
}

#[test]
fn wake_changes_when_the_policy_is_reloaded() {
    let mut f = Fleet::ready();
    let before = f.beat(0, None);
    f.engine.set_config(config(POLICY), f.now);
    assert_ne!(f.beat(0, None), before);
}

#[test]
fn wake_changes_when_the_coordinator_restarts() {
    let mut f = Fleet::ready();
    let before = f.beat(0, None);
    let durable = f.engine.durable().clone();
    let later = f.now + Duration::from_secs(5);
    f.engine = Engine::restore(config(POLICY), durable, later);
    f.now = later;
    assert_ne!(f.beat(0, None), before);
}
