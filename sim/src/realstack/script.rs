//! [`Script`]: a fixed workload for a real-stack run, instead of the Poisson streams each
//! host draws for itself, so that another harness (the discrete-event simulator, in the
//! `fidelity` scenario) can run the very same operations at the very same times over the very
//! same per-pair delays, and the two be compared request by request.
//!
//! With a script, a run also records what a comparison needs and the periodic samples do not
//! give precisely: when each node became ready (its counters polled every
//! [`Script::ready_poll`] from its boot), and every node's counters at fixed times
//! ([`Script::samples_at`]).

use std::time::Duration;

/// What one scripted operation does. Cluster and topic indices name `svc-k` and `topic-k`
/// ([`super::cluster_name`], [`super::topic_name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScriptOpKind {
    /// A request to cluster `k` (size and timeout from the run's [`super::WorkloadParams`]).
    Request(u32),
    /// An event published on topic `k`.
    Publish(u32),
    /// A message broadcast to cluster `k`.
    Broadcast(u32),
}

/// One operation of a host's client application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScriptOp {
    /// When, from the start of the run.
    pub at: Duration,
    /// Whose client issues it.
    pub host: u32,
    /// What it does.
    pub kind: ScriptOpKind,
}

/// A fixed workload and network for a real-stack run (`RunConfig::script`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Script {
    /// One-way delay between hosts `a` and `b` at `a * nodes + b`, microseconds; symmetric
    /// (turmoil's links are), the diagonal unused. Each link gets its delay exactly, with no
    /// variance (turmoil delivers at the first tick at or after it).
    pub delays_us: Vec<u64>,
    /// The topics (indices) each host's client subscribes to, by host.
    pub subscriptions: Vec<Vec<u32>>,
    /// Every client operation, sorted by time then host.
    pub ops: Vec<ScriptOp>,
    /// Times (from the start of the run) at which every live host records its node's counters
    /// into `Recorder::samples`.
    pub samples_at: Vec<Duration>,
    /// How often a booted node is asked whether it is ready, until it is (its ready time goes
    /// into `Recorder::ready_at`).
    pub ready_poll: Duration,
}

impl Script {
    /// The delay between hosts `a` and `b`, microseconds.
    pub fn delay_us(&self, nodes: u32, a: u32, b: u32) -> u64 {
        self.delays_us
            .get(a as usize * nodes as usize + b as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Checks the script against a run of `nodes` hosts, `clusters` clusters and `topics`
    /// topics.
    pub fn validate(&self, nodes: u32, clusters: u32, topics: u32) -> anyhow::Result<()> {
        let n = nodes as usize;
        anyhow::ensure!(
            self.delays_us.len() == n * n,
            "the delay matrix must be nodes × nodes"
        );
        for a in 0..nodes {
            for b in 0..nodes {
                anyhow::ensure!(
                    self.delay_us(nodes, a, b) == self.delay_us(nodes, b, a),
                    "link delays must be symmetric ({a}, {b})"
                );
            }
        }
        anyhow::ensure!(
            self.subscriptions.len() == n,
            "one subscription list per host"
        );
        anyhow::ensure!(
            self.subscriptions.iter().flatten().all(|&t| t < topics),
            "a subscription to a topic that does not exist"
        );
        anyhow::ensure!(
            self.ops
                .windows(2)
                .all(|w| (w[0].at, w[0].host) <= (w[1].at, w[1].host)),
            "script operations must be sorted by time, then host"
        );
        for op in &self.ops {
            anyhow::ensure!(op.host < nodes, "an operation on host {}", op.host);
            let ok = match op.kind {
                ScriptOpKind::Request(c) | ScriptOpKind::Broadcast(c) => c < clusters,
                ScriptOpKind::Publish(t) => t < topics,
            };
            anyhow::ensure!(ok, "an operation on a group that does not exist: {op:?}");
        }
        anyhow::ensure!(!self.ready_poll.is_zero(), "ready_poll must be positive");
        Ok(())
    }

    /// The operations of host `host`, in time order.
    pub fn ops_of(&self, host: u32) -> Vec<ScriptOp> {
        self.ops
            .iter()
            .filter(|o| o.host == host)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script() -> Script {
        Script {
            delays_us: vec![0, 5, 5, 0],
            subscriptions: vec![vec![0], vec![]],
            ops: vec![
                ScriptOp {
                    at: Duration::from_millis(1),
                    host: 1,
                    kind: ScriptOpKind::Request(0),
                },
                ScriptOp {
                    at: Duration::from_millis(2),
                    host: 0,
                    kind: ScriptOpKind::Publish(0),
                },
            ],
            samples_at: vec![],
            ready_poll: Duration::from_millis(1),
        }
    }

    #[test]
    fn a_consistent_script_validates() {
        let s = script();
        s.validate(2, 1, 1).unwrap();
        assert_eq!(s.delay_us(2, 0, 1), 5);
        assert_eq!(s.ops_of(1).len(), 1);
    }

    #[test]
    fn asymmetric_delays_unsorted_ops_and_unknown_groups_are_refused() {
        let mut s = script();
        s.delays_us[1] = 6;
        assert!(s.validate(2, 1, 1).is_err());
        let mut s = script();
        s.ops.swap(0, 1);
        assert!(s.validate(2, 1, 1).is_err());
        let mut s = script();
        s.ops[0].kind = ScriptOpKind::Request(3);
        assert!(s.validate(2, 1, 1).is_err());
        assert!(script().validate(3, 1, 1).is_err());
    }
}
