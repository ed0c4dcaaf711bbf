//! Measures simulator speed on a steady overlay (liveness traffic and lookups, no joins).
use petal_core::{Key, Time};
use petal_sim::topology::TopologyConfig;
use petal_sim::{Sim, SimConfig};
use rand::Rng;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut s = Sim::new(SimConfig::new(1, TopologyConfig::default()));
    for _ in 0..n {
        s.add_node();
        let t = s.now().as_micros() + 5000;
        s.run_until(Time::from_micros(t));
    }
    let t = s.now().as_micros() + 30_000_000;
    s.run_until(Time::from_micros(t));
    let (e0, m0) = (s.metrics.events, s.metrics.messages);
    let t0 = std::time::Instant::now();
    for _ in 0..600 {
        for _ in 0..100 {
            let from = s.random_ready().unwrap();
            let k = Key(s.rng().random());
            s.lookup(from, k);
        }
        let t = s.now().as_micros() + 100_000;
        s.run_until(Time::from_micros(t));
    }
    let wall = t0.elapsed().as_secs_f64();
    let (e, m) = (s.metrics.events - e0, s.metrics.messages - m0);
    println!(
        "{n} nodes steady 60 s: {wall:.2} s wall, {e} events ({:.2} M/s), {m} messages ({:.2} M/s)",
        e as f64 / wall / 1e6,
        m as f64 / wall / 1e6
    );
}
