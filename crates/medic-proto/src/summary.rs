//! Answers both medicctl and the coordinator's status page give, from the
//! wire's types, so that they say the same thing.

use crate::pb::v1 as pb;

/// The one-line answer to "is medic acting?", from the rules that stop
/// every grant down to those that stop some.
pub fn granting(s: &pb::Status) -> String {
    let fleet_pause = s.pauses.iter().any(|p| {
        p.scope
            .as_ref()
            .is_none_or(|sc| sc.selector.is_empty() && sc.action == 0)
    });
    let fleet_breaker = s.breakers.iter().find(|b| {
        matches!(
            b.scope.as_ref().and_then(|sc| sc.kind.as_ref()),
            Some(pb::breaker_scope::Kind::Fleet(_))
        )
    });
    if s.warming_up_until.is_some() {
        "NO: warming up".to_owned()
    } else if s.live_hosts < s.min_fleet_size {
        "NO: fewer live hosts than the fleet floor".to_owned()
    } else if fleet_pause {
        "NO: paused fleet-wide".to_owned()
    } else if fleet_breaker.is_some_and(|b| b.half_open.is_none()) {
        "NO: the fleet-wide breaker is open".to_owned()
    } else if fleet_breaker.is_some() {
        "probes only: the fleet-wide breaker is half-open".to_owned()
    } else if !s.pauses.is_empty() || !s.breakers.is_empty() {
        format!(
            "partly: {} pause(s) and {} tripped breaker(s) stop some hosts or actions",
            s.pauses.len(),
            s.breakers.len()
        )
    } else {
        "yes, within caps, budgets and windows".to_owned()
    }
}
