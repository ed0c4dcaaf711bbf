//! The one workload description both harnesses run: who boots when, the per-pair delays, who
//! subscribes to what, and every request, publish and broadcast with its time and host. Pure:
//! a function of the scenario's parameters, the delay matrix and the master seed.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Params;
use crate::realstack::{Script, ScriptOp, ScriptOpKind};

/// The delay matrix of `nodes` nodes (`a * nodes + b`), read from `delay_us(a, b)`.
pub(super) fn delay_matrix(nodes: u32, delay_us: impl Fn(u32, u32) -> u64) -> Vec<u64> {
    let mut m = Vec::with_capacity(nodes as usize * nodes as usize);
    for a in 0..nodes {
        for b in 0..nodes {
            m.push(if a == b { 0 } else { delay_us(a, b) });
        }
    }
    m
}

/// The first delay of `delays_us` that is not a whole number of `tick_us`, as (index, delay).
/// Turmoil delivers a message at the first tick at or after its delay, so a delay between
/// ticks would reach the real stack rounded up, and the two harnesses would no longer share it.
pub(super) fn off_tick(delays_us: &[u64], tick_us: u64) -> Option<(usize, u64)> {
    delays_us
        .iter()
        .copied()
        .enumerate()
        .find(|&(_, d)| tick_us == 0 || d % tick_us != 0)
}

/// Time to the next arrival of a Poisson stream of `rate_per_s`, microseconds (`None` for a
/// stream that never fires).
#[expect(
    clippy::cast_possible_truncation,
    reason = "a non-negative float of microseconds, far below u64::MAX; the fraction is dropped on purpose"
)]
fn exp_gap_us(rng: &mut ChaCha8Rng, rate_per_s: f64) -> Option<u64> {
    if rate_per_s <= 0.0 {
        return None;
    }
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    Some((-(u.ln()) / rate_per_s * 1e6) as u64)
}

/// The script of a run: `delays_us` for the links, subscriptions and operations drawn from
/// `seed`. Each stream (requests, publishes, broadcasts) is Poisson at its total rate over the
/// workload window, each arrival from a uniformly random host to a uniformly random group,
/// its time cut to the whole millisecond (tokio's timers, which issue the real stack's
/// operations, have millisecond resolution). Counters are sampled when the workload starts
/// and `sample_margin` before the end.
pub(super) fn script(p: &Params, delays_us: Vec<u64>, seed: u64) -> Script {
    let mut rng = ChaCha8Rng::seed_from_u64(crate::engine::derive_seed(seed, "fidelity-plan", 0));
    let subscriptions = (0..p.nodes)
        .map(|_| {
            (0..p.topics)
                .filter(|_| rng.random_bool(p.subscribe_ratio))
                .collect()
        })
        .collect();
    let (from, until) = (p.work_from(), p.work_until());
    let mut ops = Vec::new();
    let streams = [
        (
            p.requests_per_s,
            p.clusters,
            ScriptOpKind::Request as fn(u32) -> _,
        ),
        (p.publishes_per_s, p.topics, ScriptOpKind::Publish),
        (p.broadcasts_per_s, p.clusters, ScriptOpKind::Broadcast),
    ];
    for (rate, groups, kind) in streams {
        let mut t_us = crate::micros_u64(from);
        while let Some(gap) = exp_gap_us(&mut rng, rate) {
            t_us += gap;
            let at = Duration::from_millis(t_us / 1000);
            if at >= until {
                break;
            }
            let host = rng.random_range(0..p.nodes);
            let group = rng.random_range(0..groups.max(1));
            ops.push(ScriptOp {
                at,
                host,
                kind: kind(group),
            });
        }
    }
    ops.sort_unstable();
    Script {
        delays_us,
        subscriptions,
        ops,
        samples_at: vec![from, p.end().saturating_sub(SAMPLE_MARGIN)],
        ready_poll: super::TICK,
    }
}

/// How long before the end of the run the last counters are read (the real stack's run loop
/// stops at the end, before a sample due exactly then).
pub(super) const SAMPLE_MARGIN: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        toml::from_str(
            r#"
            nodes = 6
            join_spacing_ms = 100
            settle_s = 2
            run_s = 10
            drain_s = 3
            clusters = 2
            topics = 3
            subscribe_ratio = 0.5
            requests_per_s = 40.0
            publishes_per_s = 10.0
            broadcasts_per_s = 0.0
            request_timeout_ms = 1000
            request_size = 32
            event_size = 32
            service_ms = 2
            event_settle_s = 1
            event_grace_s = 1
            latency_tolerance = 0.05
            tail_tolerance = 0.1
            count_tolerance = 0.05
            join_tolerance = 0.25
            "#,
        )
        .unwrap()
    }

    #[test]
    fn the_matrix_is_read_in_row_order_with_a_zero_diagonal() {
        let m = delay_matrix(3, |a, b| u64::from(10 * a + b));
        assert_eq!(m, vec![0, 1, 2, 10, 0, 12, 20, 21, 0]);
    }

    #[test]
    fn delays_between_ticks_are_found() {
        assert_eq!(off_tick(&[0, 1000, 3000], 1000), None);
        assert_eq!(off_tick(&[0, 1000, 2500], 1000), Some((2, 2500)));
        assert_eq!(off_tick(&[0], 0), Some((0, 0)));
    }

    #[test]
    fn the_script_is_deterministic_sorted_and_inside_the_workload() {
        let p = params();
        let delays = delay_matrix(p.nodes, |a, b| 1000 * u64::from(a + b));
        let s = script(&p, delays.clone(), 7);
        assert_eq!(s, script(&p, delays.clone(), 7));
        assert_ne!(s.ops, script(&p, delays, 8).ops);
        s.validate(p.nodes, p.clusters, p.topics).unwrap();
        assert!(s.ops.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            s.ops
                .iter()
                .all(|o| o.at >= p.work_from() && o.at < p.work_until())
        );
        assert!(s.ops.iter().all(|o| o.at.subsec_micros() % 1000 == 0));
        // About 40 requests and 10 publishes per second for 10 s, no broadcast.
        let count = |f: fn(&ScriptOpKind) -> bool| s.ops.iter().filter(|o| f(&o.kind)).count();
        let requests = count(|k| matches!(k, ScriptOpKind::Request(_)));
        let publishes = count(|k| matches!(k, ScriptOpKind::Publish(_)));
        assert!((300..500).contains(&requests), "{requests}");
        assert!((50..150).contains(&publishes), "{publishes}");
        assert_eq!(count(|k| matches!(k, ScriptOpKind::Broadcast(_))), 0);
        assert_eq!(s.samples_at, vec![p.work_from(), p.end() - SAMPLE_MARGIN]);
    }
}
