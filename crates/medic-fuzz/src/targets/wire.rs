//! The wire conversions: every request the services accept and every
//! response or record the agent and `medicctl` read, decoded with prost and
//! converted with medic-proto's `TryFrom`.
//!
//! An input's first byte picks the message, the second how its bytes are
//! made: as they are (prost decodes them), or encoded from the message's
//! schema (read from medic-proto's file descriptor set), with values from
//! the edges medic checks: timestamps at and past years 1 and 9999,
//! durations past 10,000 years, negative nanos, unknown enum values, ids and
//! reasons one byte past their limits, invisible characters.
//!
//! Checked besides "never panics": a refused request names its field under
//! `request.`; and what converts from the wire converts back and again to
//! the same value (a reply the coordinator sends is one its clients read).

use std::collections::HashMap;
use std::fmt::Debug;
use std::fmt::Write as _;
use std::sync::OnceLock;

use medic_policy::InvalidInput;
use medic_proto::pb::v1 as pb;
use medic_proto::request as rq;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};

use super::{gist, place};
use crate::choices::Gen;
use crate::driver::{Features, Target};
use crate::toml_gen;

/// The wire target.
pub const WIRE: Target = Target {
    name: "wire",
    run,
    describe,
    seeds,
    dictionary: &[
        "\u{8}\u{1}",
        "\u{a}\u{5}web-1",
        "\u{12}\u{e}p-000000000001",
        "\u{a}\u{0}",
        "\u{10}\u{ff}\u{1}",
    ],
    max_len: 2048,
};

/// The messages, by full name. Requests without a medic-policy type of
/// their own (medic-proto's `request` module) are checked to name a refused
/// field under `request.`; those with a domain-to-wire conversion (the
/// agent's requests, every response and record) also round trip.
const MESSAGES: &[&str] = &[
    "medic.v1.HeartbeatRequest",
    "medic.v1.RequestPermitRequest",
    "medic.v1.RenewPermitRequest",
    "medic.v1.ReportOutcomeRequest",
    "medic.v1.PauseRequest",
    "medic.v1.ResumeRequest",
    "medic.v1.RevokePermitRequest",
    "medic.v1.QuarantineRequest",
    "medic.v1.UnquarantineRequest",
    "medic.v1.ResetBreakerRequest",
    "medic.v1.ReloadConfigRequest",
    "medic.v1.ListHostsRequest",
    "medic.v1.ListPermitsRequest",
    "medic.v1.GetHistoryRequest",
    "medic.v1.ExplainRequest",
    "medic.v1.WatchEventsRequest",
    "medic.v1.HeartbeatResponse",
    "medic.v1.RequestPermitResponse",
    "medic.v1.Permit",
    "medic.v1.Event",
    "medic.v1.Status",
    "medic.v1.Host",
    "medic.v1.ExplainResponse",
    "medic.v1.Pause",
    "medic.v1.Quarantine",
    "medic.v1.BreakerTrip",
    "medic.v1.Scope",
    "medic.v1.Problem",
    "medic.v1.Denial",
];

/// The bytes of the message an input stands for, and its index.
fn message_of(data: &[u8]) -> (usize, Vec<u8>) {
    let mut g = Gen::new(data);
    let which = g.below(MESSAGES.len());
    let raw = g.chance(48);
    if raw {
        return (which, g.rest().to_vec());
    }
    let name = format!(".{}", MESSAGES[which]);
    let mut bytes = encode_message(&mut g, &name, 0);
    if g.chance(16) && !bytes.is_empty() {
        let i = g.below(bytes.len());
        bytes[i] ^= g.byte();
    }
    (which, bytes)
}

fn run(data: &[u8], features: &mut Features) {
    let (which, bytes) = message_of(data);
    let name = MESSAGES[which];
    let short = name.trim_start_matches("medic.v1.");
    macro_rules! request {
        ($wire:ty, $domain:ty) => {
            convert::<$wire, $domain>(short, &bytes, true, features).map(|_| ())
        };
    }
    macro_rules! round_trip {
        ($wire:ty, $domain:ty, $request:expr) => {
            if let Some(d) = convert::<$wire, $domain>(short, &bytes, $request, features) {
                again::<$wire, $domain>(short, d);
            }
        };
    }
    match short {
        "HeartbeatRequest" => {
            round_trip!(pb::HeartbeatRequest, medic_policy::Heartbeat, false);
        }
        "RequestPermitRequest" => {
            round_trip!(pb::RequestPermitRequest, medic_policy::PermitRequest, false);
        }
        "RenewPermitRequest" => round_trip!(pb::RenewPermitRequest, rq::Renewal, true),
        "ReportOutcomeRequest" => round_trip!(pb::ReportOutcomeRequest, rq::OutcomeReport, true),
        "PauseRequest" => {
            let _ = request!(pb::PauseRequest, rq::PauseCommand);
        }
        "ResumeRequest" => {
            let _ = request!(pb::ResumeRequest, rq::ResumeCommand);
        }
        "RevokePermitRequest" => {
            let _ = request!(pb::RevokePermitRequest, rq::RevokeCommand);
        }
        "QuarantineRequest" => {
            let _ = request!(pb::QuarantineRequest, rq::QuarantineCommand);
        }
        "UnquarantineRequest" => {
            let _ = request!(pb::UnquarantineRequest, rq::ReleaseCommand);
        }
        "ResetBreakerRequest" => {
            let _ = request!(pb::ResetBreakerRequest, rq::ResetBreakerCommand);
        }
        "ReloadConfigRequest" => {
            let _ = request!(pb::ReloadConfigRequest, rq::ReloadCommand);
        }
        "ListHostsRequest" => {
            let _ = request!(pb::ListHostsRequest, rq::HostQuery);
        }
        "ListPermitsRequest" => {
            let _ = request!(pb::ListPermitsRequest, rq::PermitQuery);
        }
        "GetHistoryRequest" => {
            let _ = request!(pb::GetHistoryRequest, rq::HistoryQuery);
        }
        "ExplainRequest" => {
            let _ = request!(pb::ExplainRequest, rq::ExplainQuery);
        }
        "WatchEventsRequest" => {
            if let Some(filter) =
                convert::<pb::WatchEventsRequest, rq::WatchFilter>(short, &bytes, true, features)
            {
                for e in sample_events() {
                    features.add_parts(&[short, "matches", &filter.matches(e).to_string()]);
                }
            }
        }
        "HeartbeatResponse" => {
            round_trip!(pb::HeartbeatResponse, medic_policy::HeartbeatReply, false);
        }
        "RequestPermitResponse" => {
            round_trip!(pb::RequestPermitResponse, medic_policy::Decision, false);
        }
        "Permit" => round_trip!(pb::Permit, medic_policy::Permit, false),
        "Event" => {
            if let Some(e) =
                convert::<pb::Event, medic_policy::Event>(short, &bytes, false, features)
            {
                let wire = pb::Event::from_policy(7, e.clone());
                let back = medic_policy::Event::try_from(wire.clone()).unwrap_or_else(|err| {
                    panic!("Event: converted from the wire, encoded by from_policy, refused: {err}\n{wire:?}")
                });
                assert_eq!(back, e, "Event: changed by a trip through the wire");
            }
        }
        "Status" => round_trip!(pb::Status, medic_policy::Status, false),
        "Host" => round_trip!(pb::Host, medic_policy::HostView, false),
        "ExplainResponse" => round_trip!(pb::ExplainResponse, medic_policy::Explanation, false),
        "Pause" => round_trip!(pb::Pause, medic_policy::Pause, false),
        "Quarantine" => round_trip!(pb::Quarantine, medic_policy::Quarantine, false),
        "BreakerTrip" => round_trip!(pb::BreakerTrip, medic_policy::BreakerTrip, false),
        "Scope" => round_trip!(pb::Scope, medic_policy::Scope, false),
        "Problem" => round_trip!(pb::Problem, medic_policy::Problem, false),
        "Denial" => round_trip!(pb::Denial, medic_policy::Denial, false),
        other => unreachable!("no conversion listed for {other}"),
    }
}

/// Decodes `W` and converts it to `D`; the features are where it stopped.
fn convert<W, D>(name: &str, bytes: &[u8], request: bool, features: &mut Features) -> Option<D>
where
    W: Message + Default,
    D: TryFrom<W, Error = InvalidInput>,
{
    let Ok(wire) = W::decode(bytes) else {
        features.add_parts(&[name, "undecodable"]);
        return None;
    };
    match D::try_from(wire) {
        Ok(d) => {
            features.add_parts(&[name, "ok"]);
            Some(d)
        }
        Err(e) => {
            if request {
                assert!(
                    e.field.starts_with("request."),
                    "{name}: refused naming {:?}, not a field under request. ({e})",
                    e.field
                );
            }
            assert!(!e.message.is_empty(), "{name}: refused with no message");
            features.add_parts(&[name, &place(&e.field), &gist(&e.message)]);
            None
        }
    }
}

/// A value that converted from the wire goes back to the wire and converts
/// to the same value.
fn again<W, D>(name: &str, d: D)
where
    W: Message + Default + From<D>,
    D: TryFrom<W, Error = InvalidInput> + Clone + PartialEq + Debug,
{
    let wire = W::from(d.clone());
    // Through bytes too, as it travels.
    let wire = W::decode(wire.encode_to_vec().as_slice())
        .unwrap_or_else(|e| panic!("{name}: an encoded message does not decode: {e}"));
    match D::try_from(wire) {
        Ok(back) => assert_eq!(back, d, "{name}: changed by a trip through the wire"),
        Err(e) => panic!(
            "{name}: a value read from the wire is refused once written back: {e}\nvalue: {d:?}"
        ),
    }
}

/// A few history entries to match watch filters against.
fn sample_events() -> &'static [pb::Event] {
    static E: OnceLock<Vec<pb::Event>> = OnceLock::new();
    E.get_or_init(|| {
        let t = super::engine::t0();
        let host = medic_policy::HostId::new("web-1").unwrap_or_else(|e| unreachable!("{e}"));
        vec![
            pb::Event::from_policy(
                1,
                medic_policy::Event::HostQuarantined(medic_policy::Quarantine {
                    host: host.clone(),
                    cause: medic_policy::QuarantineCause::Manual,
                    actor: "admin".to_owned(),
                    reason: "x".to_owned(),
                    since: t,
                }),
            ),
            pb::Event::from_policy(
                2,
                medic_policy::Event::Paused(medic_policy::Pause {
                    id: 1,
                    scope: medic_policy::Scope::fleet(),
                    actor: "admin".to_owned(),
                    reason: "x".to_owned(),
                    since: t,
                    until: None,
                }),
            ),
            pb::Event::from_policy(
                3,
                medic_policy::Event::HostReleased {
                    host,
                    actor: "admin".to_owned(),
                    reason: "x".to_owned(),
                    at: t,
                },
            ),
        ]
    })
}

// === Encoding from the schema ===

/// Every message of medic-proto's descriptor set, by full name
/// (`.medic.v1.Event.PermitGranted`).
fn schema() -> &'static HashMap<String, DescriptorProto> {
    static S: OnceLock<HashMap<String, DescriptorProto>> = OnceLock::new();
    S.get_or_init(|| {
        let set = FileDescriptorSet::decode(medic_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("medic-proto's descriptor set does not decode: {e}"));
        let mut out = HashMap::new();
        fn add(out: &mut HashMap<String, DescriptorProto>, prefix: &str, m: &DescriptorProto) {
            let name = format!("{prefix}.{}", m.name());
            for n in &m.nested_type {
                add(out, &name, n);
            }
            out.insert(name, m.clone());
        }
        for file in &set.file {
            let prefix = if file.package().is_empty() {
                String::new()
            } else {
                format!(".{}", file.package())
            };
            for m in &file.message_type {
                add(&mut out, &prefix, m);
            }
        }
        out
    })
}

const TIMESTAMP_SECONDS: &[i64] = &[
    0,
    1,
    -1,
    1_700_000_000,
    253_402_300_799,
    253_402_300_800,
    -62_135_596_800,
    -62_135_596_801,
    i64::MAX,
    i64::MIN,
    315_576_000_000,
    315_576_000_001,
];
const NANOS: &[i32] = &[0, 1, 999_999_999, 1_000_000_000, -1, i32::MAX, i32::MIN];
const VARINTS: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    13,
    14,
    100,
    1000,
    1001,
    u32::MAX as u64,
    u64::MAX,
    i64::MAX as u64,
    1 << 63,
    // -1 as an int32 or int64 on the wire.
    u64::MAX - 1,
];
const PERMIT_IDS: &[&str] = &["p-000000000001", "p-000000000002", "p-1", "", "p 1"];
const REQUEST_IDS: &[&str] = &["req-1", "req-2", "", "r\u{0}"];
const TEXTS: &[&str] = &["x", "", "gave up", "line\nbreak", "\u{202e}", "ü"];

fn string_for(g: &mut Gen, field: &str) -> String {
    let pool: &[&str] = match field {
        "host_id" | "host" | "holder" => toml_gen::HOSTS,
        "permit_id" | "id" => PERMIT_IDS,
        "request_id" => REQUEST_IDS,
        "key" | "label" => &["rack", "zone", "", "a b", "\u{200b}"],
        "value" => &["r1", "z1", "", "a b", "\u{202e}"],
        "job" => &["ingest", "", "a b"],
        _ => TEXTS,
    };
    toml_gen::string(g, pool)
}

fn len_delimited(num: u32, body: &[u8], out: &mut Vec<u8>) {
    encode_key(num, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

fn varint(num: u32, value: u64, out: &mut Vec<u8>) {
    encode_key(num, WireType::Varint, out);
    encode_varint(value, out);
}

fn encode_message(g: &mut Gen, name: &str, depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if name == ".google.protobuf.Timestamp" || name == ".google.protobuf.Duration" {
        if g.chance(220) {
            let s = if g.chance(200) {
                *g.pick(TIMESTAMP_SECONDS)
            } else {
                i64::from_le_bytes(g.u64().to_le_bytes())
            };
            varint(1, u64::from_le_bytes(s.to_le_bytes()), &mut out);
        }
        if g.chance(128) {
            let n = *g.pick(NANOS);
            varint(2, u64::from_le_bytes(i64::from(n).to_le_bytes()), &mut out);
        }
        return out;
    }
    let Some(desc) = schema().get(name) else {
        return g.bytes(16);
    };
    let density = g.byte();
    for field in &desc.field {
        if !g.chance(density) {
            continue;
        }
        let n = if field.label() == Label::Repeated {
            1 + g.below(3)
        } else {
            1
        };
        for _ in 0..n {
            encode_field(g, field, depth, &mut out);
        }
    }
    if g.chance(6) {
        // A field this version does not know.
        varint(1000 + g.below(1000) as u32, g.u64(), &mut out);
    }
    out
}

fn encode_field(g: &mut Gen, field: &FieldDescriptorProto, depth: usize, out: &mut Vec<u8>) {
    let num = u32::try_from(field.number()).unwrap_or(1);
    match field.r#type() {
        Type::Message | Type::Group => {
            let body = if depth > 6 {
                Vec::new()
            } else {
                encode_message(g, field.type_name(), depth + 1)
            };
            len_delimited(num, &body, out);
        }
        Type::String => len_delimited(num, string_for(g, field.name()).as_bytes(), out),
        Type::Bytes => len_delimited(num, &g.bytes(32), out),
        Type::Bool => varint(num, g.below(3) as u64, out),
        Type::Enum => {
            let v: i64 = match g.below(4) {
                0..=1 => g.below(8) as i64,
                2 => g.below(20) as i64,
                _ => *g.pick(&[-1, i64::from(i32::MAX), i64::from(i32::MIN), 1 << 40]),
            };
            varint(num, u64::from_le_bytes(v.to_le_bytes()), out);
        }
        Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 => {
            let v = if g.chance(200) {
                *g.pick(VARINTS)
            } else {
                g.u64()
            };
            varint(num, v, out);
        }
        Type::Sint32 | Type::Sint64 => varint(num, g.u64(), out),
        Type::Fixed32 | Type::Sfixed32 | Type::Float => {
            encode_key(num, WireType::ThirtyTwoBit, out);
            out.extend_from_slice(&g.u32().to_le_bytes());
        }
        Type::Fixed64 | Type::Sfixed64 | Type::Double => {
            encode_key(num, WireType::SixtyFourBit, out);
            out.extend_from_slice(&g.u64().to_le_bytes());
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    // Every message, encoded from the schema with all fields likely.
    (0..MESSAGES.len())
        .flat_map(|i| {
            let i = u8::try_from(i).unwrap_or(0);
            [vec![i, 255, 255], vec![i, 255, 200, 7, 9, 200, 1]]
        })
        .collect()
}

fn describe(data: &[u8]) -> String {
    let (which, bytes) = message_of(data);
    let name = MESSAGES[which];
    let mut out = format!(
        "{name}, {} bytes: b\"{}\"\n",
        bytes.len(),
        bytes.escape_ascii()
    );
    macro_rules! show {
        ($($s:literal => $t:ty),+ $(,)?) => {
            match name.trim_start_matches("medic.v1.") {
                $($s => match <$t>::decode(bytes.as_slice()) {
                    Ok(m) => { let _ = writeln!(out, "decoded: {m:#?}"); }
                    Err(e) => { let _ = writeln!(out, "does not decode: {e}"); }
                },)+
                _ => {}
            }
        };
    }
    show!(
        "HeartbeatRequest" => pb::HeartbeatRequest,
        "RequestPermitRequest" => pb::RequestPermitRequest,
        "RenewPermitRequest" => pb::RenewPermitRequest,
        "ReportOutcomeRequest" => pb::ReportOutcomeRequest,
        "PauseRequest" => pb::PauseRequest,
        "ResumeRequest" => pb::ResumeRequest,
        "RevokePermitRequest" => pb::RevokePermitRequest,
        "QuarantineRequest" => pb::QuarantineRequest,
        "UnquarantineRequest" => pb::UnquarantineRequest,
        "ResetBreakerRequest" => pb::ResetBreakerRequest,
        "ReloadConfigRequest" => pb::ReloadConfigRequest,
        "ListHostsRequest" => pb::ListHostsRequest,
        "ListPermitsRequest" => pb::ListPermitsRequest,
        "GetHistoryRequest" => pb::GetHistoryRequest,
        "ExplainRequest" => pb::ExplainRequest,
        "WatchEventsRequest" => pb::WatchEventsRequest,
        "HeartbeatResponse" => pb::HeartbeatResponse,
        "RequestPermitResponse" => pb::RequestPermitResponse,
        "Permit" => pb::Permit,
        "Event" => pb::Event,
        "Status" => pb::Status,
        "Host" => pb::Host,
        "ExplainResponse" => pb::ExplainResponse,
        "Pause" => pb::Pause,
        "Quarantine" => pb::Quarantine,
        "BreakerTrip" => pb::BreakerTrip,
        "Scope" => pb::Scope,
        "Problem" => pb::Problem,
        "Denial" => pb::Denial,
    );
    out
}
