//! The report's prose: the method, and where the runs differ and why (with the measured
//! figures).

use super::{
    Compared, EVENT_CROSSINGS, REQUEST_CROSSINGS, Side, count, ms, pair_delays, q_ms, signed_pct,
};
use crate::engine::Sim;
use crate::realstack::Script;
use crate::report::ReportWriter;
use crate::scenario::common::pct;
use crate::scenario::fidelity::{Params, TICK, compare};

pub(super) fn method(w: &mut ReportWriter, p: &Params, script: &Script, sim: &Sim) {
    let pairs = pair_delays(script, p.nodes);
    let subs: usize = script.subscriptions.iter().map(Vec::len).sum();
    w.heading("Method");
    w.paragraph(&format!(
        "One workload, run twice: by the discrete-event simulator (petal-core nodes driven by the \
         engine, simulated applications) and by turmoil over the real stack (petal-node's runtime \
         with Noise-encrypted peer links over simulated TCP, petal-client applications over each \
         host's loopback relay). Both runs read one description: {} hosts, host i booting {} ms × i \
         after host 0 (host 0 founds the ring; every other host is given host 0 as its seed); the \
         same node ids (the real hosts' ids, which derive from their keys) and the same seeds for \
         the cores' generators; one service per host, a member of svc-(i mod {}), answering every \
         request after {} ms (no faults), and one client per host subscribed to a fixed set of {} \
         topics ({} subscriptions in all); {} operations at fixed times (whole milliseconds), \
         drawn once from the seed: requests ({} per second over the network, timeout {} ms, {} \
         bytes), publishes ({} per second) and broadcasts ({} per second, {} bytes), each from a \
         random host to a random group, for {} s from {} s after the first boot; {} s of drain.",
        p.nodes,
        p.join_spacing_ms,
        p.clusters,
        p.service_ms,
        p.topics,
        subs,
        script.ops.len(),
        p.requests_per_s,
        p.request_timeout_ms,
        p.request_size,
        p.publishes_per_s,
        p.broadcasts_per_s,
        p.event_size,
        p.run_s,
        p.settle_s,
        p.end().as_secs() - p.work_until().as_secs(),
    ));
    w.paragraph(&format!(
        "The network: the simulator's {} topology (built from the seed) gives every pair of hosts \
         a one-way delay; the real run sets each turmoil link to exactly that delay, with no \
         variance. Over the {} pairs the delays are {} / {} / {} ms (min / median / max). They are \
         whole milliseconds on purpose: turmoil delivers a message at the first tick at or after \
         its delay, and its tick is one millisecond (a shorter tick is not usable: a host's tokio \
         clock has millisecond resolution, so it would run ahead of the network's).",
        sim.topology().kind(),
        pairs.len(),
        ms(q_ms(&pairs, 0.0)),
        ms(q_ms(&pairs, 0.5)),
        ms(q_ms(&pairs, 1.0)),
    ));
    w.paragraph(&format!(
        "The simulator's applications attach as the real ones do (an attempt at the boot, then \
         every 250 ms until the node is ready), and a service takes up to {} requests at once, as \
         petal-client's handler pool does (its capacity weight is {} for every member, which \
         makes the same load-balancing choices as the relay's weight of 1 for every member). \
         Known differences, stated before measuring: in turmoil every segment on a host's \
         loopback arrives one tick (1 ms) late, and a request crosses the loopback {} times \
         (client to node, node to service, service to node, node to client), an event {} times \
         (publisher to node, node to recipient); the simulator hands commands and events to its \
         nodes directly. The tables give the real stack's latencies raw and corrected (the \
         crossings taken off); the targets judge the corrected ones. A real link also needs a TCP \
         connection and a Noise handshake before its first message, where the simulator's dial \
         takes one round trip. Neither harness charges CPU time: encryption, framing and copying \
         cost bytes, not simulated time.",
        crate::realstack::REQUEST_HANDLERS,
        crate::realstack::REQUEST_HANDLERS,
        REQUEST_CROSSINGS,
        EVENT_CROSSINGS,
    ));
    w.paragraph(
        "Requests and event deliveries are also paired across the runs (the k-th request of a \
         host in one run with the k-th of the same host in the other; an event's delivery to the \
         same host's application), and the counters both harnesses keep (petal-core's, summed \
         over the nodes, read at the same instants) are compared over the joins and over the \
         workload. The real stack does not report a request's hops (the relay protocol carries \
         none), so hops are compared as the cores count them: overlay hops per routed message \
         (routes forwarded per route delivered) and tree hops per request (asks forwarded down a \
         cluster tree per request delivered).",
    );
}

/// The share of `diffs_us` equal to `crossings` ticks.
fn exact_share(diffs_us: &[i64], crossings: u64) -> f64 {
    let off = i64::try_from(crossings * crate::micros_u64(TICK)).unwrap_or(i64::MAX);
    diffs_us.iter().filter(|&&d| d == off).count() as f64 / diffs_us.len().max(1) as f64
}

pub(super) fn differences(w: &mut ReportWriter, c: &Compared<'_>) {
    w.heading("Where the runs differ, and why");
    let (d, r) = (&c.des, &c.real);
    let ks =
        |a: &[u64], b: &[u64]| compare::ks_distance(a, b).map_or("-".into(), |x| format!("{x:.3}"));
    w.paragraph(&format!(
        "**Loopback ticks.** Raw, the real stack's requests took {} ms at the median against the \
         simulator's {} ms ({}), its events {} against {} ms. The {REQUEST_CROSSINGS} and \
         {EVENT_CROSSINGS} loopback ticks account for that: with them taken off, the request \
         medians are {} and {} ms, the 90th percentiles {} and {} ms, and the Kolmogorov-Smirnov \
         distance between the two latency distributions falls from {} to {}. This gap is \
         turmoil's, not the product's: a real loopback costs tens of microseconds, not a \
         millisecond.",
        ms(q_ms(&r.lat, 0.5)),
        ms(q_ms(&d.lat, 0.5)),
        signed_pct(compare::rel(q_ms(&d.lat, 0.5), q_ms(&r.lat, 0.5))),
        ms(q_ms(&r.delays, 0.5)),
        ms(q_ms(&d.delays, 0.5)),
        ms(q_ms(&d.lat, 0.5)),
        ms(q_ms(&c.real_lat, 0.5)),
        ms(q_ms(&d.lat, 0.9)),
        ms(q_ms(&c.real_lat, 0.9)),
        ks(&d.lat, &r.lat),
        ks(&d.lat, &c.real_lat),
    ));
    let same = &c.requests.same_member_diffs_us;
    w.paragraph(&format!(
        "**Request by request.** Only {} of the paired requests differ by exactly the \
         {REQUEST_CROSSINGS} ticks, yet {} of the {} served by the same host's member in both runs \
         do. Which member serves a request is drawn at each tree node (power of two choices); \
         both runs seed the cores alike, but a core's generator also serves nonces and timer \
         jitter, and the real nodes see their inputs in another order (links come up later, \
         applications attach after a relay handshake), so the draws part early and a request \
         often goes to another member, over another path: {} of {} pairs were served by the same \
         host's member. The distributions agree where single requests do not: the simulator is \
         faithful in distribution, not a replica of one real run.",
        pct(exact_share(&c.requests.diffs_us, REQUEST_CROSSINGS), 1),
        pct(exact_share(same, REQUEST_CROSSINGS), 1),
        same.len(),
        same.len(),
        c.requests.diffs_us.len(),
    ));
    let k = |s: &Side<'_>, key: &str| count(&s.work, key);
    w.paragraph(&format!(
        "**Event trees.** {} of the paired event deliveries differ by exactly the \
         {EVENT_CROSSINGS} ticks. The others went down a tree whose shape differed at that moment: \
         trees follow the overlay's routes, which follow round-trip measurements, and the runs \
         measured and swapped differently ({} proximity swaps in the simulator, {} in the real \
         stack during the workload; {} and {} changes of a tree parent), which shows in the tail \
         (event p99 {} against {} ms, corrected).",
        pct(exact_share(&c.deliveries.diffs_us, EVENT_CROSSINGS), 1),
        k(d, "proximity_swaps"),
        k(r, "proximity_swaps"),
        k(d, "group_parent_changes"),
        k(r, "group_parent_changes"),
        ms(q_ms(&c.real_delays, 0.99)),
        ms(q_ms(&d.delays, 0.99)),
    ));
    w.paragraph(&format!(
        "**Joins: the largest gap.** A join takes {} ms at the median in the real stack against {} \
         ms in the simulator ({}). The simulator's dial to a seed takes one round trip and every \
         later message travels at once, as if links existed; a real link needs a TCP connection \
         (one round trip) and a Noise XX handshake (one more round trip before the first message \
         can go): first to the seed, then between the joiner and every node that answers its \
         join (each node on the join's route sends the joiner its rows) and every leaf-set member \
         it announces itself to; the join completes only when all of those have acknowledged. A \
         few such round trips (the median pair's is {} ms here) make the gap. Results that \
         hinge on join time (cold-start's bound, readiness under churn) are optimistic by about \
         that much at these delays; charging a new link's set-up in the simulator would close \
         most of the gap.",
        ms(q_ms(&r.joins, 0.5)),
        ms(q_ms(&d.joins, 0.5)),
        signed_pct(compare::rel(q_ms(&d.joins, 0.5), q_ms(&r.joins, 0.5))),
        ms(q_ms(&c.pair_delays, 0.5).map(|v| 2.0 * v)),
    ));
    w.paragraph(&format!(
        "**The same protocol.** Over the workload the cores sent {} and {} messages ({}), {} and \
         {} pings, and routed {} and {} messages at {:.3} and {:.3} overlay hops each: the same \
         protocol doing the same work. Not compared, because neither harness models them: CPU \
         time (code runs in zero simulated time in both, so encryption, framing and copying \
         cost nothing but bytes), bandwidth and congestion (turmoil's TCP has neither), loss and \
         retransmission (there is no loss here). Bytes are not compared either: the simulator \
         counts encoded frame bytes per message kind, the real runtime keeps no byte counters.",
        k(d, "messages_sent"),
        k(r, "messages_sent"),
        signed_pct(compare::rel(
            Some(k(d, "messages_sent") as f64),
            Some(k(r, "messages_sent") as f64)
        )),
        k(d, "pings_sent"),
        k(r, "pings_sent"),
        k(d, "routes_delivered"),
        k(r, "routes_delivered"),
        c.overlay_hops[0].unwrap_or(f64::NAN),
        c.overlay_hops[1].unwrap_or(f64::NAN),
    ));
}
