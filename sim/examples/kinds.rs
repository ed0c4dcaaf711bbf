//! Prints message counts by kind while growing an overlay (a profiling aid).
use petal_core::Time;
use petal_sim::topology::TopologyConfig;
use petal_sim::{Sim, SimConfig};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let mut cfg = SimConfig::new(1, TopologyConfig::default());
    cfg.node.leaf_ping_interval = std::time::Duration::from_secs(30);
    cfg.node.routing_ping_interval = std::time::Duration::from_secs(120);
    cfg.node.leaf_exchange_interval = std::time::Duration::from_secs(30);
    let mut s = Sim::new(cfg);
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        s.add_node();
        let t = s.now().as_micros() + 2000;
        s.run_until(Time::from_micros(t));
    }
    let t = s.now().as_micros() + 20_000_000;
    s.run_until(Time::from_micros(t));
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "{n} nodes: {:.1} s wall, {} events, {} messages ({:.2} M msg/s)",
        wall,
        s.metrics.events,
        s.metrics.messages,
        s.metrics.messages as f64 / wall / 1e6
    );
    for (k, (m, b)) in petal_protocol::Message::KINDS
        .iter()
        .zip(&s.metrics.by_kind)
    {
        println!(
            "{k:>14}: {:>10} msgs {:>8.1} per node, {:>12} bytes",
            m,
            *m as f64 / n as f64,
            b
        );
    }
}
