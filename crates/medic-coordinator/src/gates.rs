//! Alert gates: the I/O half. Each `[[gates]]` entry gets an evaluator task
//! that runs its query every `interval` against Prometheus (through a
//! [`GateSource`]) and hands the round's results to the engine, which
//! judges them at decision time (medic-policy's gate rule; a result older
//! than `stale_after` counts as an error there).
//!
//! A per-domain gate (`label = "rack"`) is evaluated once per distinct
//! value of the label among live hosts, with `$value` replaced by the value
//! (escaped for its PromQL string literal), at most [`PARALLEL_QUERIES`] at
//! a time (a new one starts as soon as one ends). Each reading carries the
//! time its query was sent, not the end of the round: a slow round cannot
//! make an old answer look fresh to `stale_after`. One query per value rather than one `by (rack)` query: the
//! SRE's query stays an ordinary one they can paste into Prometheus for a
//! rack and see what medic sees, any expression works (not only those
//! that keep the label), and a value whose query fails is held (or not)
//! on its own. The cost is one query per value per interval: for thousands
//! of values, a longer interval keeps Prometheus' load in bounds.
//!
//! The evaluators follow the configuration: on every install (start,
//! SIGHUP, `ReloadConfig`, election) a gate whose settings changed is
//! restarted, a removed one stopped and its metrics removed. The engine
//! keeps the readings of unchanged gates across a reload.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use medic_policy::config::{GateConfig, OnError};
use medic_policy::{GateReading, GateReadings};
use medic_store::Store;

use crate::core::Core;
use crate::metrics::{GateLabel, Metrics};
use crate::notify::{HttpClient, http_client};

/// How many queries of one per-domain gate run at once.
pub const PARALLEL_QUERIES: usize = 8;

/// The longest answer read from Prometheus: a gate's query that returns
/// more than this is a query to fix, and is reported as an error.
const MAX_ANSWER: usize = 4 << 20;

/// The most series of one answer a reading keeps (denials name five).
const MAX_SERIES_KEPT: usize = 50;

/// A query's answer: the series it returned, each formatted as
/// `name{label="value",...}`, or why there is none.
pub type QueryResult = Result<Vec<String>, String>;

/// The future a [`GateSource`] returns.
pub type QueryFuture<'a> = Pin<Box<dyn Future<Output = QueryResult> + Send + 'a>>;

/// Where gate queries are answered: Prometheus' HTTP API in production.
pub trait GateSource: Send + Sync + Debug + 'static {
    /// Runs the instant query `query` against the server at `base` (a
    /// base URL without a trailing slash), giving up after `timeout`.
    fn query<'a>(&'a self, base: &'a str, query: &'a str, timeout: Duration) -> QueryFuture<'a>;
}

impl<T: GateSource + ?Sized> GateSource for Arc<T> {
    fn query<'a>(&'a self, base: &'a str, query: &'a str, timeout: Duration) -> QueryFuture<'a> {
        (**self).query(base, query, timeout)
    }
}

// === Prometheus ===

/// Prometheus' HTTP API (`POST /api/v1/query`), over the HTTP client the
/// webhooks use (HTTP, or HTTPS with the public web roots).
#[derive(Clone)]
pub struct Prometheus {
    client: Result<HttpClient, String>,
}

impl Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus").finish_non_exhaustive()
    }
}

impl Default for Prometheus {
    fn default() -> Self {
        Self::new()
    }
}

impl Prometheus {
    /// A client for any number of servers.
    pub fn new() -> Self {
        Self {
            client: http_client().map_err(|e| format!("no HTTP client: {e}")),
        }
    }
}

impl GateSource for Prometheus {
    fn query<'a>(&'a self, base: &'a str, query: &'a str, timeout: Duration) -> QueryFuture<'a> {
        Box::pin(async move {
            let client = self.client.as_ref().map_err(Clone::clone)?;
            // Prometheus stops evaluating at its own `timeout` too.
            let body = format!(
                "query={}&timeout={}ms",
                form_encode(query),
                timeout.as_millis().max(1)
            );
            let req = hyper::Request::post(format!("{base}/api/v1/query"))
                .header(
                    hyper::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .header(
                    hyper::header::USER_AGENT,
                    concat!("medic-coordinator/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| format!("bad request to {base}: {e}"))?;
            let answer = async {
                let resp = client
                    .request(req)
                    .await
                    .map_err(|e| format!("{base} unreachable: {}", error_chain(&e)))?;
                let status = resp.status();
                let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .map_err(|e| format!("reading {base}'s answer: {e}"))?
                    .to_bytes();
                Ok::<_, String>((status, body))
            };
            let (status, body) = tokio::time::timeout(timeout, answer).await.map_err(|_| {
                format!(
                    "{base} did not answer within the gate's timeout ({})",
                    humantime::format_duration(timeout)
                )
            })??;
            parse_answer(status.as_u16(), &body)
        })
    }
}

/// An error with its causes, as hyper's client errors hide the useful
/// part ("connection refused") in their sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Reads an answer of `/api/v1/query`: the series of an instant vector,
/// or the error Prometheus gave (an invalid query is a 400 with
/// `"status": "error"`).
pub fn parse_answer(status: u16, body: &[u8]) -> QueryResult {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("HTTP {status} with a body that is not Prometheus' JSON: {text:?}")
    })?;
    if json["status"] != "success" {
        return Err(format!(
            "Prometheus refused the query (HTTP {status}, {}): {}",
            json["errorType"].as_str().unwrap_or("no error type"),
            json["error"].as_str().unwrap_or("no error message")
        ));
    }
    let data = &json["data"];
    match data["resultType"].as_str() {
        Some("vector") => {}
        Some(other) => {
            return Err(format!(
                "the query returns a {other}; a gate needs an instant vector (series), \
                 e.g. ALERTS{{alertstate=\"firing\"}} or up == 0"
            ));
        }
        None => return Err(format!("HTTP {status}: an answer without data.resultType")),
    }
    let result = data["result"]
        .as_array()
        .ok_or_else(|| format!("HTTP {status}: an answer without data.result"))?;
    Ok(result
        .iter()
        .take(MAX_SERIES_KEPT)
        .map(|s| format_series(&s["metric"]))
        .chain((result.len() > MAX_SERIES_KEPT).then(|| {
            format!(
                "{} more series",
                result.len().saturating_sub(MAX_SERIES_KEPT)
            )
        }))
        .collect())
}

/// `name{label="value",...}` (labels sorted, `__name__` as the name).
fn format_series(metric: &serde_json::Value) -> String {
    let Some(labels) = metric.as_object() else {
        return "{}".to_owned();
    };
    let name = labels
        .get("__name__")
        .and_then(|n| n.as_str())
        .unwrap_or("");
    let mut pairs: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    format!("{name}{{{}}}", pairs.join(","))
}

// === The evaluators ===

/// Runs an evaluator per configured gate, following the configuration in
/// force, until dropped (the leader's background tasks are aborted when it
/// stops leading).
pub(crate) async fn run<S: Store + Debug>(core: Arc<Core<S>>, source: Arc<dyn GateSource>) {
    let mut installs = core.live().installs();
    let mut running: HashMap<String, (GateConfig, crate::role::AbortOnDrop<()>)> = HashMap::new();
    let mut known: HashSet<String> = HashSet::new();
    loop {
        installs.mark_unchanged();
        let gates = core.config().policy.gates.clone();
        running.retain(|_, (g, _)| gates.contains(g));
        let names: HashSet<String> = gates.iter().map(|g| g.name.clone()).collect();
        for gone in known.difference(&names) {
            remove_metrics(core.metrics(), gone);
        }
        known = names;
        for g in gates {
            if running.contains_key(&g.name) {
                continue;
            }
            let task = tokio::spawn(evaluate(core.clone(), source.clone(), g.clone()));
            running.insert(g.name.clone(), (g, crate::role::AbortOnDrop(task)));
        }
        if installs.changed().await.is_err() {
            return;
        }
    }
}

/// Forgets the metrics of a gate no longer configured.
fn remove_metrics(m: &Metrics, gate: &str) {
    let label = GateLabel {
        gate: gate.to_owned(),
    };
    m.gate_open.remove(&label);
    m.gate_closed_domains.remove(&label);
    m.gate_failing.remove(&label);
    m.gate_errors.remove(&label);
    m.gate_last_success.remove(&label);
}

/// One gate's evaluator: a round every `interval`, until aborted or the
/// core stops deciding.
async fn evaluate<S: Store + Debug>(
    core: Arc<Core<S>>,
    source: Arc<dyn GateSource>,
    g: GateConfig,
) {
    let label = GateLabel {
        gate: g.name.clone(),
    };
    let m = core.metrics();
    // Series exist from the start, so that alerts on them can fire.
    let _ = m.gate_errors.get_or_create(&label);
    let _ = m.gate_last_success.get_or_create(&label);
    m.gate_open.get_or_create(&label).set(0);
    let mut ticker = tokio::time::interval(g.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Summary::default();
    let mut warned_slow = false;
    loop {
        ticker.tick().await;
        let began = core.now();
        match round(&core, source.as_ref(), &g).await {
            Ok(summary) => {
                summary.log_change(&g, &last);
                last = summary;
            }
            // The core refuses everything: it is stopping.
            Err(_) => return,
        }
        // A reading is installed when its round ends and replaced at the
        // end of the next: the first of a long round reaches about two
        // rounds (or an interval and a round) of age.
        let took = core.now().duration_since(began).unwrap_or_default();
        let oldest = took + g.interval.max(took);
        let slow = oldest > g.stale_after;
        if slow && !warned_slow {
            tracing::warn!(
                gate = %g.name,
                round = %humantime::format_duration(took),
                stale_after = %humantime::format_duration(g.stale_after),
                "alert gate's round (its queries, {PARALLEL_QUERIES} at a time) is so long that \
                 its oldest readings go past stale_after between rounds, and count as errors: \
                 raise stale_after (to at least interval + 2 x round), or ask fewer values"
            );
        }
        warned_slow = slow;
    }
}

/// What one round found, for metrics and logs.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    /// Values (or `None` for a fleet-wide gate) the gate holds.
    closed: Vec<Option<String>>,
    /// The first error of the round, if any.
    error: Option<String>,
}

impl Summary {
    fn log_change(&self, g: &GateConfig, last: &Summary) {
        if self.closed != last.closed {
            let what: Vec<String> = self
                .closed
                .iter()
                .map(|v| v.as_deref().unwrap_or("fleet").to_owned())
                .collect();
            if what.is_empty() {
                tracing::info!(gate = %g.name, "alert gate open: grants may resume");
            } else {
                tracing::warn!(gate = %g.name, closed = %what.join(","), "alert gate closed");
            }
        }
        match (&self.error, &last.error) {
            (Some(e), None) => tracing::warn!(
                gate = %g.name, error = %e, on_error = g.on_error.as_str(),
                "alert gate cannot be evaluated"
            ),
            (None, Some(_)) => tracing::info!(gate = %g.name, "alert gate evaluated again"),
            _ => {}
        }
    }
}

/// Evaluates `g` once (for every value of its label, if it has one) and
/// records the readings in the engine and the metrics.
async fn round<S: Store + Debug>(
    core: &Arc<Core<S>>,
    source: &dyn GateSource,
    g: &GateConfig,
) -> Result<Summary, crate::core::CoreError> {
    let values: Vec<Option<String>> = match &g.label {
        None => vec![None],
        Some(l) => core
            .read(|e, _| e.label_values(l))?
            .into_iter()
            .map(Some)
            .collect(),
    };
    let results = query_all(source, g, &values, || core.now()).await;
    let at = core.now();
    let m = core.metrics();
    let label = GateLabel {
        gate: g.name.clone(),
    };
    let errors = results.iter().filter(|(_, _, r)| r.is_err()).count();
    m.gate_errors
        .get_or_create(&label)
        .inc_by(u64::try_from(errors).unwrap_or(u64::MAX));
    let holds = |r: &QueryResult| match r {
        Ok(series) => !series.is_empty(),
        Err(_) => g.on_error == OnError::Closed,
    };
    let summary = Summary {
        closed: results
            .iter()
            .filter(|(_, _, r)| holds(r))
            .map(|(v, _, _)| v.clone())
            .collect(),
        error: results.iter().find_map(|(_, _, r)| r.clone().err()),
    };
    m.gate_closed_domains
        .get_or_create(&label)
        .set(i64::try_from(summary.closed.len()).unwrap_or(i64::MAX));
    m.gate_open
        .get_or_create(&label)
        .set(i64::from(summary.closed.is_empty()));
    m.gate_failing
        .get_or_create(&label)
        .set(i64::from(errors > 0));
    if errors == 0 {
        m.gate_last_success
            .get_or_create(&label)
            .set(unix_seconds(at));
    }
    let readings = match &g.label {
        None => {
            let (at, result) = results.into_iter().next().map_or_else(
                || (at, Err("no evaluation".to_owned())),
                |(_, sent, r)| (sent, r),
            );
            GateReadings::Fleet(GateReading { at, result })
        }
        Some(_) => GateReadings::ByValue(
            results
                .into_iter()
                .filter_map(|(v, at, result)| Some((v?, GateReading { at, result })))
                .collect(),
        ),
    };
    core.read(|e, now| e.set_gate_readings(g, readings, now))?;
    Ok(summary)
}

/// Runs the query for every value, at most [`PARALLEL_QUERIES`] at once
/// (the next starts as soon as one ends), in the order of `values`. Each
/// answer comes with the time (`now`) its query was sent.
async fn query_all(
    source: &dyn GateSource,
    g: &GateConfig,
    values: &[Option<String>],
    now: impl Fn() -> SystemTime,
) -> Vec<(Option<String>, SystemTime, QueryResult)> {
    let queries: Vec<String> = values.iter().map(|v| g.query_for(v.as_deref())).collect();
    let mut sent: Vec<Option<SystemTime>> = vec![None; values.len()];
    let mut done: Vec<Option<QueryResult>> = vec![None; values.len()];
    let mut running: Vec<(usize, QueryFuture<'_>)> = Vec::with_capacity(PARALLEL_QUERIES);
    let mut next = 0;
    std::future::poll_fn(|cx| {
        loop {
            while running.len() < PARALLEL_QUERIES && next < queries.len() {
                sent[next] = Some(now());
                let q = source.query(&g.prometheus, &queries[next], g.timeout);
                running.push((next, q));
                next += 1;
            }
            let before = running.len();
            running.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
                std::task::Poll::Ready(r) => {
                    done[*i] = Some(r);
                    false
                }
                std::task::Poll::Pending => true,
            });
            if running.is_empty() && next == queries.len() {
                return std::task::Poll::Ready(());
            }
            // Nothing ended: wait to be woken. Something did: start more.
            if running.len() == before {
                return std::task::Poll::Pending;
            }
        }
    })
    .await;
    values
        .iter()
        .cloned()
        .zip(sent)
        .zip(done)
        .map(|((v, sent), r)| {
            (
                v,
                sent.unwrap_or_else(&now),
                r.unwrap_or_else(|| Err("not evaluated".to_owned())),
            )
        })
        .collect()
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Answers after 2 s for rack "a", at once for the others; rack "c"
    /// fires.
    #[derive(Debug)]
    struct OneSlowRack;

    impl GateSource for OneSlowRack {
        fn query<'a>(&'a self, _: &'a str, query: &'a str, _: Duration) -> QueryFuture<'a> {
            Box::pin(async move {
                let slow = query.contains(r#"rack="a""#);
                tokio::time::sleep(Duration::from_millis(if slow { 2000 } else { 10 })).await;
                Ok(if query.contains(r#"rack="c""#) {
                    vec![query.to_owned()]
                } else {
                    Vec::new()
                })
            })
        }
    }

    #[tokio::test]
    async fn a_slow_query_holds_up_no_other_value_and_each_reading_is_timed_at_its_send() {
        let config = medic_policy::PolicyConfig::from_toml(
            r#"
[[gates]]
name = "rack-power"
prometheus = "http://prometheus:9090"
query = 'ALERTS{alertname="RackPower",rack="$value"}'
label = "rack"
interval = "5s"
"#,
        )
        .unwrap();
        let g = &config.gates[0];
        let values: Vec<Option<String>> = ('a'..='l').map(|c| Some(c.to_string())).collect();
        let start = std::time::Instant::now();
        let now = || SystemTime::UNIX_EPOCH + start.elapsed();
        let results = query_all(&OneSlowRack, g, &values, now).await;
        let got: Vec<Option<String>> = results.iter().map(|(v, _, _)| v.clone()).collect();
        assert_eq!(got, values, "every value, in order");
        assert_eq!(results[2].2.as_ref().unwrap().len(), 1, "rack c fires");
        assert!(results.iter().all(|(_, _, r)| r.is_ok()));
        // Twelve values, eight at a time: the last four were sent as soon
        // as fast queries ended, not after rack a's two seconds.
        let sent = |i: usize| results[i].1.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert!(
            sent(11) < Duration::from_secs(1),
            "rack l sent at {:?}",
            sent(11)
        );
        assert!(sent(0) <= sent(11));
    }

    #[test]
    fn form_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(
            form_encode(r#"ALERTS{rack="r 1"}&x=+"#),
            "ALERTS%7Brack%3D%22r%201%22%7D%26x%3D%2B"
        );
    }

    #[test]
    fn answer_lists_series_with_their_labels() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"ALERTS","alertname":"DbDown","rack":"r1"},"value":[1,"1"]}]}}"#;
        assert_eq!(
            parse_answer(200, body),
            Ok(vec![r#"ALERTS{alertname="DbDown",rack="r1"}"#.to_owned()])
        );
    }

    #[test]
    fn refused_query_is_an_error_naming_prometheus_reason() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"1:7: parse error"}"#;
        let e = parse_answer(400, body).unwrap_err();
        assert!(e.contains("HTTP 400, bad_data): 1:7: parse error"), "{e}");
    }

    #[test]
    fn scalar_answer_is_an_error() {
        let body = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#;
        assert!(
            parse_answer(200, body)
                .unwrap_err()
                .contains("instant vector")
        );
    }
}
