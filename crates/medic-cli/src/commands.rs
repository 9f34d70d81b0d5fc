//! One function per subcommand: build the request, call, print.

use std::io::Write;
use std::time::SystemTime;

use medic_proto::convert::{to_duration, to_timestamp};
use medic_proto::pb::v1 as pb;
use serde::Serialize;

use crate::cli::{
    BreakerResetArgs, ExplainArgs, HistoryArgs, HostReasonArgs, HostsArgs, OutputFormat, PauseArgs,
    PermitsArgs, ReloadArgs, ResumeArgs, RevokeArgs, WatchArgs, When,
};
use crate::client::Connection;
use crate::error::Error;
use crate::format::{self, Table, or_dash, system_time};
use crate::json;

/// Largest page asked for when medicctl lists everything (the server's
/// maximum).
const FULL_PAGE: u32 = 1000;

/// What every command needs: the connection, the output and its format.
pub(crate) struct Ctx<'a> {
    pub(crate) conn: Connection,
    pub(crate) out: &'a mut dyn Write,
    pub(crate) format: OutputFormat,
}

impl Ctx<'_> {
    fn json<T: Serialize>(&mut self, value: &T) -> Result<(), Error> {
        serde_json::to_writer_pretty(&mut *self.out, value).map_err(std::io::Error::from)?;
        writeln!(self.out)?;
        Ok(())
    }

    fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    async fn status_response(&self) -> Result<pb::GetStatusResponse, Error> {
        self.conn
            .unary(pb::GetStatusRequest {}, |mut c, r| async move {
                c.get_status(r).await
            })
            .await
    }
}

fn selector(pairs: &[(String, String)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

fn scope_text(s: Option<&pb::Scope>) -> String {
    let mut text = match s {
        Some(s) if !s.selector.is_empty() => format::labels(&s.selector),
        _ => "fleet".to_owned(),
    };
    if let Some(a) = s.and_then(|s| json::action(s.action)) {
        text.push_str(&format!(", {a} only"));
    }
    text
}

fn pause_table(pauses: &[pb::Pause], now: SystemTime) -> Table {
    let mut t = Table::new(&["ID", "SCOPE", "BY", "SINCE", "UNTIL", "REASON"]);
    for p in pauses {
        t.row(vec![
            p.pause_id.to_string(),
            scope_text(p.scope.as_ref()),
            or_dash(&p.actor),
            format::opt_time(p.since.as_ref(), now, "-"),
            format::opt_time(p.until.as_ref(), now, "until resumed"),
            p.reason.clone(),
        ]);
    }
    t
}

fn breaker_table(breakers: &[pb::BreakerTrip], now: SystemTime) -> Table {
    let mut t = Table::new(&["SCOPE", "CAUSE", "SINCE", "WHY"]);
    for b in breakers {
        t.row(vec![
            json::breaker_scope(b.scope.as_ref()),
            json::breaker_cause(b.cause),
            format::opt_time(b.since.as_ref(), now, "-"),
            b.detail.clone(),
        ]);
    }
    t
}

// === status ===

pub(crate) async fn status(ctx: &mut Ctx<'_>) -> Result<(), Error> {
    let r = ctx.status_response().await?;
    if ctx.is_json() {
        return ctx.json(&json::Status::from(&r));
    }
    let s = r.status.clone().unwrap_or_default();
    // Relative times on the coordinator's clock: they agree with its
    // decisions even when this machine's clock is off.
    let now = r
        .server_time
        .as_ref()
        .map_or_else(SystemTime::now, system_time);
    let out = &mut *ctx.out;
    writeln!(
        out,
        "coordinator  {} (version {})",
        ctx.conn.url(),
        r.version
    )?;
    writeln!(
        out,
        "security     {}",
        match pb::TransportSecurity::try_from(r.transport_security) {
            Ok(pb::TransportSecurity::MutualTls) => "mutual TLS".to_owned(),
            Ok(pb::TransportSecurity::PlaintextLoopback) =>
                "plaintext on loopback (only this machine can connect)".to_owned(),
            Ok(pb::TransportSecurity::Insecure) => "INSECURE: plaintext on a network address \
                 (server.insecure = true); anyone who can reach it can speak for any host"
                .to_owned(),
            _ => "unknown (an older coordinator)".to_owned(),
        }
    )?;
    if !r.caller.is_empty() {
        writeln!(out, "you are      {} ({})", r.caller, r.caller_role)?;
    }
    if let Some(c) = &r.last_clock_step {
        writeln!(
            out,
            "clock        STEPPED {} {} {} ({} step{} since start): {}",
            if c.forward { "ahead" } else { "back" },
            c.by.as_ref().map_or_else(
                || "?".to_owned(),
                |d| format::duration(format::std_duration(d))
            ),
            format::opt_time(c.at.as_ref(), now, "-"),
            r.clock_steps,
            if r.clock_steps == 1 { "" } else { "s" },
            c.detail
        )?;
    }
    writeln!(out, "granting     {}", granting(&s))?;
    writeln!(
        out,
        "mode         {}",
        if s.dry_run {
            "dry-run: grants only tell agents to log what they would do"
        } else {
            "enforce"
        }
    )?;
    match s.warming_up_until.as_ref() {
        Some(t) => writeln!(
            out,
            "warm-up      until {}: no grants until then",
            format::time(system_time(t), now)
        )?,
        None => writeln!(
            out,
            "warm-up      over; started {}",
            format::opt_time(r.started_at.as_ref(), now, "-")
        )?,
    }
    writeln!(
        out,
        "config       loaded {}; heartbeat every {}, hosts live for {}",
        format::opt_time(r.config_loaded_at.as_ref(), now, "-"),
        r.heartbeat_interval.as_ref().map_or_else(
            || "-".to_owned(),
            |d| format::duration(format::std_duration(d))
        ),
        r.host_ttl.as_ref().map_or_else(
            || "-".to_owned(),
            |d| format::duration(format::std_duration(d))
        ),
    )?;
    let floor = if s.live_hosts < s.min_fleet_size {
        format!(
            " (below the fleet floor of {}: no grants)",
            s.min_fleet_size
        )
    } else {
        format!(" (fleet floor {})", s.min_fleet_size)
    };
    writeln!(
        out,
        "hosts        {} live, {} unhealthy, {} quarantined, {} known{floor}",
        s.live_hosts, s.unhealthy_hosts, s.quarantined_hosts, s.known_hosts
    )?;
    writeln!(out)?;
    if s.pauses.is_empty() {
        writeln!(out, "pauses       none")?;
    } else {
        writeln!(out, "PAUSED (no grants within these scopes):")?;
        pause_table(&s.pauses, now).write(out)?;
    }
    writeln!(out)?;
    if s.breakers.is_empty() {
        writeln!(out, "breakers     none open")?;
    } else {
        writeln!(
            out,
            "BREAKERS OPEN (no grants for the hosts they cover; `medicctl breaker reset`):"
        )?;
        breaker_table(&s.breakers, now).write(out)?;
    }
    writeln!(out)?;
    let mut t = Table::new(&[
        "ACTION",
        "ACTIVE/CAP",
        "BUDGET LEFT",
        "NEXT GRANT FITS",
        "WINDOW",
    ]);
    for a in &s.actions {
        let per = a.rate_per.as_ref().map_or_else(
            || "-".to_owned(),
            |d| format::duration(format::std_duration(d)),
        );
        t.row(vec![
            json::action_name(a.action),
            if a.effective_cap == 0 {
                format!("{}/0 (disabled)", a.active)
            } else {
                format!("{}/{}", a.active, a.effective_cap)
            },
            format!(
                "{} of {} per {per}",
                a.rate_limit.saturating_sub(a.rate_used),
                a.rate_limit
            ),
            format::opt_time(a.rate_next_at.as_ref(), now, "now"),
            if a.in_window { "open" } else { "closed" }.to_owned(),
        ]);
    }
    t.write(out)?;
    Ok(())
}

/// The one-line answer to "is medic acting?", from the rules that stop
/// every grant down to those that stop some.
fn granting(s: &pb::Status) -> String {
    let fleet_pause = s.pauses.iter().any(|p| {
        p.scope
            .as_ref()
            .is_none_or(|sc| sc.selector.is_empty() && sc.action == 0)
    });
    let fleet_breaker = s.breakers.iter().any(|b| {
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
    } else if fleet_breaker {
        "NO: the fleet-wide breaker is open".to_owned()
    } else if !s.pauses.is_empty() || !s.breakers.is_empty() {
        format!(
            "partly: {} pause(s) and {} open breaker(s) stop some hosts or actions",
            s.pauses.len(),
            s.breakers.len()
        )
    } else {
        "yes, within caps, budgets and windows".to_owned()
    }
}

// === pause, resume ===

pub(crate) async fn pause(ctx: &mut Ctx<'_>, a: PauseArgs) -> Result<(), Error> {
    let req = pb::PauseRequest {
        scope: Some(pb::Scope {
            selector: selector(&a.selector),
            action: a.action.map_or(pb::Action::Unspecified, Into::into).into(),
        }),
        reason: a.reason,
        duration: a.duration.map(to_duration),
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.pause(r).await })
        .await?;
    let p = r.pause.unwrap_or_default();
    if ctx.is_json() {
        return ctx.json(&json::Paused {
            pause: json::Pause::from(&p),
        });
    }
    let now = p.since.as_ref().map_or_else(SystemTime::now, system_time);
    writeln!(
        ctx.out,
        "paused {} (pause {}), {}",
        scope_text(p.scope.as_ref()),
        p.pause_id,
        match p.until.as_ref() {
            Some(u) => format!("until {}", format::time(system_time(u), now)),
            None => "until resumed".to_owned(),
        }
    )?;
    writeln!(
        ctx.out,
        "permits already granted stay valid: `medicctl permits`, `medicctl revoke`"
    )?;
    Ok(())
}

pub(crate) async fn resume(ctx: &mut Ctx<'_>, a: ResumeArgs) -> Result<(), Error> {
    let targets: Vec<pb::resume_request::Target> = if a.all {
        let s = ctx.status_response().await?.status.unwrap_or_default();
        if s.pauses.is_empty() {
            return Err(Error::Rpc {
                code: "NOT_FOUND",
                message: "no pause is in force".to_owned(),
            });
        }
        s.pauses
            .iter()
            .map(|p| pb::resume_request::Target::PauseId(p.pause_id))
            .collect()
    } else if let Some(id) = a.id {
        vec![pb::resume_request::Target::PauseId(id)]
    } else {
        vec![pb::resume_request::Target::Scope(pb::Scope {
            selector: selector(&a.selector),
            action: a.action.map_or(pb::Action::Unspecified, Into::into).into(),
        })]
    };
    let mut resumed = Vec::new();
    for target in targets {
        let req = pb::ResumeRequest {
            target: Some(target),
            reason: a.reason.clone(),
        };
        match ctx
            .conn
            .unary(req, |mut c, r| async move { c.resume(r).await })
            .await
        {
            Ok(r) => resumed.extend(r.resumed),
            // With --all, a pause that lapsed since we listed it is no error.
            Err(Error::Rpc {
                code: "NOT_FOUND", ..
            }) if a.all => {}
            Err(e) => return Err(e),
        }
    }
    if ctx.is_json() {
        return ctx.json(&json::Resumed {
            resumed: resumed.iter().map(json::Pause::from).collect(),
        });
    }
    writeln!(ctx.out, "resumed {} pause(s):", resumed.len())?;
    pause_table(&resumed, SystemTime::now()).write(ctx.out)?;
    Ok(())
}

// === hosts, permits ===

pub(crate) async fn hosts(ctx: &mut Ctx<'_>, a: HostsArgs) -> Result<(), Error> {
    let mut hosts = Vec::new();
    let mut token = String::new();
    loop {
        let req = pb::ListHostsRequest {
            unhealthy_only: a.unhealthy,
            quarantined_only: a.quarantined,
            selector: selector(&a.selector),
            page_size: FULL_PAGE,
            page_token: token,
        };
        let r = ctx
            .conn
            .unary(req, |mut c, r| async move { c.list_hosts(r).await })
            .await?;
        let empty = r.hosts.is_empty();
        hosts.extend(r.hosts);
        if r.next_page_token.is_empty() || empty {
            break;
        }
        token = r.next_page_token;
    }
    if ctx.is_json() {
        return ctx.json(&json::Hosts {
            hosts: hosts.iter().map(json::Host::from).collect(),
        });
    }
    if hosts.is_empty() {
        writeln!(ctx.out, "no hosts match")?;
        return Ok(());
    }
    let now = SystemTime::now();
    let mut t = Table::new(&[
        "HOST",
        "LIVE",
        "HEALTH",
        "LABELS",
        "PERMIT",
        "LAST HEARTBEAT",
        "QUARANTINE",
        "PROBLEMS",
    ]);
    for h in &hosts {
        t.row(vec![
            h.host_id.clone(),
            if h.live { "yes" } else { "no" }.to_owned(),
            if h.unhealthy { "unhealthy" } else { "ok" }.to_owned(),
            format::labels(&h.labels),
            or_dash(&h.active_permit_id),
            format::opt_time(h.last_heartbeat.as_ref(), now, "never"),
            h.quarantine.as_ref().map_or_else(
                || "-".to_owned(),
                |q| {
                    format!(
                        "{} by {}: {}",
                        json::quarantine_cause(q.cause),
                        q.actor,
                        q.reason
                    )
                },
            ),
            if h.problems.is_empty() {
                "-".to_owned()
            } else {
                h.problems
                    .iter()
                    .map(|p| format!("{} ({}): {}", p.job, p.detector, p.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ]);
    }
    t.write(ctx.out)?;
    Ok(())
}

pub(crate) async fn permits(ctx: &mut Ctx<'_>, a: PermitsArgs) -> Result<(), Error> {
    let states: Vec<i32> = if a.all_states {
        [
            pb::PermitState::Active,
            pb::PermitState::Succeeded,
            pb::PermitState::Failed,
            pb::PermitState::Aborted,
            pb::PermitState::DryRun,
            pb::PermitState::Expired,
            pb::PermitState::Revoked,
        ]
        .into_iter()
        .map(Into::into)
        .collect()
    } else {
        Vec::new()
    };
    let mut permits = Vec::new();
    let mut token = String::new();
    loop {
        let req = pb::ListPermitsRequest {
            host_id: a.host.clone().unwrap_or_default(),
            action: a.action.map_or(pb::Action::Unspecified, Into::into).into(),
            states: states.clone(),
            page_size: FULL_PAGE,
            page_token: token,
        };
        let r = ctx
            .conn
            .unary(req, |mut c, r| async move { c.list_permits(r).await })
            .await?;
        let empty = r.permits.is_empty();
        permits.extend(r.permits);
        if r.next_page_token.is_empty() || empty {
            break;
        }
        token = r.next_page_token;
    }
    if ctx.is_json() {
        return ctx.json(&json::Permits {
            permits: permits.iter().map(json::Permit::from).collect(),
        });
    }
    if permits.is_empty() {
        writeln!(
            ctx.out,
            "{}",
            if a.all_states {
                "no permits match"
            } else {
                "no active permits match"
            }
        )?;
        return Ok(());
    }
    permit_table(&permits, SystemTime::now()).write(ctx.out)?;
    Ok(())
}

fn permit_table(permits: &[pb::Permit], now: SystemTime) -> Table {
    let mut t = Table::new(&[
        "PERMIT", "HOST", "ACTION", "JOB", "STATE", "GRANTED", "EXPIRES", "REASON",
    ]);
    for p in permits {
        let mut state = json::permit_state(p.state);
        if p.dry_run {
            state.push_str(" (dry run)");
        }
        t.row(vec![
            p.permit_id.clone(),
            p.host_id.clone(),
            json::action_name(p.action),
            or_dash(&p.job),
            state,
            format::opt_time(p.granted_at.as_ref(), now, "-"),
            if p.state == i32::from(pb::PermitState::Active) {
                format::opt_time(p.expires_at.as_ref(), now, "-")
            } else {
                "-".to_owned()
            },
            p.reason.clone(),
        ]);
    }
    t
}

pub(crate) async fn revoke(ctx: &mut Ctx<'_>, a: RevokeArgs) -> Result<(), Error> {
    let req = pb::RevokePermitRequest {
        permit_id: a.permit_id,
        reason: a.reason,
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.revoke_permit(r).await })
        .await?;
    let p = r.permit.unwrap_or_default();
    if ctx.is_json() {
        return ctx.json(&json::Revoked {
            permit: json::Permit::from(&p),
        });
    }
    writeln!(
        ctx.out,
        "revoked {} ({} on {}); the agent aborts before any irreversible step",
        p.permit_id,
        json::action_name(p.action),
        p.host_id
    )?;
    Ok(())
}

// === quarantine ===

pub(crate) async fn quarantine(ctx: &mut Ctx<'_>, a: HostReasonArgs) -> Result<(), Error> {
    let req = pb::QuarantineRequest {
        host_id: a.host,
        reason: a.reason,
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.quarantine(r).await })
        .await?;
    let q = r.quarantine.unwrap_or_default();
    if ctx.is_json() {
        return ctx.json(&json::Quarantined {
            quarantine: json::Quarantine::from(&q),
        });
    }
    writeln!(
        ctx.out,
        "quarantined {}: it gets no permit until `medicctl unquarantine {} --reason ...`",
        q.host_id, q.host_id
    )?;
    Ok(())
}

pub(crate) async fn unquarantine(ctx: &mut Ctx<'_>, a: HostReasonArgs) -> Result<(), Error> {
    let req = pb::UnquarantineRequest {
        host_id: a.host,
        reason: a.reason,
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.unquarantine(r).await })
        .await?;
    let q = r.released.unwrap_or_default();
    if ctx.is_json() {
        return ctx.json(&json::Released {
            released: json::Quarantine::from(&q),
        });
    }
    let now = SystemTime::now();
    writeln!(
        ctx.out,
        "released {} (quarantined {} by {}: {}); its attempt budget starts afresh",
        q.host_id,
        format::opt_time(q.since.as_ref(), now, "-"),
        q.actor,
        q.reason
    )?;
    Ok(())
}

// === history, watch ===

pub(crate) async fn history(ctx: &mut Ctx<'_>, a: HistoryArgs) -> Result<(), Error> {
    // A span back from "now" is counted on the coordinator's clock, like the
    // times it records.
    let needs_now = matches!(a.since, Some(When::Ago(_))) || matches!(a.until, Some(When::Ago(_)));
    let server_now = if needs_now {
        ctx.status_response()
            .await?
            .server_time
            .as_ref()
            .map_or_else(SystemTime::now, system_time)
    } else {
        SystemTime::now()
    };
    let resolve = |w: When| match w {
        When::At(t) => t,
        When::Ago(d) => server_now.checked_sub(d).unwrap_or(std::time::UNIX_EPOCH),
    };
    let since = a.since.map(resolve).map(to_timestamp);
    let until = a.until.map(resolve).map(to_timestamp);
    let kinds: Vec<i32> = a
        .kind
        .iter()
        .map(|k| i32::from(pb::EventKind::from(*k)))
        .collect();
    let page_size = a
        .page_size
        .unwrap_or(medic_proto::request::DEFAULT_PAGE_SIZE);

    let mut events: Vec<pb::Event> = Vec::new();
    let mut token = a.page_token.clone().unwrap_or_default();
    let mut more = false;
    let limit = a.limit as usize;
    while events.len() < limit {
        let remaining = u32::try_from(limit - events.len()).unwrap_or(u32::MAX);
        let req = pb::GetHistoryRequest {
            since,
            until,
            host_id: a.host.clone().unwrap_or_default(),
            kinds: kinds.clone(),
            action: a.action.map_or(pb::Action::Unspecified, Into::into).into(),
            page_size: page_size.min(remaining),
            page_token: token.clone(),
            newest_first: a.newest_first,
        };
        let r = ctx
            .conn
            .unary(req, |mut c, r| async move { c.get_history(r).await })
            .await?;
        let empty = r.events.is_empty();
        events.extend(r.events);
        token = r.next_page_token;
        more = !token.is_empty();
        if !more || empty {
            break;
        }
    }
    let next = more.then_some(token);
    if ctx.is_json() {
        return ctx.json(&json::History {
            events: events.iter().map(json::Event::from).collect(),
            next_page_token: next,
        });
    }
    if events.is_empty() {
        writeln!(ctx.out, "no events match")?;
    } else {
        let now = SystemTime::now();
        let mut t = Table::new(&["ID", "TIME", "KIND", "HOST", "ACTOR", "WHAT"]);
        for e in &events {
            t.row(vec![
                e.id.to_string(),
                format::opt_time(e.time.as_ref(), now, "-"),
                json::event_kind(e.kind),
                or_dash(&e.host_id),
                or_dash(&e.actor),
                summary(e),
            ]);
        }
        t.write(ctx.out)?;
    }
    if let Some(next) = next {
        writeln!(
            ctx.out,
            "\nmore events: repeat with --page-token {next} to continue"
        )?;
    }
    Ok(())
}

/// One line saying what an event records.
pub(crate) fn summary(e: &pb::Event) -> String {
    use pb::event::Payload as P;
    let at = |t: Option<&prost_types::Timestamp>| {
        t.map_or_else(|| "-".to_owned(), |t| format::absolute(system_time(t)))
    };
    let with_reason = |what: String, why: &str| {
        if why.is_empty() {
            what
        } else {
            format!("{what}: {why}")
        }
    };
    match &e.payload {
        Some(P::PermitGranted(g)) => {
            let p = g.permit.clone().unwrap_or_default();
            with_reason(
                format!(
                    "granted {} {} for job {}{}",
                    json::action_name(p.action),
                    p.permit_id,
                    p.job,
                    if p.dry_run { " (dry run)" } else { "" }
                ),
                &p.reason,
            )
        }
        Some(P::PermitRenewed(r)) => {
            format!(
                "renewed {} until {}",
                r.permit_id,
                at(r.expires_at.as_ref())
            )
        }
        Some(P::PermitEnded(x)) => with_reason(
            format!(
                "{} {} {}",
                json::action_name(x.action),
                x.permit_id,
                json::permit_state(x.state)
            ),
            &x.detail,
        ),
        Some(P::HostQuarantined(q)) => with_reason(
            format!("quarantined ({})", json::quarantine_cause(q.cause)),
            &q.reason,
        ),
        Some(P::HostReleased(r)) => with_reason("released from quarantine".to_owned(), &r.reason),
        Some(P::Paused(p)) => with_reason(
            format!(
                "paused {} (pause {}){}",
                scope_text(p.scope.as_ref()),
                p.pause_id,
                p.until
                    .as_ref()
                    .map(|u| format!(" until {}", at(Some(u))))
                    .unwrap_or_default()
            ),
            &p.reason,
        ),
        Some(P::Resumed(r)) => {
            let p = r.pause.clone().unwrap_or_default();
            with_reason(
                format!(
                    "resumed {} (pause {})",
                    scope_text(p.scope.as_ref()),
                    p.pause_id
                ),
                &r.reason,
            )
        }
        Some(P::BreakerOpened(b)) => with_reason(
            format!(
                "breaker {} opened ({})",
                json::breaker_scope(b.scope.as_ref()),
                json::breaker_cause(b.cause)
            ),
            &b.detail,
        ),
        Some(P::BreakerClosed(b)) => with_reason(
            format!("breaker {} closed", json::breaker_scope(b.scope.as_ref())),
            &b.reason,
        ),
        Some(P::ClockChecked(c)) => match &c.step {
            Some(step) => with_reason(
                format!(
                    "CLOCK STEPPED {} {}; recorded times moved with it",
                    if step.forward { "ahead" } else { "back" },
                    step.by.as_ref().map_or_else(
                        || "?".to_owned(),
                        |d| format::duration(format::std_duration(d))
                    )
                ),
                &c.detail,
            ),
            None => with_reason("clock checked".to_owned(), &c.detail),
        },
        Some(P::Denied(d)) => {
            let denial = d.denial.clone().unwrap_or_default();
            with_reason(
                format!(
                    "{} denied ({}){}",
                    json::action_name(d.action),
                    json::deny_reason(denial.reason),
                    if d.count > 1 {
                        format!(" x{}", d.count)
                    } else {
                        String::new()
                    }
                ),
                &denial.message,
            )
        }
        Some(P::AccessDenied(a)) => format!(
            "REFUSED {} to {}{}{}: {}",
            a.call,
            a.identity,
            if a.peer.is_empty() {
                String::new()
            } else {
                format!(" from {}", a.peer)
            },
            if a.count > 1 {
                format!(" ({} times)", a.count)
            } else {
                String::new()
            },
            e.reason
        ),
        Some(P::ConfigReloaded(c)) => {
            if c.ok {
                with_reason("config reloaded".to_owned(), &e.reason)
            } else {
                format!(
                    "config reload rejected: {}",
                    c.errors
                        .iter()
                        .map(|e| if e.key.is_empty() {
                            e.message.clone()
                        } else {
                            format!("{}: {}", e.key, e.message)
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        }
        None => e.reason.clone(),
    }
}

pub(crate) async fn watch(ctx: &mut Ctx<'_>, a: WatchArgs) -> Result<(), Error> {
    let kinds: Vec<i32> = a
        .kind
        .iter()
        .map(|k| i32::from(pb::EventKind::from(*k)))
        .collect();
    let mut after = a.after_id;
    if !ctx.is_json() {
        writeln!(
            ctx.out,
            "{:<20}  {:>6}  {:<10}  {:<16}  {:<24}  WHAT",
            "TIME", "ID", "KIND", "HOST", "ACTOR"
        )?;
        ctx.out.flush()?;
    }
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    'reconnect: loop {
        let mut admin = ctx.conn.admin().await?;
        let req = pb::WatchEventsRequest {
            kinds: kinds.clone(),
            after_id: after,
        };
        let opened = tokio::select! {
            r = tokio::time::timeout(ctx.conn.timeout(), admin.watch_events(req)) => r,
            _ = &mut interrupted => return Ok(()),
        };
        let mut stream = match opened {
            Err(_) => {
                return Err(Error::Timeout {
                    url: ctx.conn.url().to_owned(),
                    timeout: format::duration(ctx.conn.timeout()),
                });
            }
            Ok(Err(s)) => return Err(ctx.conn.status_error(&s)),
            Ok(Ok(r)) => r.into_inner(),
        };
        loop {
            let next = tokio::select! {
                m = stream.message() => m,
                _ = &mut interrupted => return Ok(()),
            };
            match next {
                Ok(Some(m)) => {
                    let Some(e) = m.event else { continue };
                    after = Some(e.id);
                    if ctx.is_json() {
                        serde_json::to_writer(&mut *ctx.out, &json::Event::from(&e))
                            .map_err(std::io::Error::from)?;
                        writeln!(ctx.out)?;
                    } else {
                        writeln!(
                            ctx.out,
                            "{:<20}  {:>6}  {:<10}  {:<16}  {:<24}  {}",
                            e.time.as_ref().map_or_else(
                                || "-".to_owned(),
                                |t| format::absolute(system_time(t))
                            ),
                            e.id,
                            json::event_kind(e.kind),
                            or_dash(&e.host_id),
                            or_dash(&e.actor),
                            summary(&e)
                        )?;
                    }
                    ctx.out.flush()?;
                }
                // The server ended the stream (it is shutting down, or this
                // watcher fell behind): resume where we left off when told
                // we lagged, otherwise report it.
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::DataLoss | tonic::Code::ResourceExhausted
                    ) =>
                {
                    eprintln!(
                        "medicctl: {}; resuming after event {}",
                        s.message(),
                        after.map_or_else(|| "-".to_owned(), |a| a.to_string())
                    );
                    continue 'reconnect;
                }
                Err(s) => return Err(ctx.conn.status_error(&s)),
                Ok(None) => {
                    return Err(Error::Failed(format!(
                        "the coordinator at {} ended the event stream",
                        ctx.conn.url()
                    )));
                }
            }
        }
    }
}

// === explain ===

pub(crate) async fn explain(ctx: &mut Ctx<'_>, a: ExplainArgs) -> Result<(), Error> {
    let req = pb::ExplainRequest {
        host_id: a.host,
        action: pb::Action::from(a.action).into(),
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.explain(r).await })
        .await?;
    if ctx.is_json() {
        return ctx.json(&json::Explain::from(&r));
    }
    let action = json::action_name(r.action);
    if r.would_grant {
        writeln!(
            ctx.out,
            "{} would be granted {action} now: no rule denies it",
            r.host_id
        )?;
        return Ok(());
    }
    writeln!(
        ctx.out,
        "{} would be denied {action} now: {} rule{} {}",
        r.host_id,
        r.denials.len(),
        if r.denials.len() == 1 { "" } else { "s" },
        if r.denials.len() == 1 {
            "denies"
        } else {
            "deny"
        }
    )?;
    let now = SystemTime::now();
    let mut t = Table::new(&["RULE", "CLEARS", "WHY"]);
    for d in &r.denials {
        let clears = match d.retry_after.as_ref().map(format::std_duration) {
            None => "when a human acts".to_owned(),
            Some(d) if d.is_zero() => "may have cleared".to_owned(),
            Some(d) => format!("in {} ({})", format::duration(d), format::absolute(now + d)),
        };
        t.row(vec![json::deny_reason(d.reason), clears, d.message.clone()]);
    }
    t.write(ctx.out)?;
    Ok(())
}

// === breaker, reload ===

pub(crate) async fn breaker_reset(ctx: &mut Ctx<'_>, a: BreakerResetArgs) -> Result<(), Error> {
    let req = pb::ResetBreakerRequest {
        scope: a.scope.map(Into::into),
        reason: a.reason,
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.reset_breaker(r).await })
        .await?;
    if ctx.is_json() {
        return ctx.json(&json::BreakersClosed {
            closed: r.closed.iter().map(json::Breaker::from).collect(),
        });
    }
    writeln!(
        ctx.out,
        "closed {} breaker(s); one whose condition still holds opens again at the next evaluation:",
        r.closed.len()
    )?;
    breaker_table(&r.closed, SystemTime::now()).write(ctx.out)?;
    Ok(())
}

pub(crate) async fn reload(ctx: &mut Ctx<'_>, a: ReloadArgs) -> Result<(), Error> {
    let req = pb::ReloadConfigRequest { reason: a.reason };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.reload_config(r).await })
        .await?;
    if ctx.is_json() {
        ctx.json(&json::Reload {
            applied: r.applied,
            errors: r.errors.iter().map(json::ConfigError::from).collect(),
        })?;
    } else if r.applied {
        writeln!(ctx.out, "reloaded: the new configuration is in force")?;
    } else {
        let mut t = Table::new(&["KEY", "ERROR"]);
        for e in &r.errors {
            t.row(vec![
                if e.key.is_empty() {
                    "(file)".to_owned()
                } else {
                    e.key.clone()
                },
                e.message.clone(),
            ]);
        }
        t.write(ctx.out)?;
    }
    if r.applied {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "the coordinator rejected the new configuration ({} error{}); the old one keeps running",
            r.errors.len(),
            if r.errors.len() == 1 { "" } else { "s" }
        )))
    }
}
