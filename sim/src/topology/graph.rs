//! The transit-stub router graph: GT-ITM-style generation, the all-pairs delay matrix, and
//! the shortest-delay route between two routers.

use petgraph::algo::dijkstra;
use petgraph::graph::{NodeIndex, UnGraph};
use petgraph::visit::EdgeRef;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::TransitStubConfig;

/// One direction of a router link, as seen from the router whose adjacency holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Hop {
    /// The neighbouring router.
    pub(super) router: u32,
    /// The link's delay in microseconds (the weight the delay matrix was computed with).
    pub(super) delay_us: u32,
    /// The link's id, `0..links` (both directions of a link share it).
    pub(super) link: u32,
}

/// A transit-stub router graph: compact adjacency and all-pairs shortest-path delays.
pub(super) struct RouterMatrix {
    pub(super) routers: u32,
    pub(super) links: u32,
    /// Routers `first_stub..routers` are stub routers, where nodes attach.
    pub(super) first_stub: u32,
    /// Row-major `routers × routers` delays in microseconds.
    pub(super) delay_us: Vec<u32>,
    /// Router `r`'s links are `hops[hop_start[r]..hop_start[r + 1]]`, sorted by neighbour and
    /// then link id (parallel links between two routers are distinct links).
    pub(super) hop_start: Vec<u32>,
    pub(super) hops: Vec<Hop>,
}

impl RouterMatrix {
    /// Appends the router links of the shortest-delay path between routers `from` and `to`.
    ///
    /// The path is walked from the lower-numbered router of the two towards the other: at router
    /// `s`, it takes the first link (lowest neighbour, then lowest link id) to a neighbour `u`
    /// with `delay(s, u) + d(u, t) == d(s, t)`; links are appended reversed when
    /// `from > to`. So the path between two routers does not depend on the query's direction,
    /// and its delays sum to `d(from, to)` exactly. Every link takes at least 1 µs, so `d(u, t)`
    /// strictly decreases and the walk ends. `d(u, t)` is read from row `t` (the matrix is
    /// symmetric), one contiguous row for the whole walk.
    #[expect(
        clippy::expect_used,
        reason = "the delay matrix is built from these very links: every router but the target has a link on a shortest path"
    )]
    pub(super) fn push_route(&self, from: u32, to: u32, out: &mut Vec<u32>) {
        let (mut s, t) = (from.min(to), from.max(to));
        let n = self.routers as usize;
        let to_t = &self.delay_us[t as usize * n..][..n];
        let start = out.len();
        while s != t {
            let (lo, hi) = (self.hop_start[s as usize], self.hop_start[s as usize + 1]);
            let left = u64::from(to_t[s as usize]);
            let hop = self.hops[lo as usize..hi as usize]
                .iter()
                .find(|h| u64::from(h.delay_us) + u64::from(to_t[h.router as usize]) == left)
                .expect("delay matrix consistent with the router links");
            out.push(hop.link);
            s = hop.router;
        }
        if from > to {
            out[start..].reverse();
        }
    }
}

/// The transit-stub router graph under construction.
struct GraphBuilder<'a> {
    graph: UnGraph<(), u32>,
    rng: &'a mut ChaCha8Rng,
    jitter_percent: u32,
}

impl GraphBuilder<'_> {
    #[expect(
        clippy::expect_used,
        reason = "the config's validation bounds link delays (with jitter) to u32"
    )]
    fn link(&mut self, a: u32, b: u32, nominal_us: u32) {
        if a == b {
            return;
        }
        let spread = u64::from(nominal_us) * u64::from(self.jitter_percent) / 100;
        let nominal = u64::from(nominal_us);
        let delay = self
            .rng
            .random_range(nominal - spread..=nominal + spread)
            .max(1);
        let delay = u32::try_from(delay).expect("validated: link delay fits u32");
        self.graph.add_edge(
            NodeIndex::new(a as usize),
            NodeIndex::new(b as usize),
            delay,
        );
    }

    /// Routers `first..first + n` become one domain: a ring plus `n / 2` random chords.
    fn domain(&mut self, first: u32, n: u32, nominal_us: u32) {
        if n == 2 {
            self.link(first, first + 1, nominal_us);
        } else if n > 2 {
            for i in 0..n {
                self.link(first + i, first + (i + 1) % n, nominal_us);
            }
        }
        if n >= 4 {
            for _ in 0..n / 2 {
                let a = first + self.rng.random_range(0..n);
                let b = first + self.rng.random_range(0..n);
                self.link(a, b, nominal_us);
            }
        }
    }

    fn pick(&mut self, first: u32, n: u32) -> u32 {
        first + self.rng.random_range(0..n)
    }
}

/// Builds a transit-stub router graph and its delay matrix.
#[expect(
    clippy::expect_used,
    reason = "the config's validation bounds router and link counts to u32"
)]
pub(super) fn build_transit_stub(c: &TransitStubConfig, rng: &mut ChaCha8Rng) -> RouterMatrix {
    let per = c.transit_routers_per_domain;
    let transit = u32::try_from(c.transit_router_count()).expect("validated router count");
    let routers = u32::try_from(c.router_count()).expect("validated router count");
    let (spt, spr) = (c.stub_domains_per_transit_router, c.stub_routers_per_domain);
    let mut b = GraphBuilder {
        graph: UnGraph::with_capacity(routers as usize, 2 * routers as usize),
        rng,
        jitter_percent: c.link_jitter_percent,
    };
    for _ in 0..routers {
        b.graph.add_node(());
    }
    for d in 0..c.transit_domains {
        b.domain(d * per, per, c.transit_transit_us);
    }
    for i in 0..c.transit_domains {
        for j in i + 1..c.transit_domains {
            let (x, y) = (b.pick(i * per, per), b.pick(j * per, per));
            b.link(x, y, c.transit_transit_us);
        }
    }
    for t in 0..transit {
        for k in 0..spt {
            let first = transit + (t * spt + k) * spr;
            b.domain(first, spr, c.stub_stub_us);
            let gateway = b.pick(first, spr);
            b.link(t, gateway, c.transit_stub_us);
        }
    }
    let (graph, n) = (b.graph, routers as usize);
    let mut delay_us = vec![0u32; n * n];
    for (source, row) in delay_us.chunks_exact_mut(n).enumerate() {
        let dist = dijkstra(&graph, NodeIndex::new(source), None, |e| {
            u64::from(*e.weight())
        });
        assert_eq!(dist.len(), n, "transit-stub router graph is disconnected");
        for (target, cell) in row.iter_mut().enumerate() {
            *cell = u32::try_from(dist[&NodeIndex::new(target)]).unwrap_or(u32::MAX);
        }
    }
    let links = u32::try_from(graph.edge_count()).expect("few links");
    let mut hop_start = vec![0u32; n + 1];
    for e in graph.edge_references() {
        hop_start[e.source().index() + 1] += 1;
        hop_start[e.target().index() + 1] += 1;
    }
    for r in 0..n {
        hop_start[r + 1] += hop_start[r];
    }
    let mut fill = hop_start.clone();
    let unset = Hop {
        router: 0,
        delay_us: 0,
        link: 0,
    };
    let mut hops = vec![unset; 2 * graph.edge_count()];
    for e in graph.edge_references() {
        let (x, y) = (e.source().index(), e.target().index());
        let link = u32::try_from(e.id().index()).expect("few links");
        let delay_us = *e.weight();
        for (from, to) in [(x, y), (y, x)] {
            let router = u32::try_from(to).expect("validated router count");
            hops[fill[from] as usize] = Hop {
                router,
                delay_us,
                link,
            };
            fill[from] += 1;
        }
    }
    for r in 0..n {
        let (lo, hi) = (hop_start[r] as usize, hop_start[r + 1] as usize);
        hops[lo..hi].sort_unstable_by_key(|h| (h.router, h.link));
    }
    RouterMatrix {
        routers,
        links,
        first_stub: transit,
        delay_us,
        hop_start,
        hops,
    }
}
