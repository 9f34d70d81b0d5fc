//! The status page: one read-only HTML page at `/status` on the metrics
//! listener, for the moment of an incident. Is medic granting, which
//! pauses and breakers are in force and why, the permits in flight,
//! unhealthy hosts by failure domain (a heat map per label), and the last
//! events. Rendered on the server, no script and no external asset; it
//! refreshes itself every few seconds. Same exposure as `/metrics`;
//! `server.status_page = false` turns it off.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use medic_policy::{HostView, Permit, Status};
use medic_proto::pb::v1 as pb;
use medic_store::{HistoryQuery, Store};

use crate::core::Core;

/// How often the page reloads itself, in seconds.
pub const REFRESH_SECS: u32 = 5;

/// How long a rendered page is served again to other viewers before the
/// engine is read anew.
pub const REUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// How many of the latest events the page shows.
pub const EVENTS: usize = 25;

/// What the page shows, read at once from the leading core.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The coordinator's status.
    pub status: Status,
    /// Every known host.
    pub hosts: Vec<HostView>,
    /// Permits in flight.
    pub permits: Vec<Permit>,
    /// The latest audit events, newest first, each with the one sentence
    /// a webhook would carry for it, if it is one webhooks announce.
    pub events: Vec<(pb::Event, Option<String>)>,
    /// The coordinator's clock.
    pub now: SystemTime,
}

/// Where the page reads from: the leading core (a follower has none).
pub trait PageSource: Send + Sync + 'static {
    /// A snapshot, or why there is none.
    fn snapshot(&self) -> Pin<Box<dyn Future<Output = Result<Snapshot, String>> + Send>>;
}

/// The leading core as a [`PageSource`].
pub struct CoreSource<S: Store>(pub Arc<Core<S>>);

impl<S: Store> std::fmt::Debug for CoreSource<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoreSource")
    }
}

impl<S: Store + std::fmt::Debug> PageSource for CoreSource<S> {
    fn snapshot(&self) -> Pin<Box<dyn Future<Output = Result<Snapshot, String>> + Send>> {
        let core = self.0.clone();
        Box::pin(async move {
            let (status, hosts, permits) = core
                .read(|e, now| {
                    let permits: Vec<Permit> = e.permits().cloned().collect();
                    (e.status(now), e.hosts(now), permits)
                })
                .map_err(|e| e.to_string())?;
            let store = core.store().clone();
            let query = HistoryQuery {
                limit: EVENTS,
                newest_first: true,
                ..HistoryQuery::default()
            };
            let page = crate::core::off_task(store.inline(), move || store.history(&query))
                .await
                .map_err(|e| format!("history task failed: {e}"))?
                .map_err(|e| e.to_string())?;
            Ok(Snapshot {
                status,
                hosts,
                permits,
                events: page
                    .entries
                    .into_iter()
                    .map(|entry| {
                        let said =
                            crate::notify::Notification::from_entry(&entry).map(|(_, n)| n.summary);
                        (crate::service::to_wire(entry), said)
                    })
                    .collect(),
                now: core.now(),
            })
        })
    }
}

/// HTML-escapes `s`.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(now: SystemTime, t: SystemTime) -> String {
    let d = now.duration_since(t).unwrap_or_default();
    format!(
        "{} ({} ago)",
        medic_policy::rfc3339(t),
        humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;\
text-align:left;vertical-align:top}th{background:#f4f4f4}.muted{color:#777}\
.verdict{font-size:1.3em;font-weight:bold;padding:.5em .8em;border-radius:.3em;display:inline-block}\
.yes{background:#d9f2d9}.partly{background:#fff0c2}.no{background:#f8d0d0}\
.cells{display:flex;flex-wrap:wrap;gap:.3em}.cell{padding:.35em .6em;border-radius:.25em;\
min-width:7em;font-size:.9em}#events td:nth-child(2){white-space:nowrap}";

/// The whole page for `snap`.
pub fn render(snap: &Snapshot) -> String {
    let s = &snap.status;
    let now = snap.now;
    let wire: pb::Status = s.clone().into();
    let granting = medic_proto::summary::granting(&wire);
    let class = if granting.starts_with("yes") {
        "yes"
    } else if granting.starts_with("NO") {
        "no"
    } else {
        "partly"
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>medic status</title><style>{STYLE}</style></head><body>\
         <h1>medic coordinator {}</h1><p class=\"muted\">{} &middot; refreshes every {REFRESH_SECS} s \
         &middot; read-only</p><p id=\"granting\" class=\"verdict {class}\">granting: {}</p>",
        esc(env!("CARGO_PKG_VERSION")),
        esc(&medic_policy::rfc3339(now)),
        esc(&granting),
    );
    let _ = write!(
        h,
        "<p id=\"hosts\">{} live, {} unhealthy, {} silent, {} quarantined, {} known \
         (fleet floor {}){}{}</p>",
        s.live_hosts,
        s.unhealthy_hosts,
        s.silent_hosts,
        s.quarantined_hosts,
        s.known_hosts,
        s.min_fleet_size,
        if s.dry_run {
            " &middot; <b>dry run</b>"
        } else {
            ""
        },
        s.warming_up_until
            .map(|t| format!(
                " &middot; warming up until {}",
                esc(&medic_policy::rfc3339(t))
            ))
            .unwrap_or_default(),
    );

    h.push_str("<h2>Pauses</h2>");
    if s.pauses.is_empty() {
        h.push_str("<p id=\"pauses\" class=\"muted\">none</p>");
    } else {
        h.push_str("<table id=\"pauses\"><tr><th>ID</th><th>SCOPE</th><th>BY</th><th>WHY</th><th>SINCE</th><th>UNTIL</th></tr>");
        for p in &s.pauses {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                p.id,
                esc(&p.scope.to_string()),
                esc(&p.actor),
                esc(&p.reason),
                esc(&ago(now, p.since)),
                p.until.map_or_else(
                    || "resumed by hand".to_owned(),
                    |u| esc(&medic_policy::rfc3339(u))
                )
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Circuit breakers</h2>");
    if s.breakers.is_empty() {
        h.push_str("<p id=\"breakers\" class=\"muted\">none tripped</p>");
    } else {
        h.push_str("<table id=\"breakers\"><tr><th>SCOPE</th><th>STATE</th><th>CAUSE</th><th>SINCE</th><th>WHY</th></tr>");
        for b in &s.breakers {
            let state = match &b.half_open {
                None => "open".to_owned(),
                Some(ho) => format!(
                    "half-open ({} by {}: {}; {} success(es))",
                    esc(&ago(now, ho.since)),
                    esc(&ho.actor),
                    esc(&ho.reason),
                    ho.successes
                ),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&b.scope.to_string()),
                esc(b.cause.as_str()),
                esc(&ago(now, b.since)),
                esc(&b.detail)
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Slots and budgets</h2><table id=\"actions\"><tr><th>ACTION</th><th>ACTIVE/CAP</th><th>BUDGET USED</th><th>WINDOW</th></tr>");
    for a in &s.actions {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}/{}</td><td>{} of {} per {}</td><td>{}</td></tr>",
            esc(a.action.as_str()),
            a.active,
            a.effective_cap,
            a.rate_used,
            a.rate_limit,
            humantime::format_duration(a.rate_per),
            if a.in_window { "open" } else { "closed" }
        );
    }
    h.push_str("</table>");

    let _ = write!(h, "<h2>Permits in flight ({})</h2>", snap.permits.len());
    if snap.permits.is_empty() {
        h.push_str("<p id=\"permits\" class=\"muted\">none</p>");
    } else {
        h.push_str("<table id=\"permits\"><tr><th>PERMIT</th><th>HOST</th><th>ACTION</th><th>JOB</th><th>GRANTED</th><th>EXPIRES</th><th>REASON</th></tr>");
        for p in &snap.permits {
            let _ = write!(
                h,
                "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(p.id.as_str()),
                if p.dry_run { " (dry run)" } else { "" },
                esc(p.host.as_str()),
                esc(p.action.as_str()),
                esc(&p.job),
                esc(&ago(now, p.granted_at)),
                esc(&medic_policy::rfc3339(p.expires_at)),
                esc(&p.reason)
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Unhealthy hosts by failure domain</h2>");
    heat_map(&mut h, &snap.hosts);

    h.push_str("<h2>Latest events</h2><table id=\"events\"><tr><th>ID</th><th>TIME</th><th>KIND</th><th>HOST</th><th>ACTOR</th><th>WHAT</th></tr>");
    for (e, said) in &snap.events {
        let kind = pb::EventKind::try_from(e.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("EVENT_KIND_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let time = e
            .time
            .as_ref()
            .map(|t| {
                medic_policy::rfc3339(
                    SystemTime::UNIX_EPOCH
                        + std::time::Duration::new(
                            u64::try_from(t.seconds).unwrap_or(0),
                            u32::try_from(t.nanos).unwrap_or(0),
                        ),
                )
            })
            .unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.id,
            esc(&time),
            esc(&kind),
            esc(if e.host_id.is_empty() {
                "-"
            } else {
                &e.host_id
            }),
            esc(&e.actor),
            esc(&what(e, said.as_deref()))
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// Per label (rack, zone, ...), one cell per value: unhealthy hosts of the
/// live ones, coloured from white (none) to red (all).
fn heat_map(h: &mut String, hosts: &[HostView]) {
    // label -> value -> (live, unhealthy, silent, quarantined)
    let mut domains: BTreeMap<&str, BTreeMap<&str, [u32; 4]>> = BTreeMap::new();
    for host in hosts {
        for (k, v) in &host.labels {
            let c = domains.entry(k).or_default().entry(v).or_default();
            c[0] += u32::from(host.live);
            c[1] += u32::from(host.live && host.unhealthy);
            c[2] += u32::from(host.silent_since.is_some());
            c[3] += u32::from(host.quarantine.is_some());
        }
    }
    if domains.is_empty() {
        h.push_str("<p id=\"domains\" class=\"muted\">no host reports labels</p>");
        return;
    }
    h.push_str("<div id=\"domains\">");
    for (label, values) in &domains {
        let _ = write!(h, "<h3>{}</h3><div class=\"cells\">", esc(label));
        for (value, [live, unhealthy, silent, quarantined]) in values {
            let share = if *live == 0 {
                0.0
            } else {
                f64::from(*unhealthy) / f64::from(*live)
            };
            // White to red by the unhealthy share.
            let other = (255.0 * (1.0 - share * 0.75)).round() as u8;
            let _ = write!(
                h,
                "<div class=\"cell\" data-domain=\"{}={}\" style=\"background:rgb(255,{other},{other})\" \
                 title=\"{unhealthy} unhealthy of {live} live; {silent} silent; {quarantined} quarantined\">\
                 <b>{}</b><br>{unhealthy}/{live} unhealthy{}{}</div>",
                esc(label),
                esc(value),
                esc(value),
                if *silent > 0 {
                    format!("<br>{silent} silent")
                } else {
                    String::new()
                },
                if *quarantined > 0 {
                    format!("<br>{quarantined} quarantined")
                } else {
                    String::new()
                },
            );
        }
        h.push_str("</div>");
    }
    h.push_str("</div>");
}

/// One line saying what an event records: the webhook's sentence for the
/// events webhooks announce, else one made here.
fn what(e: &pb::Event, said: Option<&str>) -> String {
    use pb::event::Payload as P;
    match &e.payload {
        Some(P::PermitGranted(g)) => {
            let p = g.permit.clone().unwrap_or_default();
            format!(
                "granted {} {} for job {}: {}",
                action(p.action),
                p.permit_id,
                p.job,
                p.reason
            )
        }
        Some(P::PermitEnded(x)) => format!(
            "{} {} {}: {}",
            action(x.action),
            x.permit_id,
            x.state()
                .as_str_name()
                .trim_start_matches("PERMIT_STATE_")
                .to_ascii_lowercase(),
            x.detail
        ),
        _ if said.is_some() => said.unwrap_or_default().to_owned(),
        Some(P::ClockChecked(c)) => format!("clock checked: {}", c.detail),
        Some(P::Denied(d)) => format!(
            "denied {} {} request(s): {}",
            d.count,
            action(d.action),
            d.denial
                .as_ref()
                .map(|x| x.message.as_str())
                .unwrap_or_default()
        ),
        Some(other) => {
            // The payload's own fields, shortened.
            let text = format!("{other:?}");
            if text.len() > 300 {
                let mut end = 300;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}...", &text[..end])
            } else {
                text
            }
        }
        None => String::new(),
    }
}

fn action(a: i32) -> String {
    pb::Action::try_from(a)
        .map(|a| {
            a.as_str_name()
                .trim_start_matches("ACTION_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// The page a follower serves: who leads.
pub fn follower(leader: Option<&str>) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\"><title>medic status</title>\
         <style>{STYLE}</style></head><body><h1>medic coordinator {}</h1>\
         <p id=\"granting\" class=\"verdict partly\">this replica is a follower: {}</p></body></html>\n",
        esc(env!("CARGO_PKG_VERSION")),
        esc(&leader.map_or_else(
            || "no leader is elected yet".to_owned(),
            |l| format!("the leader is {l}; its status page has the answers")
        ))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_operators_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }
}
