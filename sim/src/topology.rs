//! Network latency model: the one-way delay between any two simulated nodes.
//!
//! The discrete-event simulator asks [`Topology::latency_us`] for every frame it delivers, so a
//! lookup is O(1), allocation-free and hash-free. Three models, chosen by [`TopologyConfig`]:
//!
//! - **transit-stub**: a GT-ITM-style router graph, the kind of topology the Pastry and Scribe
//!   papers evaluated on. Transit domains form a backbone, stub domains hang off transit routers,
//!   and every node sits behind an access link on a random stub router. Latency is
//!   `access(a) + shortest router path + access(b)`, read from an all-pairs delay matrix computed
//!   once with Dijkstra from every router (routers² `u32` entries, 4.5 MB for the defaults).
//!   The router graph's adjacency is kept too (a few entries per router), so
//!   [`Topology::path_links`] can name the physical links a message crosses, for link stress.
//! - **geometric**: nodes are random points in a square; latency is the Euclidean distance plus
//!   both access links. No routers.
//! - **uniform**: every unordered pair gets a latency hashed from the pair, uniform in a range.
//!   No structure and no triangle inequality; the cheapest model, meant for tests.
//!
//! Determinism: everything derives from `(config, seed)`. Nodes are numbered 0, 1, 2, ... in the
//! order of [`Topology::add_node`], and the placement of node `k` depends only on the config, the
//! seed and `k`. No clocks, no global randomness, no random-state hash maps in the results.

use std::fmt;
use std::ops::Range;

use petgraph::algo::dijkstra;
use petgraph::graph::{NodeIndex, UnGraph};
use petgraph::visit::EdgeRef;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Largest router count of a transit-stub topology (its delay matrix then takes 64 MiB).
pub const MAX_ROUTERS: u64 = 4096;
/// Largest delay of a single configured link or access link, in microseconds (one second).
pub const MAX_LINK_US: u32 = 1_000_000;
/// Number of node pairs [`Topology::summary`] samples.
pub const SUMMARY_PAIRS: u32 = 20_000;

/// Salts that split one seed into independent streams.
const PLACE_SALT: u64 = 0x706c_6163_6520_6e6f;
const UNIFORM_SALT: u64 = 0x756e_6966_6f72_6d21;
const SUMMARY_SEED: u64 = 0x7375_6d6d_6172_7921;

/// Which latency model to build, as written in a scenario file (`kind = "transit-stub"`, ...).
/// Omitted fields take the defaults of the variant's config struct.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TopologyConfig {
    /// GT-ITM-style transit-stub router graph.
    TransitStub(TransitStubConfig),
    /// Random points in a square, Euclidean latency.
    Geometric(GeometricConfig),
    /// Hashed per-pair latency, uniform in a range.
    Uniform(UniformConfig),
}

impl Default for TopologyConfig {
    /// The default transit-stub topology.
    fn default() -> Self {
        Self::TransitStub(TransitStubConfig::default())
    }
}

/// Transit-stub parameters. Every domain is a ring plus `n / 2` random chords (so it is always
/// connected); every pair of transit domains is joined by one link between random members; each
/// stub domain is joined to its transit router through one random gateway router. Each link's
/// delay is drawn uniformly within `±link_jitter_percent` of its class's nominal delay, and is
/// at least 1 µs (a draw of 0, possible only with a nominal delay of 0 or 100 % jitter, becomes
/// 1), so every router-path step makes progress.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransitStubConfig {
    /// Number of transit (backbone) domains (default 4).
    pub transit_domains: u32,
    /// Routers in each transit domain (default 8).
    pub transit_routers_per_domain: u32,
    /// Stub domains attached to each transit router (default 4).
    pub stub_domains_per_transit_router: u32,
    /// Routers in each stub domain (default 8; the defaults give 32 + 1024 = 1056 routers).
    pub stub_routers_per_domain: u32,
    /// Nominal delay of a transit-transit link, within or across domains (default 8 ms).
    pub transit_transit_us: u32,
    /// Nominal delay of a stub gateway's link to its transit router (default 4 ms).
    pub transit_stub_us: u32,
    /// Nominal delay of a link inside a stub domain (default 1.5 ms).
    pub stub_stub_us: u32,
    /// Per-link jitter around the nominal delay, in percent, 0 to 100 (default 50).
    pub link_jitter_percent: u32,
    /// Smallest access delay between a node and its stub router (default 0.5 ms).
    pub access_us_min: u32,
    /// Largest access delay between a node and its stub router (default 4 ms).
    pub access_us_max: u32,
}

impl Default for TransitStubConfig {
    fn default() -> Self {
        Self {
            transit_domains: 4,
            transit_routers_per_domain: 8,
            stub_domains_per_transit_router: 4,
            stub_routers_per_domain: 8,
            transit_transit_us: 8_000,
            transit_stub_us: 4_000,
            stub_stub_us: 1_500,
            link_jitter_percent: 50,
            access_us_min: 500,
            access_us_max: 4_000,
        }
    }
}

impl TransitStubConfig {
    /// Number of transit routers.
    pub fn transit_router_count(&self) -> u64 {
        u64::from(self.transit_domains) * u64::from(self.transit_routers_per_domain)
    }

    /// Total number of routers, transit and stub.
    pub fn router_count(&self) -> u64 {
        let transit = self.transit_router_count();
        transit
            + transit
                * u64::from(self.stub_domains_per_transit_router)
                * u64::from(self.stub_routers_per_domain)
    }
}

/// Geometric parameters: nodes uniform in a `width_us` × `width_us` square.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeometricConfig {
    /// Side of the square in microseconds of delay, diagonal √2 times this (default 100 ms).
    pub width_us: u32,
    /// Smallest per-node access delay (default 0.5 ms).
    pub access_us_min: u32,
    /// Largest per-node access delay (default 4 ms).
    pub access_us_max: u32,
}

impl Default for GeometricConfig {
    fn default() -> Self {
        Self {
            width_us: 100_000,
            access_us_min: 500,
            access_us_max: 4_000,
        }
    }
}

/// Uniform parameters: each pair's latency lies in `latency_us_min..=latency_us_max`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UniformConfig {
    /// Smallest pair latency (default 10 ms).
    pub latency_us_min: u32,
    /// Largest pair latency (default 100 ms).
    pub latency_us_max: u32,
}

impl Default for UniformConfig {
    fn default() -> Self {
        Self {
            latency_us_min: 10_000,
            latency_us_max: 100_000,
        }
    }
}

/// A topology config that cannot be built; the message says which rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyError(&'static str);

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid topology config: {}", self.0)
    }
}

impl std::error::Error for TopologyError {}

fn ensure(ok: bool, rule: &'static str) -> Result<(), TopologyError> {
    if ok { Ok(()) } else { Err(TopologyError(rule)) }
}

impl TopologyConfig {
    /// The model's name as written in scenario files.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TransitStub(_) => "transit-stub",
            Self::Geometric(_) => "geometric",
            Self::Uniform(_) => "uniform",
        }
    }

    /// Checks that the config can be built: positive counts, ordered ranges, bounded sizes.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let (min, max, max_us) = match self {
            Self::TransitStub(c) => {
                let counts = [c.transit_domains, c.transit_routers_per_domain];
                let stubs = [c.stub_domains_per_transit_router, c.stub_routers_per_domain];
                let all_counts = counts.iter().chain(&stubs).all(|&n| n > 0);
                ensure(all_counts, "every transit-stub count must be at least 1")?;
                ensure(
                    c.router_count() <= MAX_ROUTERS,
                    "more than MAX_ROUTERS routers",
                )?;
                let links = [c.transit_transit_us, c.transit_stub_us, c.stub_stub_us];
                ensure(
                    links.iter().all(|&us| us <= MAX_LINK_US),
                    "link delay > MAX_LINK_US",
                )?;
                ensure(c.link_jitter_percent <= 100, "link_jitter_percent > 100")?;
                (c.access_us_min, c.access_us_max, MAX_LINK_US)
            }
            Self::Geometric(c) => {
                ensure(
                    c.width_us <= 100 * MAX_LINK_US,
                    "width_us > 100 * MAX_LINK_US",
                )?;
                (c.access_us_min, c.access_us_max, MAX_LINK_US)
            }
            Self::Uniform(c) => (c.latency_us_min, c.latency_us_max, u32::MAX),
        };
        ensure(min <= max, "a *_us_min exceeds its *_us_max")?;
        ensure(max <= max_us, "access_us_max > MAX_LINK_US")
    }
}

/// One direction of a router link, as seen from the router whose adjacency holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hop {
    /// The neighbouring router.
    router: u32,
    /// The link's delay in microseconds (the weight the delay matrix was computed with).
    delay_us: u32,
    /// The link's id, `0..links` (both directions of a link share it).
    link: u32,
}

/// A transit-stub router graph: compact adjacency and all-pairs shortest-path delays.
struct RouterMatrix {
    routers: u32,
    links: u32,
    /// Routers `first_stub..routers` are stub routers, where nodes attach.
    first_stub: u32,
    /// Row-major `routers × routers` delays in microseconds.
    delay_us: Vec<u32>,
    /// Router `r`'s links are `hops[hop_start[r]..hop_start[r + 1]]`, sorted by neighbour and
    /// then link id (parallel links between two routers are distinct links).
    hop_start: Vec<u32>,
    hops: Vec<Hop>,
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
    fn push_route(&self, from: u32, to: u32, out: &mut Vec<u32>) {
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

/// A built model. Per-node storage: `[router, access_us]` or `[x_us, y_us, access_us]`.
enum Model {
    TransitStub(RouterMatrix, Vec<[u32; 2]>),
    Geometric(Vec<[u32; 3]>),
    /// Pair latency is `min_us` plus a hash of `(key, pair)` scaled into `0..span_us`.
    Uniform {
        min_us: u64,
        span_us: u64,
        key: u64,
    },
}

/// A built latency model plus the nodes placed on it so far.
pub struct Topology {
    config: TopologyConfig,
    model: Model,
    rng: ChaCha8Rng,
    nodes: u32,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("config", &self.config)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// Latency statistics of a topology for reports, from a fixed deterministic sample of node pairs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopologySummary {
    /// Model name (`transit-stub`, `geometric`, `uniform`).
    pub kind: String,
    /// Routers in the graph (0 for models without routers).
    pub routers: u32,
    /// Links in the router graph (0 for models without routers).
    pub router_links: u32,
    /// Nodes placed so far.
    pub nodes: u32,
    /// Distinct-node pairs sampled (0 with fewer than two nodes; then all latencies are 0).
    pub sampled_pairs: u32,
    /// Mean one-way latency over the sample.
    pub mean_latency_us: f64,
    /// Median one-way latency over the sample.
    pub median_latency_us: u64,
    /// 99th percentile one-way latency over the sample.
    pub p99_latency_us: u64,
    /// Largest one-way latency in the sample.
    pub max_latency_us: u64,
}

/// SplitMix64 finalizer: a fast, well-mixed, fixed (seedless) 64-bit hash.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
fn build_transit_stub(c: &TransitStubConfig, rng: &mut ChaCha8Rng) -> RouterMatrix {
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

impl Topology {
    /// Builds the model for `config` from `seed`, with no nodes yet.
    ///
    /// # Panics
    /// If the config is invalid (see [`TopologyConfig::validate`]); [`Topology::try_new`]
    /// returns the error instead.
    pub fn new(config: &TopologyConfig, seed: u64) -> Topology {
        Self::try_new(config, seed).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Builds the model for `config` from `seed`, or says why the config is invalid.
    pub fn try_new(config: &TopologyConfig, seed: u64) -> Result<Topology, TopologyError> {
        config.validate()?;
        let model = match config {
            TopologyConfig::TransitStub(c) => {
                let matrix = build_transit_stub(c, &mut ChaCha8Rng::seed_from_u64(seed));
                Model::TransitStub(matrix, Vec::new())
            }
            TopologyConfig::Geometric(_) => Model::Geometric(Vec::new()),
            TopologyConfig::Uniform(c) => Model::Uniform {
                min_us: u64::from(c.latency_us_min),
                span_us: u64::from(c.latency_us_max - c.latency_us_min) + 1,
                key: mix64(seed ^ UNIFORM_SALT),
            },
        };
        let rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ PLACE_SALT));
        Ok(Topology {
            config: config.clone(),
            model,
            rng,
            nodes: 0,
        })
    }

    /// Places a new node (a random stub router and access delay, or a random point) and returns
    /// its index: 0 for the first node, then 1, 2, ...
    #[expect(
        clippy::expect_used,
        reason = "node and link ids are u32 by design: more than 2^32 nodes is a caller's bug"
    )]
    pub fn add_node(&mut self) -> u32 {
        let (id, rng) = (self.nodes, &mut self.rng);
        match (&mut self.model, &self.config) {
            (Model::TransitStub(m, nodes), TopologyConfig::TransitStub(c)) => {
                let ids = m.links.checked_add(id).and_then(|last| last.checked_add(1));
                ids.expect("link ids (router links + nodes) fit u32");
                let router = rng.random_range(m.first_stub..m.routers);
                nodes.push([router, rng.random_range(c.access_us_min..=c.access_us_max)]);
            }
            (Model::Geometric(nodes), TopologyConfig::Geometric(c)) => {
                let [x_us, y_us] = [(); 2].map(|_| rng.random_range(0..=c.width_us));
                nodes.push([
                    x_us,
                    y_us,
                    rng.random_range(c.access_us_min..=c.access_us_max),
                ]);
            }
            _ => {}
        }
        self.nodes = id.checked_add(1).expect("at most u32::MAX nodes");
        id
    }

    /// Places `count` new nodes and returns their index range.
    pub fn add_nodes(&mut self, count: u32) -> Range<u32> {
        let start = self.nodes;
        for _ in 0..count {
            self.add_node();
        }
        start..self.nodes
    }

    /// One-way delay between nodes `a` and `b` in microseconds: 0 when `a == b`, symmetric.
    /// O(1), no allocation.
    ///
    /// # Panics
    /// If `a` or `b` has not been added.
    #[inline]
    pub fn latency_us(&self, a: u32, b: u32) -> u64 {
        assert!(a < self.nodes && b < self.nodes, "unknown node {a} or {b}");
        if a == b {
            return 0;
        }
        match &self.model {
            Model::TransitStub(m, nodes) => {
                let ([ra, access_a], [rb, access_b]) = (nodes[a as usize], nodes[b as usize]);
                let core = m.delay_us[ra as usize * m.routers as usize + rb as usize];
                u64::from(access_a) + u64::from(core) + u64::from(access_b)
            }
            Model::Geometric(nodes) => {
                let ([xa, ya, access_a], [xb, yb, access_b]) =
                    (nodes[a as usize], nodes[b as usize]);
                let (dx, dy) = (f64::from(xa) - f64::from(xb), f64::from(ya) - f64::from(yb));
                let distance = (dx * dx + dy * dy).sqrt().round() as u64;
                u64::from(access_a) + distance + u64::from(access_b)
            }
            Model::Uniform {
                min_us,
                span_us,
                key,
            } => {
                let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                let h = mix64(key ^ (u64::from(lo) << 32 | u64::from(hi)));
                min_us + ((u128::from(h) * u128::from(*span_us)) >> 64) as u64
            }
        }
    }

    /// The config this topology was built from.
    pub fn config(&self) -> &TopologyConfig {
        &self.config
    }

    /// The model's name (`transit-stub`, `geometric`, `uniform`).
    pub fn kind(&self) -> &'static str {
        self.config.kind()
    }

    /// Number of nodes placed so far.
    pub fn node_count(&self) -> u32 {
        self.nodes
    }

    /// Number of routers (0 for models without routers).
    pub fn router_count(&self) -> u32 {
        match &self.model {
            Model::TransitStub(m, _) => m.routers,
            _ => 0,
        }
    }

    /// Number of physical link ids in use: `Some(router_links + nodes)` for transit-stub, where
    /// ids `0..router_links` are router links (`router_links` as in [`TopologySummary`]) and id
    /// `router_links + i` is node `i`'s access link; it grows by one with every added node.
    /// `None` for the geometric and uniform models, which have no physical links.
    pub fn link_count(&self) -> Option<u32> {
        match &self.model {
            Model::TransitStub(m, _) => Some(m.links + self.nodes),
            _ => None,
        }
    }

    /// Appends to `out` the ids of the physical links a message from node `a` to node `b`
    /// crosses, in order, and returns how many it appended: `a`'s access link, the router links
    /// of the shortest-delay router path, then `b`'s access link (two access links and no
    /// router link when both nodes sit on the same router; nothing when `a == b`). Ids are
    /// below [`Topology::link_count`]. For link stress, count each id once per copy of a message.
    ///
    /// Consistent with [`Topology::latency_us`]: the links' delays (jitter included, it is drawn
    /// per link when the graph is built) sum to exactly `latency_us(a, b)`, which has no
    /// per-pair term. Deterministic: among equal-delay router paths, the walk from the
    /// lower-numbered router takes the lowest-numbered neighbour (then the lowest link id), and
    /// the path from `b` to `a` is this one reversed. Allocation-free given capacity in `out`;
    /// costs one step per router hop, each scanning that router's few links.
    ///
    /// Returns `None`, appending nothing, for the geometric and uniform models: link stress is
    /// only defined for transit-stub.
    ///
    /// # Panics
    /// If `a` or `b` has not been added.
    pub fn path_links(&self, a: u32, b: u32, out: &mut Vec<u32>) -> Option<usize> {
        assert!(a < self.nodes && b < self.nodes, "unknown node {a} or {b}");
        let Model::TransitStub(m, nodes) = &self.model else {
            return None;
        };
        if a == b {
            return Some(0);
        }
        let start = out.len();
        out.push(m.links + a);
        m.push_route(nodes[a as usize][0], nodes[b as usize][0], out);
        out.push(m.links + b);
        Some(out.len() - start)
    }

    /// Latency statistics over a fixed deterministic sample of [`SUMMARY_PAIRS`] distinct-node
    /// pairs (the same pairs for the same node count, whatever the seed).
    pub fn summary(&self) -> TopologySummary {
        let (routers, router_links) = match &self.model {
            Model::TransitStub(m, _) => (m.routers, m.links),
            _ => (0, 0),
        };
        let kind = self.kind().to_owned();
        let summary = TopologySummary {
            kind,
            routers,
            router_links,
            nodes: self.nodes,
            ..Default::default()
        };
        if self.nodes < 2 {
            return summary;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(SUMMARY_SEED);
        let mut sample: Vec<u64> = (0..SUMMARY_PAIRS)
            .map(|_| {
                let (a, b) = (
                    rng.random_range(0..self.nodes),
                    rng.random_range(1..self.nodes),
                );
                self.latency_us(a, b - u32::from(b <= a))
            })
            .collect();
        sample.sort_unstable();
        let len = sample.len();
        TopologySummary {
            sampled_pairs: SUMMARY_PAIRS,
            mean_latency_us: sample.iter().sum::<u64>() as f64 / len as f64,
            median_latency_us: sample[len / 2],
            p99_latency_us: sample[(len - 1) * 99 / 100],
            max_latency_us: sample[len - 1],
            ..summary
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs() -> [TopologyConfig; 3] {
        let geometric = TopologyConfig::Geometric(GeometricConfig::default());
        [
            TopologyConfig::default(),
            geometric,
            TopologyConfig::Uniform(UniformConfig::default()),
        ]
    }

    fn built(config: &TopologyConfig, seed: u64, nodes: u32) -> Topology {
        let mut t = Topology::new(config, seed);
        assert_eq!(t.add_nodes(nodes), 0..nodes);
        t
    }

    fn pairs(nodes: u32, count: usize) -> Vec<(u32, u32)> {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        (0..count)
            .map(|_| (rng.random_range(0..nodes), rng.random_range(0..nodes)))
            .collect()
    }

    fn matrix(t: &Topology) -> (&RouterMatrix, &[[u32; 2]]) {
        let Model::TransitStub(m, nodes) = &t.model else {
            panic!("not transit-stub")
        };
        (m, nodes)
    }

    #[test]
    fn deterministic_symmetric_and_zero_on_the_diagonal() {
        let sample = pairs(400, 4000);
        for config in configs() {
            let [a, b, c] = [7, 7, 8].map(|seed| built(&config, seed, 400));
            let latencies =
                |t: &Topology| sample.iter().map(|&(x, y)| t.latency_us(x, y)).collect();
            let la: Vec<u64> = latencies(&a);
            assert_eq!(la, latencies(&b), "{config:?}");
            assert_ne!(la, latencies(&c), "{config:?}");
            assert_eq!(a.summary(), b.summary());
            for (&(x, y), &l) in sample.iter().zip(&la) {
                assert_eq!(l, a.latency_us(y, x));
                assert_eq!(a.latency_us(x, x), 0);
                assert!(x == y || l > 0, "{config:?} {x} {y}");
            }
        }
    }

    #[test]
    fn router_matrix_is_connected_symmetric_and_a_metric() {
        let t = Topology::new(&TopologyConfig::default(), 3);
        let (m, n) = (matrix(&t).0, t.router_count() as usize);
        assert_eq!((n, m.delay_us.len()), (1056, n * n));
        for i in 0..n {
            for j in 0..n {
                let d = m.delay_us[i * n + j];
                assert!(d < u32::MAX && (d > 0) == (i != j), "{i} {j} {d}");
                assert_eq!(d, m.delay_us[j * n + i]);
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200_000 {
            let [a, b, c] = [(); 3].map(|_| rng.random_range(0..n));
            let via = u64::from(m.delay_us[a * n + b]) + u64::from(m.delay_us[b * n + c]);
            assert!(u64::from(m.delay_us[a * n + c]) <= via);
        }
    }

    #[test]
    fn tiny_and_uneven_transit_stub_graphs_are_connected() {
        for (td, tr, sd, sr) in [(1, 1, 1, 1), (1, 2, 1, 2), (2, 3, 2, 5), (5, 1, 3, 4)] {
            let config = TopologyConfig::TransitStub(TransitStubConfig {
                transit_domains: td,
                transit_routers_per_domain: tr,
                stub_domains_per_transit_router: sd,
                stub_routers_per_domain: sr,
                ..TransitStubConfig::default()
            });
            let t = built(&config, 11, 50);
            assert!(matrix(&t).0.delay_us.iter().all(|&d| d < u32::MAX));
        }
    }

    #[test]
    fn nodes_on_the_same_router_pay_only_access() {
        let t = built(&TopologyConfig::default(), 4, 3000);
        let nodes = matrix(&t).1;
        let mut first_on_router = std::collections::BTreeMap::new();
        for (b, &[router, access_b]) in (0u32..).zip(nodes) {
            if let Some(&(a, access_a)) = first_on_router.get(&router) {
                assert_eq!(t.latency_us(a, b), u64::from(access_a + access_b));
                return;
            }
            first_on_router.insert(router, (b, access_b));
        }
        panic!("3000 nodes on 1024 stub routers share one");
    }

    /// Per link id: `(end router, other end router or None for an access link, delay_us)`.
    fn link_table(t: &Topology) -> Vec<(u32, Option<u32>, u32)> {
        let (m, nodes) = matrix(t);
        let mut table = vec![(u32::MAX, None, 0); t.link_count().unwrap() as usize];
        for r in 0..m.routers {
            let (lo, hi) = (m.hop_start[r as usize], m.hop_start[r as usize + 1]);
            for h in &m.hops[lo as usize..hi as usize] {
                assert!(h.delay_us >= 1 && h.router != r);
                let entry = &mut table[h.link as usize];
                if entry.0 == u32::MAX {
                    *entry = (r, Some(h.router), h.delay_us);
                } else {
                    assert_eq!(*entry, (h.router, Some(r), h.delay_us), "link {}", h.link);
                }
            }
        }
        for (i, &[router, access_us]) in nodes.iter().enumerate() {
            table[m.links as usize + i] = (router, None, access_us);
        }
        assert!(
            table.iter().all(|e| e.0 != u32::MAX),
            "a link id without a link"
        );
        table
    }

    fn path_configs() -> Vec<TopologyConfig> {
        let ts = |c: TransitStubConfig| TopologyConfig::TransitStub(c);
        let d = TransitStubConfig::default;
        let mut all = vec![
            TopologyConfig::default(),
            // No jitter: many equal-delay paths, so ties must be broken consistently.
            ts(TransitStubConfig {
                link_jitter_percent: 0,
                ..d()
            }),
            // Zero and near-zero nominal delays: drawn delays of 0 become 1 µs.
            ts(TransitStubConfig {
                transit_stub_us: 0,
                stub_stub_us: 1,
                link_jitter_percent: 100,
                access_us_min: 0,
                ..d()
            }),
        ];
        for (td, tr, sd, sr) in [(1, 1, 1, 1), (1, 2, 1, 2), (2, 3, 2, 5), (5, 1, 3, 4)] {
            all.push(ts(TransitStubConfig {
                transit_domains: td,
                transit_routers_per_domain: tr,
                stub_domains_per_transit_router: sd,
                stub_routers_per_domain: sr,
                ..d()
            }));
        }
        all
    }

    #[test]
    fn path_links_walk_the_graph_and_sum_to_the_latency() {
        for config in path_configs() {
            let t = built(&config, 21, 2000);
            let table = link_table(&t);
            let (mut path, mut back) = (Vec::new(), Vec::new());
            let mut hops = 0;
            for (a, b) in pairs(2000, 5000) {
                path.clear();
                path.push(u32::MAX); // appends after what `out` holds
                let appended = t.path_links(a, b, &mut path).unwrap();
                assert_eq!((path.remove(0), appended), (u32::MAX, path.len()));
                back.clear();
                assert_eq!(t.path_links(b, a, &mut back), Some(appended));
                assert!(back.iter().rev().eq(&path), "{config:?} {a} {b}");
                if a == b {
                    assert!(path.is_empty());
                    continue;
                }
                hops += path.len();
                let links = t.link_count().unwrap();
                assert_eq!(
                    (path[0], path[path.len() - 1]),
                    (links - 2000 + a, links - 2000 + b)
                );
                let mut at = table[path[0] as usize].0;
                let mut delay = 0;
                for (k, &link) in path.iter().enumerate() {
                    let (x, y, us) = table[link as usize];
                    delay += u64::from(us);
                    let inner = k > 0 && k + 1 < path.len();
                    assert_eq!(y.is_some(), inner, "{config:?} {a} {b} {path:?}");
                    match y {
                        Some(y) if x == at => at = y,
                        Some(y) if y == at => at = x,
                        Some(_) => panic!("{config:?} {a} {b}: link {link} is not at {at}"),
                        None => assert_eq!(x, at, "{config:?} {a} {b}: access link {link}"),
                    }
                    assert!(!path[..k].contains(&link), "{config:?} {a} {b}: {path:?}");
                }
                assert_eq!(delay, t.latency_us(a, b), "{config:?} {a} {b} {path:?}");
            }
            if config == TopologyConfig::default() {
                // ~9 router hops plus two access links on the default graph.
                assert!((6..16).contains(&(hops / 5000)), "{hops}");
            }
        }
    }

    #[test]
    fn link_ids_count_router_links_then_access_links() {
        let mut t = Topology::new(&TopologyConfig::default(), 6);
        let links = t.summary().router_links;
        assert!(links > t.router_count());
        assert_eq!(t.link_count(), Some(links));
        t.add_nodes(10);
        assert_eq!(t.link_count(), Some(links + 10));
        let mut out = vec![7];
        assert_eq!(t.path_links(3, 3, &mut out), Some(0));
        assert_eq!(out, [7]);
        for config in &configs()[1..] {
            let t = built(config, 6, 10);
            assert_eq!(t.link_count(), None);
            assert_eq!(t.path_links(1, 2, &mut out), None);
            assert_eq!(out, [7]);
        }
    }

    #[test]
    #[should_panic(expected = "unknown node")]
    fn path_links_rejects_unknown_nodes() {
        built(&TopologyConfig::default(), 1, 5).path_links(0, 5, &mut Vec::new());
    }

    #[test]
    fn default_magnitudes_are_internet_like() {
        for config in configs() {
            let s = built(&config, 42, 2000).summary();
            assert_eq!(s.sampled_pairs, SUMMARY_PAIRS);
            assert!((10_000.0..200_000.0).contains(&s.mean_latency_us), "{s:?}");
            assert!(s.median_latency_us <= s.p99_latency_us);
            assert!(
                s.p99_latency_us <= s.max_latency_us && s.max_latency_us < 400_000,
                "{s:?}"
            );
        }
        let s = Topology::new(&TopologyConfig::default(), 42).summary();
        assert_eq!((s.nodes, s.sampled_pairs, s.routers), (0, 0, 1056));
        let narrow = UniformConfig {
            latency_us_min: 5,
            latency_us_max: 9,
        };
        let t = built(&TopologyConfig::Uniform(narrow), 2, 100);
        let seen: std::collections::BTreeSet<u64> = pairs(100, 2000)
            .into_iter()
            .filter(|(a, b)| a != b)
            .map(|(a, b)| t.latency_us(a, b))
            .collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [5, 6, 7, 8, 9]);
    }

    #[test]
    fn toml_variants_parse_with_defaults_and_round_trip() {
        let parse = |text: &str| toml::from_str::<TopologyConfig>(text);
        let ts = TransitStubConfig {
            transit_domains: 2,
            access_us_max: 900,
            ..Default::default()
        };
        let text = "kind = \"transit-stub\"\ntransit_domains = 2\naccess_us_max = 900\n";
        assert_eq!(parse(text).unwrap(), TopologyConfig::TransitStub(ts));
        let geo = GeometricConfig {
            width_us: 50_000,
            ..Default::default()
        };
        let text = "kind = \"geometric\"\nwidth_us = 50000\n";
        assert_eq!(parse(text).unwrap(), TopologyConfig::Geometric(geo));
        let uni = UniformConfig {
            latency_us_min: 1,
            latency_us_max: 2,
        };
        let text = "kind = \"uniform\"\nlatency_us_min = 1\nlatency_us_max = 2\n";
        assert_eq!(parse(text).unwrap(), TopologyConfig::Uniform(uni));
        for config in configs() {
            let text = toml::to_string(&config).unwrap();
            assert_eq!(parse(&text).unwrap(), config, "{text}");
        }
        assert!(parse("kind = \"uniform\"\nlatency_us = 1\n").is_err());
        assert!(parse("kind = \"mesh\"\n").is_err());
        assert!(parse("width_us = 1\n").is_err());
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let ts = |c: TransitStubConfig| TopologyConfig::TransitStub(c);
        let d = TransitStubConfig::default;
        let bad = [
            ts(TransitStubConfig {
                transit_domains: 0,
                ..d()
            }),
            ts(TransitStubConfig {
                stub_routers_per_domain: 1000,
                ..d()
            }),
            ts(TransitStubConfig {
                link_jitter_percent: 101,
                ..d()
            }),
            ts(TransitStubConfig {
                access_us_min: 9,
                access_us_max: 8,
                ..d()
            }),
            TopologyConfig::Geometric(GeometricConfig {
                access_us_max: 2 * MAX_LINK_US,
                ..Default::default()
            }),
            TopologyConfig::Uniform(UniformConfig {
                latency_us_min: 2,
                latency_us_max: 1,
            }),
        ];
        for config in bad {
            let err = Topology::try_new(&config, 0).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid topology config"),
                "{err}"
            );
        }
        configs()
            .iter()
            .try_for_each(TopologyConfig::validate)
            .unwrap();
    }
}
