//! The baselines: the reboot script medic replaces, and the same script
//! behind a fleet-wide lock (kured-style). Every `interval`, on every host,
//! a cron job reboots the host if its job looks stuck. The script has no
//! coordination, no caps, no breaker; the lock lets `concurrency` hosts
//! reboot at a time and has nothing else (no breaker, no budgets, no
//! restarts first). Both live through the same [`World`] as the medic run,
//! each with its own copy of the shared dependency, so the numbers compare
//! and show which rule buys what.

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::model::{JobModel, StuckTracker, World, draw};
use crate::record::{Sample, Side};
use crate::scenario::Scenario;

/// Which baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// Every stuck host reboots at every run of the cron job.
    Legacy,
    /// A stuck host reboots only if it takes one of `concurrency` slots of
    /// a fleet-wide lock, which it holds until it is back up.
    Lock {
        /// Hosts rebooting at once, at most.
        concurrency: usize,
    },
}

impl Script {
    /// Its name in the report.
    pub fn name(self) -> String {
        match self {
            Script::Legacy => "legacy script".to_owned(),
            Script::Lock { concurrency } => format!("reboot lock ({concurrency})"),
        }
    }
}

/// Runs the legacy script over `world`; samples every `step` seconds.
pub fn run(scenario: &Scenario, world: &World, step: f64) -> Side {
    run_script(scenario, world, step, Script::Legacy)
}

/// Runs `script` over `world`; samples every `step` seconds.
pub fn run_script(scenario: &Scenario, world: &World, step: f64, script: Script) -> Side {
    let n = world.hosts.len();
    let dependency = world.dependency();
    let mut jobs: Vec<JobModel> = world
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            JobModel::new(h.clone(), world.seed ^ 0x001e_9ac7 ^ ((i as u64) << 20))
                .with_dependency(dependency.as_ref(), i)
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(world.seed ^ 0x5eed);
    // Some(t): down rebooting until t.
    let mut down: Vec<Option<f64>> = vec![None; n];
    let mut never_back = vec![false; n];
    let mut tracker = StuckTracker::new(n);
    let mut side = Side {
        name: script.name(),
        ..Side::default()
    };
    let interval = scenario.legacy.interval.secs().max(1.0);
    let end = scenario.duration.secs();
    let p_fix = scenario.jobs.reboot_fixes;
    let mut t = 0.0_f64;
    let mut next_cron = interval;
    let mut next_sample = 0.0;
    // One-second resolution is finer than any interval in the scenarios.
    while t <= end {
        for i in 0..n {
            if let Some(until) = down[i]
                && until <= t
                && !never_back[i]
            {
                down[i] = None;
                jobs[i].reboot(t, p_fix);
            }
        }
        if t >= next_cron {
            next_cron += interval;
            // A host that never came back holds its slot of the lock for
            // good, as it would with kured.
            let mut rebooting = down.iter().filter(|d| d.is_some()).count();
            // Whoever asks the lock first: a different host each run.
            let first = match script {
                Script::Lock { .. } if n > 0 => rand::Rng::random_range(&mut rng, 0..n),
                _ => 0,
            };
            for i in (0..n).map(|k| (first + k) % n.max(1)) {
                if let Script::Lock { concurrency } = script
                    && rebooting >= concurrency
                {
                    break;
                }
                if down[i].is_none() && jobs[i].stuck(t).is_some() {
                    side.reboots += 1;
                    rebooting += 1;
                    jobs[i].going_down(t);
                    down[i] = Some(t + draw(&mut rng, scenario.fleet.reboot_time));
                    // A host that dies rebooting under medic dies under
                    // the script too.
                    if let Some(c) = jobs[i].plan().crash
                        && t >= c.start
                        && t < c.end
                        && rand::Rng::random_bool(&mut rng, c.never_back)
                    {
                        never_back[i] = true;
                    }
                }
            }
        }
        if t >= next_sample {
            next_sample += step;
            let stuck: Vec<bool> = (0..n)
                .map(|i| down[i].is_some() || jobs[i].stuck(t).is_some())
                .collect();
            let count = tracker.sample(t, stuck.into_iter());
            side.series.push(Sample {
                t,
                stuck: count,
                reboots_in_flight: down.iter().filter(|d| d.is_some()).count(),
                reboots_total: side.reboots,
                coordinator_up: true,
                ..Sample::default()
            });
        }
        t += 1.0;
    }
    side.stuck_host_minutes = tracker.host_seconds / 60.0;
    side.longest_stuck_minutes = tracker.longest / 60.0;
    let (left, for_secs) = tracker.left_stuck();
    side.left_stuck = left;
    side.left_stuck_minutes = for_secs / 60.0;
    side.finish();
    side.finish_dependency(dependency.as_ref(), end);
    side
}
