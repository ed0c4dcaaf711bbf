//! Seeds in the discrete-event simulator: nodes that start as `petald` does with `--seed`
//! addresses, for fleets that start at once (the `cold-start` scenario).
//!
//! The model follows petal-node's driver: a node not started is down (a dial to it is refused,
//! as by a host whose daemon is not running yet). A started node dials each of its seeds; a
//! dial completes after one round trip: if the seed's node is up, it becomes a contact of the
//! core ([`petal_core::Node::contact`]: join through it, keep it as another contact, or
//! introduce it); if not, the seed failed, and a node whose seeds all failed serves as a ring
//! of one at once. Seeds whose node the core does not know are dialed again 100 ms after the
//! start, then at doubling intervals up to 30 s, as the daemon does.

use std::time::Duration;

use super::{Ev, Sim};

/// First delay before seeds are dialed again (the daemon's `FIRST_SEED_RETRY`).
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest delay between seed retries (the daemon's default `seed_retry`).
const MAX_RETRY: Duration = Duration::from_secs(30);

/// What the driver of a node started with seeds keeps.
#[derive(Debug)]
pub(crate) struct SeedDriver {
    seeds: Vec<u32>,
    failed: Vec<bool>,
    retry: Duration,
}

impl Sim {
    /// Adds a node that is down (not started): messages to it are lost and dials to it are
    /// refused until [`Sim::start_with_seeds`]. Returns its slot.
    pub fn add_down_node(&mut self) -> u32 {
        self.new_slot(false)
    }

    /// [`Sim::add_down_node`] with node id `id` and core seed `seed` instead of drawn ones: to
    /// mirror another harness's node (the real stack's ids derive from the hosts' keys).
    /// Returns its slot.
    ///
    /// # Panics
    /// If a node with id `id` exists.
    #[expect(
        clippy::expect_used,
        reason = "the scenario validated the node config before the first node was made"
    )]
    pub fn add_down_node_as(&mut self, id: petal_core::NodeId, seed: u64) -> u32 {
        assert!(!self.by_id.contains_key(&id), "node id {id:?} taken");
        let i = self.new_slot(false);
        let drawn = self.slots[i as usize].node.id();
        self.by_id.remove(&drawn);
        let info = petal_core::NodeInfo {
            id,
            addr: super::addr_of(i),
        };
        self.slots[i as usize].node = petal_core::Node::new(info, self.node_cfg.clone(), seed)
            .expect("node config validated by scenario");
        self.by_id.insert(id, i);
        self.ids[i as usize] = id;
        i
    }

    /// Starts down node `i` now as `petald --seed ...` would: with no seeds it founds a ring,
    /// otherwise it dials every seed (see the module doc).
    pub fn start_with_seeds(&mut self, i: u32, seeds: Vec<u32>) {
        let slot = &mut self.slots[i as usize];
        assert!(!slot.alive, "node {i} already started");
        slot.alive = true;
        if seeds.is_empty() {
            let now = self.now;
            self.slots[i as usize].node.start_first(now);
            self.after_step(i);
            return;
        }
        for &s in &seeds {
            self.dial(i, s);
        }
        let failed = vec![false; seeds.len()];
        self.slots[i as usize].seeds = Some(Box::new(SeedDriver {
            seeds,
            failed,
            retry: FIRST_RETRY,
        }));
        let at = self.now + FIRST_RETRY;
        self.push(at, Ev::SeedRetry { node: i });
    }

    fn dial(&mut self, from: u32, to: u32) {
        let rtt = 2 * self.topology.latency_us(from, to);
        let at = petal_core::Time::from_micros(self.now.as_micros() + rtt);
        self.push(
            at,
            Ev::Dial {
                node: from,
                seed: to,
            },
        );
    }

    /// A dial from `node` to its seed `seed` completes now.
    pub(super) fn on_dial(&mut self, node: u32, seed: u32) {
        if !self.slots[node as usize].alive {
            return;
        }
        let up = self.slots[seed as usize].alive
            && self
                .groups
                .as_ref()
                .is_none_or(|g| g.get(node as usize) == g.get(seed as usize));
        let now = self.now;
        self.metrics.events += 1;
        if up {
            let info = self.slots[seed as usize].node.info();
            let slot = &mut self.slots[node as usize];
            if let Some(d) = slot.seeds.as_mut() {
                for (k, s) in d.seeds.iter().enumerate() {
                    if *s == seed {
                        d.failed[k] = false;
                    }
                }
            }
            slot.node.contact(now, info);
            self.after_step(node);
            return;
        }
        let slot = &mut self.slots[node as usize];
        let Some(d) = slot.seeds.as_mut() else {
            return;
        };
        for (k, s) in d.seeds.iter().enumerate() {
            if *s == seed {
                d.failed[k] = true;
            }
        }
        let all_failed = d.failed.iter().all(|f| *f);
        let idle = !slot.node.is_ready() && !slot.node.is_joining();
        if all_failed && idle {
            slot.node.start_first(now);
            self.after_step(node);
        }
    }

    /// The seed-retry timer of `node`: dial again the seeds whose node the core does not know.
    pub(super) fn on_seed_retry(&mut self, node: u32) {
        let slot = &mut self.slots[node as usize];
        if !slot.alive {
            return;
        }
        let started = slot.node.is_ready() || slot.node.is_joining();
        let Some(d) = slot.seeds.as_mut() else {
            return;
        };
        let delay = d.retry;
        d.retry = (d.retry * 2).min(MAX_RETRY);
        let seeds = if started { d.seeds.clone() } else { Vec::new() };
        self.metrics.events += 1;
        let mut redial = Vec::new();
        for s in seeds {
            let id = self.slots[s as usize].node.id();
            if !self.slots[node as usize].node.knows(id) {
                redial.push(s);
            }
        }
        for s in redial {
            self.dial(node, s);
        }
        let at = self.now + delay;
        self.push(at, Ev::SeedRetry { node });
    }
}
