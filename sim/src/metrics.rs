//! What the engine measures: time series in fixed buckets, hop and stretch distributions,
//! crash-detection times, drops. Scenarios read only these.

use petal_core::Time;
use serde::Serialize;

/// Counters of one time bucket.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Bucket {
    /// Lookups started.
    pub lookups_started: u64,
    /// Lookups answered at their origin.
    pub lookups_done: u64,
    /// Lookups that failed after every attempt.
    pub lookups_failed: u64,
    /// Lookup deliveries at an owner.
    pub delivered: u64,
    /// Deliveries at the node the oracle says owns the key.
    pub consistent: u64,
    /// Deliveries at the owner among the ready nodes of the deliverer's side of a partition
    /// (equal to `consistent` when the network is whole).
    pub consistent_local: u64,
    /// Maintenance messages sent.
    pub maintenance_msgs: u64,
    /// Maintenance bytes sent (frame bytes).
    pub maintenance_bytes: u64,
    /// Lookup messages and replies sent.
    pub payload_msgs: u64,
}

impl Bucket {
    /// Adds `other`'s counters to these.
    pub fn add(&mut self, other: &Bucket) {
        self.lookups_started += other.lookups_started;
        self.lookups_done += other.lookups_done;
        self.lookups_failed += other.lookups_failed;
        self.delivered += other.delivered;
        self.consistent += other.consistent;
        self.consistent_local += other.consistent_local;
        self.maintenance_msgs += other.maintenance_msgs;
        self.maintenance_bytes += other.maintenance_bytes;
        self.payload_msgs += other.payload_msgs;
    }
}

/// Everything the engine measured since it started (or since the scenario reset it).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    bucket_us: u64,
    /// Per-bucket counters, bucket `i` covering `[i, i+1) x bucket_us`.
    pub buckets: Vec<Bucket>,
    /// Events processed (message deliveries and timer firings).
    pub events: u64,
    /// Messages and bytes sent, by message kind (indexed like `Message::KINDS`; empty until
    /// the first message).
    pub by_kind: Vec<(u64, u64)>,
    /// Messages handed to a live node (the simulated message count).
    pub messages: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Graceful leaves injected.
    pub leaves: u64,
    /// Joins completed.
    pub joins: u64,
    /// Joins that failed.
    pub join_failures: u64,
    /// Messages that reached a dead node.
    pub dropped_dead: u64,
    /// Messages dropped by a partition.
    pub dropped_partition: u64,
    /// Messages to an address with no such node.
    pub dropped_unroutable: u64,
    /// Messages lost by the loss model.
    pub dropped_loss: u64,
    /// Messages delivered twice by the duplication model.
    pub duplicated: u64,
    /// Peers declared dead while alive and ready.
    pub false_deaths: u64,
    /// Crash-to-first-detection times, microseconds.
    pub detections_us: Vec<u64>,
    /// Hop counts of delivered lookups (index = hops).
    pub hops: Vec<u64>,
    /// Route stretch samples: delay of the overlay route over the direct delay.
    pub stretch: Vec<f64>,
    /// Lookup round-trip latencies at the origin, microseconds.
    pub latency_us: Vec<u64>,
}

impl Metrics {
    /// Empty metrics with buckets of `bucket_us`.
    pub fn new(bucket_us: u64) -> Self {
        Self {
            bucket_us: bucket_us.max(1),
            ..Self::default()
        }
    }

    /// The bucket width.
    pub fn bucket_us(&self) -> u64 {
        self.bucket_us
    }

    fn bucket(&mut self, now: Time) -> &mut Bucket {
        let i = crate::to_usize(now.as_micros() / self.bucket_us);
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, Bucket::default());
        }
        &mut self.buckets[i]
    }

    pub(crate) fn sent(&mut self, now: Time, kind: usize, maintenance: bool, bytes: usize) {
        if self.by_kind.len() <= kind {
            self.by_kind
                .resize(petal_protocol::Message::KINDS.len().max(kind + 1), (0, 0));
        }
        let k = &mut self.by_kind[kind];
        k.0 += 1;
        k.1 += bytes as u64;
        let b = self.bucket(now);
        if maintenance {
            b.maintenance_msgs += 1;
            b.maintenance_bytes += bytes as u64;
        } else {
            b.payload_msgs += 1;
        }
    }

    pub(crate) fn lookup_started(&mut self, now: Time) {
        self.bucket(now).lookups_started += 1;
    }

    pub(crate) fn lookup_done(&mut self, now: Time, latency_us: u64) {
        self.bucket(now).lookups_done += 1;
        self.latency_us.push(latency_us);
    }

    pub(crate) fn lookup_failed(&mut self, now: Time) {
        self.bucket(now).lookups_failed += 1;
    }

    pub(crate) fn delivered(
        &mut self,
        now: Time,
        (consistent, local): (bool, bool),
        hops: u8,
        stretch: Option<f64>,
    ) {
        let b = self.bucket(now);
        b.delivered += 1;
        b.consistent += u64::from(consistent);
        b.consistent_local += u64::from(local);
        let h = usize::from(hops);
        if self.hops.len() <= h {
            self.hops.resize(h + 1, 0);
        }
        self.hops[h] += 1;
        if let Some(s) = stretch {
            self.stretch.push(s);
        }
    }

    /// Sums of all buckets.
    pub fn totals(&self) -> Bucket {
        let mut t = Bucket::default();
        for b in &self.buckets {
            t.add(b);
        }
        t
    }

    /// Mean hop count of delivered lookups.
    pub fn mean_hops(&self) -> f64 {
        let n: u64 = self.hops.iter().sum();
        if n == 0 {
            return 0.0;
        }
        self.hops
            .iter()
            .enumerate()
            .map(|(h, c)| h as f64 * *c as f64)
            .sum::<f64>()
            / n as f64
    }
}

/// The `q` quantile (0..=1) of `samples` (sorted copy; nearest rank). `None` when empty.
pub fn quantile<T: Copy + PartialOrd>(samples: &[T], q: f64) -> Option<T> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    #[expect(
        clippy::cast_possible_truncation,
        reason = "q * len rounded up: a rank clamped to 1..=len"
    )]
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}
