//! The transit-stub router graph: GT-ITM-style generation, the stub routers' delay tables, the
//! all-pairs delay matrix (on demand) and the shortest-delay route between two routers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

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
    /// Row-major `routers × routers` delays in microseconds, computed on first use (only
    /// [`RouterMatrix::push_route`] needs them; see [`RouterMatrix::delay_us`]).
    full: std::sync::OnceLock<Vec<u32>>,
    /// The same delays between stub routers, from three small tables (the per-message lookup).
    pub(super) stub: StubDelays,
    /// Router `r`'s links are `hops[hop_start[r]..hop_start[r + 1]]`, sorted by neighbour and
    /// then link id (parallel links between two routers are distinct links).
    pub(super) hop_start: Vec<u32>,
    pub(super) hops: Vec<Hop>,
}

impl RouterMatrix {
    /// The row-major `routers × routers` matrix of shortest-path delays, in microseconds: a
    /// Dijkstra from every router, run the first time it is asked for. A simulation reads its
    /// delays from [`StubDelays`] (built from a few rows and the stub domains alone), so only
    /// routes ([`RouterMatrix::push_route`]) pay for it: the matrix was 4 % of a 1,000-node
    /// `rpc-load` run, and `cold-start` builds a topology for each of its runs.
    pub(super) fn delay_us(&self) -> &[u32] {
        self.full
            .get_or_init(|| all_pairs_delays(&self.hop_start, &self.hops))
    }

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
        let to_t = &self.delay_us()[t as usize * n..][..n];
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

/// Delays between stub routers (where nodes attach), exactly those of the full matrix, from
/// tables small enough to stay in cache: a stub domain hangs off its transit router by one
/// link, so that router lies on every path out of the domain, and the delay between stub
/// routers of two domains is `up(a) + d(T_a, T_b) + up(b)`, with `up(r)` the delay from `r`
/// to its domain's transit router; inside one domain it is the domain's own table (no
/// shortest path between two of its routers leaves the domain: it would cross the one link
/// twice). The full matrix is 4.5 MB for the defaults, and one random read of it per message
/// was a tenth of the simulator's time.
pub(super) struct StubDelays {
    first_stub: u32,
    /// `routers[r - first_stub]`: where stub router `r` sits in the tables.
    routers: Vec<StubRouter>,
    /// `transit_us[ta * transit + tb]`.
    transit_us: Vec<u32>,
    /// `local_us[(domain * per_domain + i) * per_domain + j]`.
    local_us: Vec<u32>,
}

/// A stub router's places in [`StubDelays`]' tables, computed once: the per-message lookup
/// then takes no division.
#[derive(Clone, Copy, Debug)]
struct StubRouter {
    /// The delay to its domain's transit router.
    up_us: u32,
    /// Its stub domain.
    domain: u32,
    /// `(domain * per_domain + i) * per_domain`: its row of the domain's table.
    local_row: u32,
    /// `i`, its index in its domain: its column there.
    local_col: u32,
    /// `ta * transit`: its transit router's row of the transit table.
    transit_row: u32,
    /// `ta`: its transit router's column there.
    transit_col: u32,
}

impl StubDelays {
    /// The tables, from a Dijkstra from each transit router over the whole graph and one from
    /// each stub router within its own domain.
    fn new(hop_start: &[u32], hops: &[Hop], c: &TransitStubConfig, first_stub: u32) -> Self {
        let n = hop_start.len() - 1;
        let routers = u32::try_from(n).unwrap_or(u32::MAX);
        let (transit, per_domain) = (first_stub, c.stub_routers_per_domain);
        let domains_per_transit = c.stub_domains_per_transit_router;
        let mut search = Dijkstra::new(n);
        let mut transit_rows = Vec::with_capacity(transit as usize * n);
        for t in 0..transit {
            search.run(hop_start, hops, t, 0..routers);
            transit_rows.extend(search.dist.iter().map(|&d| clamp_delay(d)));
        }
        let row = |t: u32| &transit_rows[t as usize * n..][..n];
        let transit_us = (0..transit)
            .flat_map(|a| (0..transit).map(move |b| (a, b)))
            .map(|(a, b)| row(a)[b as usize])
            .collect();
        let domains = (routers - first_stub) / per_domain;
        let mut local_us = Vec::with_capacity((domains * per_domain * per_domain) as usize);
        let mut stub_routers = Vec::with_capacity((routers - first_stub) as usize);
        for domain in 0..domains {
            let first = first_stub + domain * per_domain;
            let ta = domain / domains_per_transit;
            for i in 0..per_domain {
                search.run(hop_start, hops, first + i, first..first + per_domain);
                local_us.extend(
                    search.dist[first as usize..(first + per_domain) as usize]
                        .iter()
                        .map(|&d| clamp_delay(d)),
                );
                stub_routers.push(StubRouter {
                    up_us: row(ta)[(first + i) as usize],
                    domain,
                    local_row: (domain * per_domain + i) * per_domain,
                    local_col: i,
                    transit_row: ta * transit,
                    transit_col: ta,
                });
            }
        }
        Self {
            first_stub,
            routers: stub_routers,
            transit_us,
            local_us,
        }
    }

    /// The delay between stub routers `a` and `b`, in microseconds.
    #[inline]
    pub(super) fn core_us(&self, a: u32, b: u32) -> u64 {
        let (ra, rb) = (
            &self.routers[(a - self.first_stub) as usize],
            &self.routers[(b - self.first_stub) as usize],
        );
        if ra.domain == rb.domain {
            return u64::from(self.local_us[(ra.local_row + rb.local_col) as usize]);
        }
        u64::from(ra.up_us)
            + u64::from(self.transit_us[(ra.transit_row + rb.transit_col) as usize])
            + u64::from(rb.up_us)
    }
}

/// A shortest-path delay as the tables hold it.
fn clamp_delay(d: u64) -> u32 {
    assert!(d != u64::MAX, "transit-stub router graph is disconnected");
    u32::try_from(d).unwrap_or(u32::MAX)
}

/// Dijkstra's search over the compact adjacency, its buffers kept between sources.
struct Dijkstra {
    dist: Vec<u64>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
}

impl Dijkstra {
    fn new(routers: usize) -> Self {
        Self {
            dist: vec![u64::MAX; routers],
            heap: BinaryHeap::new(),
        }
    }

    /// Fills `dist[within]` with the shortest delays from `source` over paths that stay within
    /// the routers `within` (which holds `source`); the rest of `dist` is left as it was.
    fn run(&mut self, hop_start: &[u32], hops: &[Hop], source: u32, within: Range<u32>) {
        self.dist[within.start as usize..within.end as usize].fill(u64::MAX);
        self.dist[source as usize] = 0;
        self.heap.push(Reverse((0, source)));
        while let Some(Reverse((d, r))) = self.heap.pop() {
            if d > self.dist[r as usize] {
                continue;
            }
            for h in &hops[hop_start[r as usize] as usize..hop_start[r as usize + 1] as usize] {
                let (to, via) = (h.router, d + u64::from(h.delay_us));
                if within.contains(&to) && via < self.dist[to as usize] {
                    self.dist[to as usize] = via;
                    self.heap.push(Reverse((via, to)));
                }
            }
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

/// The shortest-path delay between every two routers (row-major), by Dijkstra from each router
/// over the compact adjacency (`hop_start`, `hops`). Shortest distances are unique, so this is
/// the matrix petgraph's `dijkstra` gave, without its hash map of distances per source.
fn all_pairs_delays(hop_start: &[u32], hops: &[Hop]) -> Vec<u32> {
    let n = hop_start.len() - 1;
    let routers = u32::try_from(n).unwrap_or(u32::MAX);
    let mut delay_us = Vec::with_capacity(n * n);
    let mut search = Dijkstra::new(n);
    for source in 0..routers {
        search.run(hop_start, hops, source, 0..routers);
        delay_us.extend(search.dist.iter().map(|&d| clamp_delay(d)));
    }
    delay_us
}

/// Builds a transit-stub router graph and its stub routers' delay tables.
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
        full: std::sync::OnceLock::new(),
        stub: StubDelays::new(&hop_start, &hops, c, transit),
        hop_start,
        hops,
    }
}
