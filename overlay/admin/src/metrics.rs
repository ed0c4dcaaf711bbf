//! `GET /metrics`: a node's counters and gauges in the Prometheus text format (0.0.4), built
//! from one [`Inspection`] per scrape and encoded by the `prometheus` crate.
//!
//! Names start with `petal_` and carry their unit (`_seconds`, `_bytes`, `_total` for
//! counters). Besides the curated families below, every counter of the core
//! (`petal_core::Stats`) and of the runtime (`petal_node::RuntimeCounters`) is exported under
//! its own name, `petal_core_<name>_total` and `petal_runtime_<name>_total`: the simulator's
//! reports use these names (without the prefix) for the same counts.

use petal_node::Inspection;
use petal_node::inspect::REQUEST_DURATION_BOUNDS_US;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metric families under construction.
struct Families(Vec<MetricFamily>);

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_string());
            l.set_value((*v).to_string());
            l
        })
        .collect()
}

#[expect(
    clippy::cast_precision_loss,
    reason = "Prometheus samples are f64; counters stay exact below 2^53"
)]
fn f(v: u64) -> f64 {
    v as f64
}

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_string());
        mf.set_help(help.to_string());
        mf.set_field_type(kind);
        self.0.push(mf);
        let last = self.0.len() - 1;
        &mut self.0[last]
    }

    /// A counter family with one sample per label set.
    fn counters(&mut self, name: &str, help: &str, samples: &[(&[(&str, &str)], u64)]) {
        let mf = self.family(name, help, MetricType::COUNTER);
        for (l, v) in samples {
            let mut c = Counter::default();
            c.set_value(f(*v));
            let mut m = Metric::from_label(labels(l));
            m.set_counter(c);
            mf.mut_metric().push(m);
        }
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.counters(name, help, &[(&[], v)]);
    }

    /// A gauge family with one sample per label set.
    fn gauges(&mut self, name: &str, help: &str, samples: &[(&[(&str, &str)], f64)]) {
        let mf = self.family(name, help, MetricType::GAUGE);
        for (l, v) in samples {
            let mut g = Gauge::default();
            g.set_value(*v);
            let mut m = Metric::from_label(labels(l));
            m.set_gauge(g);
            mf.mut_metric().push(m);
        }
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.gauges(name, help, &[(&[], v)]);
    }
}

/// The text exposition of `i`, for a daemon of version `version`.
pub fn render(i: &Inspection, version: &str) -> String {
    let mut fams = Families(Vec::new());
    let core = &i.stats.core;
    let rt = &i.stats.runtime;
    let id = i.id.to_string();
    fams.gauges(
        "petal_info",
        "Constant 1, labelled with the node's id and the daemon's version.",
        &[(&[("id", &id), ("version", version)], 1.0)],
    );
    fams.gauge(
        "petal_uptime_seconds",
        "Seconds since the node started.",
        i.uptime.as_secs_f64(),
    );
    fams.gauge(
        "petal_ready",
        "1 once the node is part of a ring (joined, or serving alone), else 0.",
        if i.stats.ready { 1.0 } else { 0.0 },
    );
    fams.gauge("petal_links", "Peer links up.", f(i.stats.links as u64));
    fams.gauge(
        "petal_leafset_size",
        "Distinct leaf-set members.",
        f(i.stats.leaf_set as u64),
    );
    fams.gauge(
        "petal_routing_table_entries",
        "Routing-table entries.",
        f(i.routes.len() as u64),
    );
    fams.gauge(
        "petal_sessions",
        "Attached applications.",
        f(i.stats.sessions as u64),
    );
    fams.gauge(
        "petal_tunnels",
        "Tunnel ends on this node.",
        f(i.tunnels.len() as u64),
    );
    fams.gauges(
        "petal_queue_depth",
        "Inputs waiting for the node task, by source.",
        &[
            (&[("queue", "node")], f(i.queues.node_inputs as u64)),
            (&[("queue", "applications")], f(i.queues.app_inputs as u64)),
        ],
    );
    fams.gauges(
        "petal_queued_bytes",
        "Bytes queued for writers, by kind of connection.",
        &[
            (&[("queue", "links")], f(i.queues.link_bytes)),
            (&[("queue", "sessions")], f(i.queues.session_bytes)),
        ],
    );
    fams.gauge(
        "petal_memory_used_bytes",
        "Bytes held against the node's memory budget.",
        f(i.stats.memory_used),
    );
    fams.gauge(
        "petal_memory_budget_bytes",
        "The node's memory budget.",
        f(i.stats.memory_budget),
    );
    fams.counters(
        "petal_requests_total",
        "Requests of this node's applications, by outcome.",
        &[
            (&[("outcome", "reply")], core.requests_answered),
            (&[("outcome", "fault")], core.requests_faulted),
            (&[("outcome", "timeout")], core.requests_timed_out),
            (&[("outcome", "abandoned")], core.requests_abandoned),
        ],
    );
    request_durations(&mut fams, i);
    fams.counters(
        "petal_events_delivered_total",
        "Deliveries queued for local applications, by kind.",
        &[
            (&[("kind", "publish")], rt.delivered_publishes),
            (&[("kind", "broadcast")], rt.delivered_broadcasts),
            (&[("kind", "request")], rt.delivered_requests),
        ],
    );
    fams.counter(
        "petal_events_published_total",
        "Publishes and broadcasts sent by local applications.",
        core.events_published,
    );
    // Each drop is counted under one reason only (the memory budget's and the dial cap's
    // refusals are also counted, as causes, in petal_memory_refused_total and
    // petal_dials_refused_total: a sum over reasons here counts every drop once).
    fams.counters(
        "petal_drops_total",
        "Messages, events and requests dropped, by where (each drop once).",
        &[
            (&[("reason", "slow_client")], rt.relay_dropped),
            (&[("reason", "link")], rt.link_drops),
            (&[("reason", "outbox_full")], core.outbox_drops),
            (&[("reason", "event_queue_full")], core.event_drops),
            (&[("reason", "route")], core.routes_dropped),
            (&[("reason", "group_table_full")], core.group_drops),
            (&[("reason", "request_table_full")], core.request_drops),
            (&[("reason", "tunnel_table_full")], core.tunnel_drops),
            (&[("reason", "event_lost")], core.events_lost),
        ],
    );
    fams.counters(
        "petal_memory_refused_total",
        "Charges the memory budget refused, by where (each also counted where its drop is).",
        &[
            (&[("where", "core")], core.memory_refused),
            (&[("where", "links")], rt.memory_refused_links),
            (&[("where", "sessions")], rt.memory_refused_sessions),
        ],
    );
    fams.counter(
        "petal_dials_refused_total",
        "Dials not started because the dial cap was reached (their messages count as link drops).",
        rt.dials_refused,
    );
    fams.counter(
        "petal_dial_failures_total",
        "Peer dials that failed to connect or to finish their handshake.",
        rt.link_dial_failures,
    );
    fams.counters(
        "petal_handshake_failures_total",
        "Handshakes that failed or were refused, by reason.",
        &[
            (&[("reason", "relay")], rt.handshakes_failed),
            (&[("reason", "link")], rt.link_handshakes_failed),
            (&[("reason", "link_refused")], rt.link_handshakes_refused),
            (&[("reason", "record_auth")], rt.link_auth_failures),
            (&[("reason", "id_mismatch")], rt.link_id_mismatches),
        ],
    );
    fams.counters(
        "petal_tunnel_bytes_total",
        "Tunnel payload bytes, by direction.",
        &[
            (&[("direction", "sent")], core.tunnel_bytes_sent),
            (&[("direction", "received")], core.tunnel_bytes_received),
        ],
    );
    let link_sum =
        |f: fn(&petal_node::inspect::LinkInfo) -> u64| -> u64 { i.links.iter().map(f).sum() };
    fams.gauges(
        "petal_link_bytes",
        "Bytes carried by the peer links up now, by direction (a link's count ends with it).",
        &[
            (&[("direction", "in")], f(link_sum(|l| l.bytes_in))),
            (&[("direction", "out")], f(link_sum(|l| l.bytes_out))),
        ],
    );
    for (name, v) in core.fields() {
        fams.counter(
            &format!("petal_core_{name}_total"),
            &format!("The core's counter {name} (petal_core::Stats)."),
            v,
        );
    }
    for (name, v) in rt.fields() {
        fams.counter(
            &format!("petal_runtime_{name}_total"),
            &format!("The runtime's counter {name} (petal_node::RuntimeCounters)."),
            v,
        );
    }
    let mut out = Vec::new();
    // Encoding fails only for a family without samples or name: none is built here.
    if let Err(e) = TextEncoder::new().encode(&fams.0, &mut out) {
        tracing::error!(error = %e, "encoding metrics");
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn request_durations(fams: &mut Families, i: &Inspection) {
    let h = &i.request_durations;
    let mut hist = Histogram::default();
    let mut cumulative = 0;
    let mut buckets = Vec::new();
    for (bound, count) in REQUEST_DURATION_BOUNDS_US.iter().zip(h.counts) {
        cumulative += count;
        let mut b = Bucket::default();
        b.set_upper_bound(f(*bound) / 1e6);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    hist.set_bucket(buckets);
    hist.set_sample_count(h.count());
    hist.set_sample_sum(f(h.sum_us) / 1e6);
    let mut m = Metric::default();
    m.set_histogram(hist);
    fams.family(
        "petal_request_duration_seconds",
        "Requests of this node's applications, from REQUEST to the REPLY the node sent.",
        MetricType::HISTOGRAM,
    )
    .mut_metric()
    .push(m);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use petal_core::NodeId;
    use petal_node::StatsSnapshot;
    use petal_node::inspect::{DiscoveryStatus, DurationHistogram, QueueDepths};

    use super::*;

    fn inspection(h: DurationHistogram) -> Inspection {
        Inspection {
            id: NodeId::from_bytes([7; 16]),
            peer_addr: "127.0.0.1:1".parse().unwrap(),
            relay_addrs: Vec::new(),
            uptime: Duration::from_secs(3),
            encrypted: true,
            identity_registry: "overlay".into(),
            store: (0, 0),
            discovery: DiscoveryStatus::Off,
            joining: false,
            stats: StatsSnapshot {
                id: NodeId::from_bytes([7; 16]),
                ready: true,
                leaf_set: 0,
                links: 0,
                sessions: 0,
                memory_used: 0,
                memory_budget: 1 << 30,
                core: petal_core::Stats::default(),
                runtime: petal_node::RuntimeCounters::default(),
            },
            links: Vec::new(),
            leaf_left: Vec::new(),
            leaf_right: Vec::new(),
            routes: Vec::new(),
            groups: Vec::new(),
            tunnels: Vec::new(),
            sessions: Vec::new(),
            request_durations: h,
            queues: QueueDepths::default(),
        }
    }

    /// Durations land in the bucket whose bound is the first at or above them; the
    /// exposition's buckets are cumulative, `+Inf` holds every sample, the sum is in seconds.
    #[test]
    fn request_durations_are_a_cumulative_histogram_in_seconds() {
        let mut h = DurationHistogram::default();
        for us in [50, 51, 100, 2_000, 2_000_000, 40_000_000] {
            h.observe(Duration::from_micros(us));
        }
        assert_eq!(h.counts[0], 1); // 50 us: le 50 us
        assert_eq!(h.counts[1], 2); // 51 and 100 us: le 100 us
        assert_eq!(h.counts[REQUEST_DURATION_BOUNDS_US.len()], 1); // 40 s: above 30 s
        let text = render(&inspection(h), "t");
        for line in [
            "petal_request_duration_seconds_bucket{le=\"0.00005\"} 1",
            "petal_request_duration_seconds_bucket{le=\"0.0001\"} 3",
            "petal_request_duration_seconds_bucket{le=\"0.0025\"} 4",
            "petal_request_duration_seconds_bucket{le=\"5\"} 5",
            "petal_request_duration_seconds_bucket{le=\"30\"} 5",
            "petal_request_duration_seconds_bucket{le=\"+Inf\"} 6",
            "petal_request_duration_seconds_count 6",
            "petal_request_duration_seconds_sum 42.002201",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
