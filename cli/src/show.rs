//! Rendering of entries (records and events) as text lines or JSON values.

use ringlog::reader::Header;
use ringlog::units::format_ns;
use ringlog::{Entry, Event, Flags, Item, NameKind, NameTable, Phase, Record};
use serde_json::{Value, json};

/// Renders request-type ids, with 0 as `default`.
pub fn type_name(names: &NameTable, id: u16) -> String {
    match names.get(NameKind::RequestType, u32::from(id)) {
        Some(n) => n.to_string(),
        None if id == 0 => "default".to_string(),
        None => format!("#{id}"),
    }
}

/// Route, cluster and endpoint ids as names (what a record or an event
/// is about).
pub fn subject(names: &NameTable, route: u16, cluster: u16, endpoint: u16) -> [String; 3] {
    [
        names.display(NameKind::Route, u32::from(route)),
        names.display(NameKind::Cluster, u32::from(cluster)),
        names.display(NameKind::Endpoint, u32::from(endpoint)),
    ]
}

fn flag_list(flags: Flags) -> Vec<&'static str> {
    Flags::NAMES
        .iter()
        .filter(|(bit, _)| flags.has(*bit))
        .map(|(_, n)| *n)
        .collect()
}

/// One entry as a text line.
pub fn text(h: &Header, names: &NameTable, e: &Entry) -> String {
    let worker = names.display(NameKind::Worker, e.shard);
    match &e.item {
        Item::Record(r) => record_text(h, names, &worker, r),
        Item::Event(ev) => event_text(h, names, &worker, ev),
    }
}

fn record_text(h: &Header, names: &NameTable, worker: &str, r: &Record) -> String {
    let [route, cluster, endpoint] = subject(names, r.route, r.cluster, r.endpoint);
    let mut s = format!(
        "{} {worker} {} route={route} cluster={cluster} endpoint={endpoint} type={} total={}",
        ringlog::clock::rfc3339(h.wall_ns(r.start_ns)),
        if r.status == 0 {
            "-".to_string()
        } else {
            r.status.to_string()
        },
        type_name(names, r.req_type),
        format_ns(r.total_ns),
    );
    for p in Phase::ALL {
        if r.phase(p) > 0 {
            s.push_str(&format!(" {}={}", p.name(), format_ns(r.phase(p))));
        }
    }
    if r.reason != ringlog::Reason::None {
        s.push_str(&format!(" reason={}", r.reason.name()));
    }
    if r.peer != 0 {
        s.push_str(&format!(
            " peer={}",
            names.display(NameKind::Peer, u32::from(r.peer))
        ));
    }
    let flags = flag_list(r.flags);
    if !flags.is_empty() {
        s.push_str(&format!(" flags={}", flags.join(",")));
    }
    if r.retries > 0 {
        s.push_str(&format!(" retries={}", r.retries));
    }
    if r.arm > 0 {
        s.push_str(&format!(" arm={}", r.arm));
    }
    if r.locality > 0 {
        // Served outside the preferred locality (1: next tier, 2: further).
        s.push_str(&format!(" locality={}", r.locality));
    }
    s.push_str(&format!(
        " keep={} weight={} gen={}",
        r.keep.name(),
        trim(r.weight()),
        r.generation
    ));
    s
}

fn event_text(h: &Header, names: &NameTable, worker: &str, ev: &Event) -> String {
    let mut s = format!(
        "{} {worker} EVENT {} gen={}",
        ringlog::clock::rfc3339(h.wall_ns(ev.time_ns)),
        ev.kind.name(),
        ev.generation
    );
    for (kind, id) in [
        (NameKind::Route, ev.route),
        (NameKind::Cluster, ev.cluster),
        (NameKind::Endpoint, ev.endpoint),
    ] {
        if id != 0 {
            s.push_str(&format!(
                " {}={}",
                kind.name(),
                names.display(kind, u32::from(id))
            ));
        }
    }
    if ev.from != 0 || ev.to != 0 {
        s.push_str(&format!(" {}->{}", ev.from, ev.to));
    }
    s.push_str(&format!(" a={} b={} c={}", ev.a, ev.b, ev.c));
    s
}

fn trim(w: f64) -> String {
    if (w - w.round()).abs() < 1e-9 {
        format!("{}", w.round() as u64)
    } else {
        format!("{w:.2}")
    }
}

/// One entry as a JSON object.
pub fn json(h: &Header, names: &NameTable, e: &Entry) -> Value {
    let worker = names.display(NameKind::Worker, e.shard);
    match &e.item {
        Item::Record(r) => {
            let [route, cluster, endpoint] = subject(names, r.route, r.cluster, r.endpoint);
            let phases: serde_json::Map<String, Value> = Phase::ALL
                .iter()
                .map(|p| (p.name().to_string(), json!(r.phase(*p))))
                .collect();
            json!({
                "kind": "record",
                "time": ringlog::clock::rfc3339(h.wall_ns(r.start_ns)),
                "start_wall_ns": h.wall_ns(r.start_ns),
                "start_mono_ns": r.start_ns,
                "shard": e.shard,
                "ticket": e.ticket,
                "worker": worker,
                "route": route,
                "cluster": cluster,
                "endpoint": endpoint,
                "request_type": type_name(names, r.req_type),
                "status": r.status,
                "total_ns": r.total_ns,
                "phases_ns": phases,
                "reason": r.reason.name(),
                "flags": flag_list(r.flags),
                "retries": r.retries,
                "arm": r.arm,
                "locality": r.locality,
                "keep": r.keep.name(),
                "p": r.p(),
                "weight": r.weight(),
                "generation": r.generation,
                "peer": if r.peer == 0 {
                    Value::Null
                } else {
                    json!(names.display(NameKind::Peer, u32::from(r.peer)))
                },
            })
        }
        Item::Event(ev) => {
            let [route, cluster, endpoint] = subject(names, ev.route, ev.cluster, ev.endpoint);
            json!({
            "kind": "event",
            "event": ev.kind.name(),
            "event_code": ev.kind.code(),
            "time": ringlog::clock::rfc3339(h.wall_ns(ev.time_ns)),
            "wall_ns": h.wall_ns(ev.time_ns),
            "mono_ns": ev.time_ns,
            "shard": e.shard,
            "ticket": e.ticket,
            "worker": worker,
            "generation": ev.generation,
            "route": route,
            "cluster": cluster,
            "endpoint": endpoint,
            "from": ev.from,
            "to": ev.to,
            "a": ev.a,
            "b": ev.b,
            "c": ev.c,
            })
        }
    }
}
