//! Every scenario in its short form, against the real agent and coordinator
//! code, with the invariant checker as the judge; the crash scenarios
//! across 20 seeds each.

#![allow(clippy::unwrap_used)]

use medic_policy::{BreakerCause, BreakerScope, Event};
use medic_sim::{Options, RunResult, Scenario};

fn options(seed: u64) -> Options {
    Options {
        seed,
        short: true,
        exe: Some(env!("CARGO_BIN_EXE_medic-sim").into()),
        ..Options::default()
    }
}

async fn run(name: &str, opts: Options) -> RunResult {
    let r = medic_sim::run(Scenario::load(name).unwrap(), &opts)
        .await
        .unwrap_or_else(|e| panic!("{name} seed {}: {e}", opts.seed));
    assert!(
        r.verdict.ok(),
        "{name} seed {}: invariants violated\n{}",
        opts.seed,
        medic_sim::report::summary(&r)
    );
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn steady_heals_everything_and_holds_every_invariant_but_a_doctored_copy_fails() {
    let r = run("steady", options(1)).await;
    assert!(r.medic.restarts > 0, "nothing was remediated");
    assert!(r.breakers.is_empty(), "a breaker opened in a steady fleet");

    // The same history with one grant replayed under a new token while
    // the first is still active: the checker must object.
    let mut history = r.history.clone();
    let i = history
        .iter()
        .position(|e| matches!(e.event, Some(Event::PermitGranted { .. })))
        .unwrap();
    let mut forged = history[i].clone();
    if let Some(Event::PermitGranted { permit }) = &mut forged.event {
        permit.token = medic_policy::FencingToken(permit.token.0 + 1_000_000);
        permit.id = medic_policy::PermitId::for_token(permit.token);
    }
    history.insert(i + 1, forged);
    let policy = medic_coordinator::CoordinatorConfig::from_toml("")
        .unwrap()
        .policy;
    let v = medic_sim::check::check(
        &history,
        &r.actions,
        &medic_sim::check::Context {
            policy: &policy,
            fleet: &[],
            starts: &[],
            read_at: std::time::SystemTime::now(),
            tick: std::time::Duration::from_secs(1),
        },
    );
    assert!(v.of("I4") > 0 && v.of("I7") > 0, "{:#?}", v.violations);
}

#[tokio::test(flavor = "multi_thread")]
async fn dependency_outage_opens_the_breaker_while_the_legacy_script_reboots_the_fleet() {
    let r = run("dependency-outage", options(1)).await;
    assert!(
        r.breakers.iter().any(|b| b.open && b.scope == "fleet"),
        "the fleet breaker never opened"
    );
    assert!(
        r.legacy.reboots > 5 * (r.medic.reboots + 1),
        "legacy {} vs medic {} reboots",
        r.legacy.reboots,
        r.medic.reboots
    );
    let cap = r.caps.0.unwrap_or(u32::MAX) as usize;
    assert!(r.medic.max_restarts_in_flight <= cap);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rack_opens_that_racks_breaker_only() {
    let r = run("bad-rack", options(1)).await;
    let opened: Vec<_> = r.breakers.iter().filter(|b| b.open).collect();
    assert!(!opened.is_empty(), "no breaker opened");
    assert!(opened.iter().all(|b| b.scope == "rack=r03"), "{opened:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn flapping_hosts_end_in_quarantine() {
    let r = run("flapping", options(1)).await;
    assert!(r.quarantines > 0, "no flapping host was quarantined");
}

#[tokio::test(flavor = "multi_thread")]
async fn partitioned_agents_fail_closed() {
    let r = run("partition", options(1)).await;
    assert!(r.grants > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn storm_is_answered_in_full_and_within_the_caps() {
    let r = run("storm", options(1)).await;
    let st = r.storm.as_ref().unwrap();
    // Every request answered, none failed. How fast is a benchmark figure
    // (BENCHMARKS.md, "Storm"), not a test's: on a loaded machine the
    // real binary's latency says more about the neighbours than about it.
    assert!(
        st.errors == 0 && st.answered == st.hosts,
        "{}",
        medic_sim::report::summary(&r)
    );
    assert_eq!(st.granted as u32, r.caps.0.unwrap().min(st.granted as u32));
    assert!(st.latency.p99 > std::time::Duration::ZERO);
}

/// The history's breaker events for the fleet, with their times in
/// scenario seconds.
fn fleet_breaker_events(r: &RunResult) -> Vec<(f64, &Event, u64)> {
    let t = |at: std::time::SystemTime| match at.duration_since(r.origin) {
        Ok(d) => d.as_secs_f64() * r.speed,
        Err(e) => -e.duration().as_secs_f64() * r.speed,
    };
    r.history
        .iter()
        .filter_map(|e| e.event.as_ref().map(|ev| (t(e.at), ev, e.id)))
        .filter(|(_, ev, _)| match ev {
            Event::BreakerOpened(b) => b.scope == BreakerScope::Fleet,
            Event::BreakerHalfOpened { scope, .. } | Event::BreakerClosed { scope, .. } => {
                *scope == BreakerScope::Fleet
            }
            _ => false,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_mid_outage_lets_one_probe_through_and_reopens_on_its_failure() {
    let r = run("reset-mid-outage", options(1)).await;
    let breakers = fleet_breaker_events(&r);
    // The failure breaker opened before the reset.
    let reset_at = 6.0 * 60.0;
    assert!(
        breakers.iter().any(|(t, ev, _)| *t < reset_at
            && matches!(ev, Event::BreakerOpened(b) if b.cause == BreakerCause::FailureFraction)),
        "the failure breaker did not open before the reset: {breakers:#?}"
    );
    // The reset half-opened it, by the operator.
    let (i, half_open_id) = breakers
        .iter()
        .enumerate()
        .find_map(|(i, (_, ev, id))| match ev {
            Event::BreakerHalfOpened { actor, .. } if actor != "coordinator" => Some((i, *id)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the reset did not half-open the breaker: {breakers:#?}"));
    // ... and the next change is a reopening for probe_failed.
    let (_, next, reopen_id) = breakers
        .get(i + 1)
        .unwrap_or_else(|| panic!("the breaker never reopened: {breakers:#?}"));
    assert!(
        matches!(next, Event::BreakerOpened(b) if b.cause == BreakerCause::ProbeFailed),
        "after the reset: {next:?}"
    );
    // Between the two, at most the budget (1) was granted, and it was.
    let probes = r
        .history
        .iter()
        .filter(|e| e.id > half_open_id && e.id < *reopen_id)
        .filter(|e| matches!(e.event, Some(Event::PermitGranted { .. })))
        .count();
    assert_eq!(probes, 1, "probes granted while half-open");
    assert_eq!(r.half_open_probes, 1);
    assert_eq!(r.half_open_grants_after_reset, 1);
    // The chart counts the half-open breaker apart from open ones.
    assert!(
        r.medic
            .series
            .iter()
            .any(|s| s.breakers_half_open == Some(1) && s.breakers_open == Some(0)),
        "no sample saw the breaker half-open"
    );
    let summary = medic_sim::report::summary(&r);
    assert!(
        summary.contains("granted after reset while half-open: 1 (budget 1)"),
        "{summary}"
    );
    println!("{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mass_silence_opens_the_liveness_drop_breaker_within_one_host_ttl() {
    let r = run("mass-silence", options(1)).await;
    let breakers = fleet_breaker_events(&r);
    let silence_at = 5.0 * 60.0;
    // host_ttl 30 s plus one heartbeat interval 10 s.
    let bound = silence_at + 30.0 + 10.0;
    let (opened_t, _, opened_id) = breakers
        .iter()
        .find(|(t, ev, _)| {
            *t >= silence_at
                && matches!(ev, Event::BreakerOpened(b) if b.cause == BreakerCause::LivenessDrop)
        })
        .unwrap_or_else(|| panic!("the liveness-drop breaker never opened: {breakers:#?}"));
    assert!(
        *opened_t <= bound,
        "the liveness-drop breaker opened {:.1} s after the silence (bound {:.0} s)",
        opened_t - silence_at,
        bound - silence_at
    );
    // Nothing granted from then until it goes half-open or closes.
    let until = breakers
        .iter()
        .find(|(_, ev, id)| {
            *id > *opened_id
                && matches!(
                    ev,
                    Event::BreakerHalfOpened { .. } | Event::BreakerClosed { .. }
                )
        })
        .map_or(u64::MAX, |(_, _, id)| *id);
    let during: Vec<u64> = r
        .history
        .iter()
        .filter(|e| e.id > *opened_id && e.id < until)
        .filter(|e| matches!(e.event, Some(Event::PermitGranted { .. })))
        .map(|e| e.id)
        .collect();
    assert!(during.is_empty(), "granted while open: {during:?}");
    println!(
        "liveness-drop breaker opened {:.1} s after the silence; {}",
        opened_t - silence_at,
        medic_sim::report::summary(&r)
    );
}

async fn seeds(name: &str, range: std::ops::RangeInclusive<u64>) {
    let (mut grants, mut expired, mut after_restart) = (0, 0, 0);
    for seed in range {
        let r = run(name, options(seed)).await;
        if name == "coordinator-crash" {
            assert_eq!(r.coordinator_kills, 1, "seed {seed}");
            assert_eq!(r.coordinator_starts.len(), 2, "seed {seed}");
            // Grants the restarted coordinator made, on the same state.
            let restart = r.origin
                + std::time::Duration::from_secs_f64(r.coordinator_starts[1].max(0.0) / r.speed);
            after_restart += r
                .history
                .iter()
                .filter(|e| e.at > restart && matches!(e.event, Some(Event::PermitGranted { .. })))
                .count();
        }
        grants += r.grants;
        expired += r.expired;
    }
    // The seeds exercised what they are about.
    assert!(grants > 0, "no grant in any seed");
    if name == "agent-crash" {
        assert!(expired > 0, "no agent died holding a permit in any seed");
    }
    if name == "coordinator-crash" {
        assert!(
            after_restart > 0,
            "no seed granted anything after the restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_crash_holds_every_invariant_for_seeds_1_to_10() {
    seeds("coordinator-crash", 1..=10).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_crash_holds_every_invariant_for_seeds_11_to_20() {
    seeds("coordinator-crash", 11..=20).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_crash_holds_every_invariant_for_seeds_1_to_10() {
    seeds("agent-crash", 1..=10).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_crash_holds_every_invariant_for_seeds_11_to_20() {
    seeds("agent-crash", 11..=20).await;
}

#[test]
fn every_builtin_scenario_parses_and_has_a_short_form() {
    for (name, text) in medic_sim::scenario::BUILTIN {
        let s = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.name, *name);
        let short = s.clone().shortened();
        assert!(
            short.fleet.hosts < s.fleet.hosts
                || short.speed > s.speed
                || short.storm.as_ref().map(|x| x.hosts) < s.storm.as_ref().map(|x| x.hosts),
            "{name} has no short form"
        );
    }
}
