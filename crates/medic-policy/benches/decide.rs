//! Decision throughput of the engine on a large fleet: 100,000 hosts in 500
//! racks and 20 zones, 1,000 active permits, group caps on two labels.
//!
//! Run: `cargo bench -p medic-policy --bench decide`
//!
//! Each benchmark reports time per call and calls per second (criterion's
//! "thrpt"). The `baseline/clone_request` case measures only building the
//! request (what decoding it off the wire costs at least), so the others
//! can be read as ratios against it on this noisy machine.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use medic_policy::{
    Action, Engine, Heartbeat, HostId, Labels, Outcome, PermitRef, PermitRequest, PolicyConfig,
    Problem, RequestId, Time,
};

const HOSTS: usize = 100_000;
const RACKS: usize = 500;
const ZONES: usize = 20;
const ACTIVE: usize = 1_000;

fn labels(i: usize) -> Labels {
    Labels::from([
        ("rack".to_owned(), format!("r{:03}", i % RACKS)),
        ("zone".to_owned(), format!("z{:02}", i % ZONES)),
        ("pool".to_owned(), "ingest".to_owned()),
    ])
}

fn host(i: usize) -> HostId {
    HostId::new(format!("host-{i:06}.example.net")).unwrap()
}

/// Caps high enough for 1,000 active restarts, with rack and zone caps; the
/// rate budget decides which path a request takes.
fn config(rate_count: u32, per: &str, burst: u32) -> PolicyConfig {
    PolicyConfig::from_toml(&format!(
        r#"
        [breaker]
        unhealthy_percent = 50
        [limits.restart_job]
        max_in_flight = 2000
        max_in_flight_percent = 5
        cooldown = "0s"
        rate = {{ count = {rate_count}, per = "{per}", burst = {burst} }}
        host_budget = {{ max_attempts = 1000000, per = "1h" }}
        [limits.restart_job.groups.rack]
        max_in_flight = 4
        [limits.restart_job.groups.zone]
        max_in_flight_percent = 10
        "#
    ))
    .unwrap()
}

struct Fleet {
    engine: Engine,
    now: Time,
    /// Requests from hosts that hold no permit.
    requests: Vec<PermitRequest>,
}

/// A warmed-up engine over the whole fleet with `ACTIVE` restart permits.
fn fleet(rate_count: u32, per: &str, burst: u32) -> Fleet {
    let start = Time::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let mut engine = Engine::new(config(rate_count, per, burst), start);
    // The fleet reports during warm-up, as it does after a real start.
    let reported = start + Duration::from_secs(5);
    let now = start + Duration::from_secs(31);
    for i in 0..HOSTS {
        engine.heartbeat(
            Heartbeat {
                state_error: None,
                host: host(i),
                labels: labels(i),
                agent_version: "0.1.0".into(),
                problems: if i % 50 == 0 {
                    vec![Problem {
                        job: "ingest".into(),
                        detector: "heartbeat_file".into(),
                        since: start,
                        detail: "stale".into(),
                    }]
                } else {
                    Vec::new()
                },
                held_permit: None,
                needs_human: None,
            },
            reported,
        );
    }
    // Spread 1,000 permits over racks and zones: hosts 0, 97, 194, ...
    // (two per rack, fifty per zone).
    let mut granted = 0;
    for i in (0..ACTIVE).map(holder) {
        let d = engine
            .request_permit(request(i, &format!("setup-{i}")), now)
            .unwrap();
        assert!(d.permit().is_some(), "setup grant {i} denied: {d:?}");
        granted += 1;
    }
    assert_eq!(granted, ACTIVE);
    engine.take_events();
    let requests = (0..4096)
        .map(|k| (k, (k * 7919 + 1) % HOSTS))
        .filter(|&(_, i)| !is_holder(i))
        .map(|(k, i)| request(i, &format!("bench-{k}")))
        .collect();
    Fleet {
        engine,
        now,
        requests,
    }
}

fn holder(k: usize) -> usize {
    k * 97
}

fn is_holder(i: usize) -> bool {
    i.is_multiple_of(97) && i / 97 < ACTIVE
}

fn request(i: usize, id: &str) -> PermitRequest {
    PermitRequest {
        dry_run: false,
        request_id: RequestId::new(id).unwrap(),
        host: host(i),
        action: Action::RestartJob,
        job: "ingest".into(),
        reason: "heartbeat file stale".into(),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));

    // What a request costs to build, before any decision.
    {
        let f = fleet(ACTIVE as u32, "1h", ACTIVE as u32 - 1);
        let mut k = 0usize;
        g.bench_function("baseline/clone_request", |b| {
            b.iter(|| {
                k = (k + 1) % f.requests.len();
                black_box(f.requests[k].clone())
            })
        });
    }

    // Every rule runs; the last one (the rate budget, spent by the setup
    // grants) denies. The common path under load: no event, no write.
    // Time stands still so the budget stays spent.
    {
        let mut f = fleet(ACTIVE as u32, "1h", ACTIVE as u32 - 1);
        let mut k = 0usize;
        let now = f.now;
        g.bench_function("request_permit/denied_by_last_rule", |b| {
            b.iter(|| {
                k = (k + 1) % f.requests.len();
                let d = f.engine.request_permit(f.requests[k].clone(), now).unwrap();
                debug_assert!(d.denial().is_some());
                black_box(d)
            })
        });
        assert!(f.engine.take_events().is_empty());
    }

    // Grant, then report its outcome: the full lifecycle of one permit.
    {
        // A million a second (the most a rate may hold) while the clock
        // moves a microsecond a grant: the budget never runs out.
        let mut f = fleet(1_000_000, "1s", 1_000_000);
        let mut now = f.now;
        let mut k = 0u64;
        g.bench_function("request_permit/grant_then_outcome", |b| {
            b.iter_batched(
                || {
                    k += 1;
                    let i = (k as usize * 7919 + 1) % HOSTS;
                    let i = if is_holder(i) { i + 1 } else { i };
                    request(i, &format!("g-{k}"))
                },
                |req| {
                    now += Duration::from_micros(1);
                    let host = req.host.clone();
                    let d = f.engine.request_permit(req, now).unwrap();
                    if let Some(p) = d.permit() {
                        let r = PermitRef {
                            id: p.id.clone(),
                            token: p.token,
                        };
                        f.engine
                            .report_outcome(&host, &r, Outcome::Succeeded, "ok", now)
                            .unwrap();
                    }
                    f.engine.take_events();
                    black_box(d)
                },
                BatchSize::SmallInput,
            )
        });
    }

    // Explain evaluates every rule and collects every denial.
    {
        let mut f = fleet(ACTIVE as u32, "1h", ACTIVE as u32 - 1);
        let mut k = 0usize;
        g.bench_function("explain", |b| {
            b.iter(|| {
                k = (k + 1) % f.requests.len();
                let r = &f.requests[k];
                black_box(f.engine.explain(&r.host, r.action, f.now))
            })
        });
    }

    // Heartbeats of healthy hosts (the bulk of the coordinator's traffic).
    {
        let mut f = fleet(ACTIVE as u32, "1h", ACTIVE as u32 - 1);
        let beats: Vec<Heartbeat> = (0..4096)
            .map(|k| {
                let i = (k * 7919 + 1) % HOSTS;
                Heartbeat {
                    state_error: None,
                    host: host(i),
                    labels: labels(i),
                    agent_version: "0.1.0".into(),
                    problems: Vec::new(),
                    held_permit: None,
                    needs_human: None,
                }
            })
            .collect();
        let mut k = 0usize;
        let mut now = f.now;
        g.bench_function("heartbeat", |b| {
            b.iter(|| {
                k = (k + 1) % beats.len();
                now += Duration::from_micros(1);
                black_box(f.engine.heartbeat(beats[k].clone(), now))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
