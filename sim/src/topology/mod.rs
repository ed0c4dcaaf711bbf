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

mod graph;

use std::fmt;
use std::ops::Range;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use graph::{RouterMatrix, build_transit_stub};

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
                u64::from(access_a) + m.stub.core_us(ra, rb) + u64::from(access_b)
            }
            Model::Geometric(nodes) => {
                let ([xa, ya, access_a], [xb, yb, access_b]) =
                    (nodes[a as usize], nodes[b as usize]);
                let (dx, dy) = (f64::from(xa) - f64::from(xb), f64::from(ya) - f64::from(yb));
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "a distance in the square, at most its diagonal in µs: far below u64::MAX"
                )]
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
mod tests;
