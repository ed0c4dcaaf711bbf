//! Benchmark results: a readable table, or one JSON object.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::Ctx;

/// A latency distribution, in microseconds.
#[derive(Clone, Debug)]
pub(crate) struct Latency {
    /// Samples.
    pub(crate) count: u64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p99_9_us: f64,
    pub(crate) max_us: f64,
    pub(crate) mean_us: f64,
}

impl Latency {
    /// Summarises a histogram of nanoseconds.
    pub(crate) fn from_histogram(hist: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1e3;
        let empty = hist.is_empty();
        let q = |quantile: f64| {
            if empty {
                0.0
            } else {
                us(hist.value_at_quantile(quantile))
            }
        };
        Latency {
            count: hist.len(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            max_us: if empty { 0.0 } else { us(hist.max()) },
            mean_us: if empty { 0.0 } else { hist.mean() / 1e3 },
        }
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_us": round1(self.p50_us),
            "p90_us": round1(self.p90_us),
            "p99_us": round1(self.p99_us),
            "p99_9_us": round1(self.p99_9_us),
            "max_us": round1(self.max_us),
            "mean_us": round1(self.mean_us),
        })
    }
}

/// One level of the request concurrency sweep.
#[derive(Clone, Debug)]
pub(crate) struct SweepPoint {
    /// Requests in flight at once.
    pub(crate) concurrency: usize,
    /// Successful requests.
    pub(crate) completed: u64,
    pub(crate) timeouts: u64,
    pub(crate) faults: u64,
    pub(crate) requests_per_s: f64,
    /// Round-trip times of the successful requests.
    pub(crate) latency: Latency,
}

impl SweepPoint {
    fn json(&self) -> Value {
        json!({
            "concurrency": self.concurrency,
            "completed": self.completed,
            "timeouts": self.timeouts,
            "faults": self.faults,
            "requests_per_s": round1(self.requests_per_s),
            "latency": self.latency.json(),
        })
    }
}

/// The request benchmark's results.
pub(crate) struct RequestResult {
    /// Payload bytes.
    pub(crate) size: usize,
    /// The concurrency-1 phase.
    pub(crate) latency: SweepPoint,
    /// The throughput sweep.
    pub(crate) sweep: Vec<SweepPoint>,
}

impl RequestResult {
    fn best(&self) -> &SweepPoint {
        self.sweep
            .iter()
            .max_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s))
            .unwrap_or(&self.latency)
    }

    fn json(&self) -> Value {
        let best = self.best();
        json!({
            "size_bytes": self.size,
            "latency": self.latency.latency.json(),
            "latency_requests_per_s": round1(self.latency.requests_per_s),
            "throughput_requests_per_s": round1(best.requests_per_s),
            "throughput_concurrency": best.concurrency,
            "sweep": self.sweep.iter().map(SweepPoint::json).collect::<Vec<_>>(),
        })
    }

    /// Appends the section `title`: latency at concurrency 1, the sweep (rates in `unit`).
    fn table(&self, s: &mut String, title: &str, unit: &str, levels: &[usize]) {
        let l = &self.latency.latency;
        let _ = writeln!(s, "\n{title}");
        let _ = writeln!(
            s,
            "  latency (concurrency 1)  p50 {:.1} µs  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  ({:.0} {unit})",
            l.p50_us, l.p90_us, l.p99_us, l.p99_9_us, l.max_us, self.latency.requests_per_s
        );
        let _ = writeln!(
            s,
            "  {:>11}  {:>12}  {:>10}  {:>10}  {:>8}  {:>6}",
            "concurrency", unit, "p50 µs", "p99 µs", "timeouts", "faults"
        );
        for p in &self.sweep {
            let _ = writeln!(
                s,
                "  {:>11}  {:>12.0}  {:>10.1}  {:>10.1}  {:>8}  {:>6}",
                p.concurrency,
                p.requests_per_s,
                p.latency.p50_us,
                p.latency.p99_us,
                p.timeouts,
                p.faults
            );
        }
        let best = self.best();
        let _ = writeln!(
            s,
            "  throughput               {:.0} {unit} (concurrency {}; sweep {levels:?})",
            best.requests_per_s, best.concurrency
        );
    }
}

/// The store benchmark's results: puts and gets, each measured like requests.
pub(crate) struct KvBenchResult {
    /// Value bytes.
    pub(crate) size: usize,
    pub(crate) put: RequestResult,
    pub(crate) get: RequestResult,
}

/// The broadcast or publish benchmark's results.
pub(crate) struct FanoutResult {
    /// "broadcast" or "publish".
    pub(crate) kind: &'static str,
    /// Payload bytes.
    pub(crate) size: usize,
    /// Most messages in flight (sent, not yet delivered); 0: no limit.
    pub(crate) window: u64,
    /// Send-to-delivery times of single messages.
    pub(crate) latency: Latency,
    /// Single messages not delivered within a second.
    pub(crate) probes_lost: u64,
    /// Messages sent in the throughput phase.
    pub(crate) sent: u64,
    pub(crate) sent_per_s: f64,
    /// Messages delivered of those.
    pub(crate) delivered: u64,
    /// Deliveries per second, first send to last delivery.
    pub(crate) delivered_per_s: f64,
    /// Sent but never delivered.
    pub(crate) lost: u64,
    /// Of the lost, dropped by the receiver's client library (its queue was full).
    pub(crate) receiver_dropped: u64,
}

impl FanoutResult {
    fn json(&self) -> Value {
        json!({
            "size_bytes": self.size,
            "window": self.window,
            "latency": self.latency.json(),
            "latency_probes_lost": self.probes_lost,
            "sent": self.sent,
            "sent_per_s": round1(self.sent_per_s),
            "delivered": self.delivered,
            "delivered_per_s": round1(self.delivered_per_s),
            "lost": self.lost,
            "receiver_dropped": self.receiver_dropped,
        })
    }
}

/// The tunnel benchmark's results.
pub(crate) struct TunnelResult {
    /// Bytes per message.
    pub(crate) message_size: usize,
    /// Bytes received during the phase.
    pub(crate) bytes: u64,
    /// Length of the phase.
    pub(crate) seconds: f64,
    /// 10^6 bytes per second.
    pub(crate) mb_per_s: f64,
    pub(crate) messages_per_s: f64,
}

/// Everything one `petal bench` run measured.
pub(crate) struct Report {
    /// Every end attached to a node in this process (`--embedded`).
    embedded: bool,
    port: u16,
    port2: u16,
    duration_s: f64,
    concurrency: Vec<usize>,
    pub(crate) request: Option<RequestResult>,
    pub(crate) broadcast: Option<FanoutResult>,
    pub(crate) publish: Option<FanoutResult>,
    pub(crate) tunnel: Option<TunnelResult>,
    pub(crate) kv: Option<KvBenchResult>,
}

impl Report {
    /// An empty report of a run with these settings.
    pub(crate) fn new(ctx: &Ctx, duration_s: f64) -> Self {
        Report {
            embedded: ctx.local.is_some(),
            port: ctx.port,
            port2: ctx.port2,
            duration_s,
            concurrency: ctx.concurrency.clone(),
            request: None,
            broadcast: None,
            publish: None,
            tunnel: None,
            kv: None,
        }
    }

    fn nodes(&self) -> u8 {
        if self.port == self.port2 { 1 } else { 2 }
    }

    /// The results as one JSON object.
    pub(crate) fn json(&self) -> Value {
        let mut out = json!({
            "nodes": self.nodes(),
            "embedded": self.embedded,
            "port": self.port,
            "port2": self.port2,
            "duration_s": self.duration_s,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        });
        if let Some(r) = &self.request {
            out["request"] = r.json();
        }
        if let Some(k) = &self.kv {
            out["kv"] = json!({ "size_bytes": k.size, "put": k.put.json(), "get": k.get.json() });
        }
        if let Some(b) = &self.broadcast {
            out["broadcast"] = b.json();
        }
        if let Some(p) = &self.publish {
            out["publish"] = p.json();
        }
        if let Some(t) = &self.tunnel {
            out["tunnel"] = json!({
                "message_size_bytes": t.message_size,
                "bytes": t.bytes,
                "seconds": (t.seconds * 1000.0).round() / 1000.0,
                "mb_per_s": round1(t.mb_per_s),
                "messages_per_s": round1(t.messages_per_s),
            });
        }
        out
    }

    /// The results as a table.
    pub(crate) fn table(&self) -> String {
        let mut s = String::new();
        let nodes = match self.nodes() {
            _ if self.embedded => "one node in this process (--embedded)".to_owned(),
            1 => format!("one node (port {})", self.port),
            _ => format!(
                "two nodes (sender on port {}, receivers on port {})",
                self.port, self.port2
            ),
        };
        let _ = writeln!(
            s,
            "petal bench: {nodes}, {} s per phase, {} CPUs",
            self.duration_s,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        if let Some(r) = &self.request {
            r.table(
                &mut s,
                &format!("request ({} B, echo service)", r.size),
                "req/s",
                &self.concurrency,
            );
        }
        if let Some(k) = &self.kv {
            let title = |op: &str| format!("kv {op} ({} B values, 1000 keys)", k.size);
            k.put
                .table(&mut s, &title("put"), "ops/s", &self.concurrency);
            k.get
                .table(&mut s, &title("get"), "ops/s", &self.concurrency);
        }
        for f in [&self.broadcast, &self.publish].into_iter().flatten() {
            let l = &f.latency;
            let window = match f.window {
                0 => "no window: flood".to_owned(),
                w => format!("window {w}"),
            };
            let _ = writeln!(s, "\n{} ({} B, one receiver, {window})", f.kind, f.size);
            let _ = writeln!(
                s,
                "  latency (single message) p50 {:.1} µs  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  ({} samples, {} lost)",
                l.p50_us, l.p90_us, l.p99_us, l.p99_9_us, l.max_us, l.count, f.probes_lost
            );
            let lost_pct = if f.sent == 0 {
                0.0
            } else {
                100.0 * f.lost as f64 / f.sent as f64
            };
            let _ = writeln!(
                s,
                "  throughput               {:.0} delivered/s  (sent {:.0}/s; {} of {} lost, {:.2}%; {} dropped by the receiving library)",
                f.delivered_per_s, f.sent_per_s, f.lost, f.sent, lost_pct, f.receiver_dropped
            );
        }
        if let Some(t) = &self.tunnel {
            let _ = writeln!(s, "\ntunnel ({} B messages, one way)", t.message_size);
            let _ = writeln!(
                s,
                "  throughput               {:.1} MB/s  ({:.0} messages/s, {} bytes in {:.2} s)",
                t.mb_per_s, t.messages_per_s, t.bytes, t.seconds
            );
        }
        s
    }
}

/// Rounds to one decimal (JSON stays readable).
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
