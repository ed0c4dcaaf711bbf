//! Tests of the latency models and the router graph.

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
        let latencies = |t: &Topology| sample.iter().map(|&(x, y)| t.latency_us(x, y)).collect();
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
    assert_eq!((n, m.delay_us().len()), (1056, n * n));
    for i in 0..n {
        for j in 0..n {
            let d = m.delay_us()[i * n + j];
            assert!(d < u32::MAX && (d > 0) == (i != j), "{i} {j} {d}");
            assert_eq!(d, m.delay_us()[j * n + i]);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..200_000 {
        let [a, b, c] = [(); 3].map(|_| rng.random_range(0..n));
        let via = u64::from(m.delay_us()[a * n + b]) + u64::from(m.delay_us()[b * n + c]);
        assert!(u64::from(m.delay_us()[a * n + c]) <= via);
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
        assert!(matrix(&t).0.delay_us().iter().all(|&d| d < u32::MAX));
    }
}

#[test]
fn stub_delays_equal_the_full_matrix() {
    for (td, tr, sd, sr, jitter) in [
        (4, 8, 4, 8, 0),
        (4, 8, 4, 8, 40),
        (1, 1, 1, 1, 0),
        (2, 3, 2, 5, 25),
        (5, 1, 3, 4, 100),
    ] {
        let config = TopologyConfig::TransitStub(TransitStubConfig {
            transit_domains: td,
            transit_routers_per_domain: tr,
            stub_domains_per_transit_router: sd,
            stub_routers_per_domain: sr,
            link_jitter_percent: jitter,
            ..TransitStubConfig::default()
        });
        let t = built(&config, 17, 1);
        let m = matrix(&t).0;
        let n = m.routers as usize;
        for a in m.first_stub..m.routers {
            for b in m.first_stub..m.routers {
                let full = u64::from(m.delay_us()[a as usize * n + b as usize]);
                assert_eq!(m.stub.core_us(a, b), full, "{config:?} {a} {b}");
            }
        }
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
