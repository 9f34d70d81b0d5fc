//! `medicctl status`: the coordinator at a glance.

use std::io::Write;
use std::time::SystemTime;

use medic_proto::pb::v1 as pb;

use super::Ctx;
use super::show::{approval_table, breaker_table, override_table, pause_table};
use crate::error::Error;
use crate::format::{self, Table, system_time};
use crate::json;

pub(super) async fn status(ctx: &mut Ctx<'_>) -> Result<(), Error> {
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
    coordinator(out, &ctx.conn.url(), &r, now)?;
    fleet(out, &s, &r, now)?;
    writeln!(out)?;
    if s.pauses.is_empty() {
        writeln!(out, "pauses       none")?;
    } else {
        writeln!(out, "PAUSED (no grants within these scopes):")?;
        pause_table(&s.pauses, now).write(out)?;
    }
    if !s.overrides.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "OVERRIDDEN (limits changed by operators until the time shown, `medicctl override end`):"
        )?;
        override_table(&s.overrides, now).write(out)?;
    }
    if !s.approvals.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "APPROVALS (requests waiting for a human, `medicctl approve ID` or `medicctl reject ID`):"
        )?;
        approval_table(&s.approvals, now).write(out)?;
    }
    writeln!(out)?;
    if s.breakers.is_empty() {
        writeln!(out, "breakers     none open")?;
    } else {
        writeln!(
            out,
            "BREAKERS (open: no grants for the hosts they cover, `medicctl breaker reset`; \
             half-open: probe permits only):"
        )?;
        breaker_table(&s.breakers, now).write(out)?;
    }
    writeln!(out)?;
    action_table(&s.actions, now).write(out)?;
    Ok(())
}

/// Which coordinator, how it is reached, who we are, and its clock.
fn coordinator(
    out: &mut dyn Write,
    url: &str,
    r: &pb::GetStatusResponse,
    now: SystemTime,
) -> Result<(), Error> {
    writeln!(out, "coordinator  {url} (version {})", r.version)?;
    writeln!(out, "security     {}", security(r.transport_security))?;
    if !r.caller.is_empty() {
        writeln!(out, "you are      {} ({})", r.caller, r.caller_role)?;
    }
    if let Some(c) = &r.last_clock_step {
        writeln!(
            out,
            "clock        STEPPED {} {} {} ({} step{} since start): {}",
            format::step_direction(c.forward),
            format::opt_duration(c.by.as_ref(), "?"),
            format::opt_time(c.at.as_ref(), now, "-"),
            r.clock_steps,
            if r.clock_steps == 1 { "" } else { "s" },
            c.detail
        )?;
    }
    Ok(())
}

/// How the gRPC port is protected, in words.
fn security(raw: i32) -> &'static str {
    match pb::TransportSecurity::try_from(raw) {
        Ok(pb::TransportSecurity::MutualTls) => "mutual TLS",
        Ok(pb::TransportSecurity::PlaintextLoopback) => {
            "plaintext on loopback (only this machine can connect)"
        }
        Ok(pb::TransportSecurity::Insecure) => {
            "INSECURE: plaintext on a network address \
             (server.insecure = true); anyone who can reach it can speak for any host"
        }
        _ => "unknown (an older coordinator)",
    }
}

/// Whether it grants, its mode, warm-up, config and host counts.
fn fleet(
    out: &mut dyn Write,
    s: &pb::Status,
    r: &pb::GetStatusResponse,
    now: SystemTime,
) -> Result<(), Error> {
    writeln!(out, "granting     {}", medic_proto::summary::granting(s))?;
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
        format::opt_duration(r.heartbeat_interval.as_ref(), "-"),
        format::opt_duration(r.host_ttl.as_ref(), "-"),
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
        "hosts        {} live, {} unhealthy, {} silent, {} quarantined, {} known{floor}",
        s.live_hosts, s.unhealthy_hosts, s.silent_hosts, s.quarantined_hosts, s.known_hosts
    )?;
    Ok(())
}

/// When the next grant of an action fits: never while it is disabled, when
/// a slot frees while every slot is in use, otherwise when the rate budget
/// allows (`rate_next_at`), which may be now.
fn next_grant(a: &pb::ActionStatus, now: SystemTime) -> String {
    if a.effective_cap == 0 {
        "never (disabled)".to_owned()
    } else if a.active >= a.effective_cap {
        format!(
            "when a slot frees ({}/{} in use)",
            a.active, a.effective_cap
        )
    } else {
        format::opt_time(a.rate_next_at.as_ref(), now, "now")
    }
}

/// Per action: slots against the cap, budget left, when the next grant
/// fits, and whether its windows are open.
fn action_table(actions: &[pb::ActionStatus], now: SystemTime) -> Table {
    let mut t = Table::new(&[
        "ACTION",
        "ACTIVE/CAP",
        "BUDGET LEFT",
        "NEXT GRANT FITS",
        "WINDOW",
    ]);
    for a in actions {
        let per = format::opt_duration(a.rate_per.as_ref(), "-");
        let name = json::action_name(a.action, &a.action_name);
        t.row(vec![
            if a.dry_run {
                format!("{name} (dry run)")
            } else {
                name
            },
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
            next_grant(a, now),
            if a.in_window { "open" } else { "closed" }.to_owned(),
        ]);
    }
    t
}
