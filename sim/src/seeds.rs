//! Seeds in the discrete-event simulator: nodes that start as `petald` does with `--seed`
//! addresses, for fleets that start at once (the `cold-start` scenario).
//!
//! The model follows petal-node's driver: a node not started is down (a dial to it is refused,
//! as by a host whose daemon is not running yet). A started node dials each of its seeds; a
//! dial completes after one round trip: if the seed's node is up, it becomes a contact of the
//! core ([`petal_core::Node::contact`]: join through it, keep it as another contact, or
//! introduce it); if not, the seed failed, and a node whose seeds all failed serves as a ring
//! of one at once. When seeds are dialed again is decided by the daemon's own schedule,
//! [`petal_core::Seeds`] with its default timing: a seed that never answered every 100 ms
//! during the first 5 s, and every seed whose node the core does not know at doubling
//! intervals from 100 ms up to 30 s. Links are not modelled: a seed that answered counts as
//! linked while its node is up (a joining node does not dial it again).

use super::{Ev, Sim};

/// What the driver of a node started with seeds keeps: the daemon's seed schedule.
pub(crate) type SeedDriver = petal_core::Seeds<u32>;

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
        let mut d = SeedDriver::new(seeds, self.now, petal_core::SeedTiming::default());
        while let Some(s) = d.poll_dial() {
            self.dial(i, s);
        }
        let at = d.poll_timeout();
        self.slots[i as usize].seeds = Some(Box::new(d));
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
                d.answered(&seed, info.id);
            }
            slot.node.contact(now, info);
            self.after_step(node);
            return;
        }
        let slot = &mut self.slots[node as usize];
        let Some(d) = slot.seeds.as_mut() else {
            return;
        };
        let all_failed = d.failed(&seed);
        let idle = !slot.node.is_ready() && !slot.node.is_joining();
        if all_failed && idle {
            slot.node.start_first(now);
            self.after_step(node);
        }
    }

    /// The seed-retry timer of `node`: dial again the seeds the schedule hands out (see the
    /// module doc).
    pub(super) fn on_seed_retry(&mut self, node: u32) {
        let slot = &self.slots[node as usize];
        if !slot.alive {
            return;
        }
        let joining = slot.node.is_joining();
        let Some(mut d) = self.slots[node as usize].seeds.take() else {
            return;
        };
        self.metrics.events += 1;
        let now = self.now;
        let me = &self.slots[node as usize].node;
        let (slots, by_id) = (&self.slots, &self.by_id);
        d.handle_timeout(now, |id| {
            me.knows(id)
                || id == me.id()
                || (joining && by_id.get(&id).is_some_and(|&s| slots[s as usize].alive))
        });
        while let Some(s) = d.poll_dial() {
            self.dial(node, s);
        }
        let at = d.poll_timeout();
        self.slots[node as usize].seeds = Some(d);
        self.push(at, Ev::SeedRetry { node });
    }
}
