//! Tunnels closed at every moment of their life by either end, or both at once, while data
//! flows (the races the original Iris node was known to lose): each end hears of the tunnel's
//! end exactly once, the data that arrived is a prefix of what was sent, in order, and neither
//! node keeps anything of the tunnel (no end, no memory charged) once the dust settles.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Net, Tamper};
use petal_core::{Config, ConnId, Event, Message, Time};

const OPENER: ConnId = ConnId(1);
const MEMBER: ConnId = ConnId(2);
const TUNNEL: u64 = 1;
const MEMBER_TUNNEL: u64 = 7;

fn setup(seed: u64) -> Net {
    let mut c = Config::default();
    c.tunnel_chunk_limit = 4096;
    c.tunnel_buffer = 16_384;
    c.tunnel_window = 16_384;
    let mut net = Net::with_config(seed, 3, c);
    net.form_ring(&[0, 1, 2]);
    net.run_for(Duration::from_secs(2));
    let now = net.now;
    net.nodes[1].register(now, MEMBER, Some("svc"), 1).unwrap();
    net.nodes[0].register(now, OPENER, None, 1).unwrap();
    net.drain(0);
    net.drain(1);
    net.run_for(Duration::from_secs(3));
    net
}

/// Byte `i` of the stream.
fn byte(i: usize) -> u8 {
    u8::try_from((i * 31 + 7) % 251).unwrap()
}

/// What one end saw of the tunnel.
#[derive(Debug, Default)]
struct End {
    opened: bool,
    offered: Option<u64>,
    /// Terminal events: `TunnelClosed`, `TunnelOpenFailed`, `TunnelOfferClosed`.
    ends: Vec<String>,
    got: Vec<u8>,
}

/// Opens a tunnel and streams into it; the opener closes `opener_close` after the open, the
/// member `member_close` after it accepted (`Some(0)`: it refuses the offer instead).
fn race(seed: u64, opener_close: Option<u64>, member_close: Option<u64>) -> (End, End) {
    race_on(seed, opener_close, member_close, false)
}

/// [`race`], on a network that repeats every 7th tunnel message and delays every 5th by 3 ms
/// (past later ones) when `shaky`.
fn race_on(
    seed: u64,
    opener_close: Option<u64>,
    member_close: Option<u64>,
    shaky: bool,
) -> (End, End) {
    let mut net = setup(seed);
    if shaky {
        let mut k = 0u64;
        net.tamper = Some(Box::new(move |_now: Time, m: &Message| {
            if !matches!(
                m,
                Message::TunnelData { .. }
                    | Message::TunnelAllow { .. }
                    | Message::TunnelClose { .. }
                    | Message::TunnelAccept { .. }
            ) {
                return Tamper::Pass;
            }
            k += 1;
            if k % 7 == 0 {
                Tamper::Duplicate(Duration::from_millis(2))
            } else if k % 5 == 0 {
                Tamper::Delay(Duration::from_millis(3))
            } else {
                Tamper::Pass
            }
        }));
    }
    let t0 = net.now;
    net.nodes[0]
        .tunnel_open(t0, OPENER, TUNNEL, "svc", 2_000)
        .unwrap();
    net.drain(0);
    let (mut opener, mut member) = (End::default(), End::default());
    let (mut seen, mut credit, mut sent) = (net.app_events.len(), 0u64, 0usize);
    let (mut opener_closed, mut member_closed) = (false, false);
    let mut accepted_at: Option<Time> = None;
    let end = t0 + Duration::from_secs(15);
    while net.now < end {
        net.run_for(Duration::from_millis(1));
        let now = net.now;
        let events: Vec<(usize, Event)> = net.app_events[seen..]
            .iter()
            .map(|(_, n, e)| (*n, e.clone()))
            .collect();
        seen = net.app_events.len();
        for (n, e) in events {
            match (n, e) {
                (0, Event::TunnelOpened { .. }) => opener.opened = true,
                (0, Event::TunnelCredit { bytes, .. }) => credit += bytes,
                (0, Event::TunnelClosed { reason, .. }) => opener.ends.push(reason),
                (0, Event::TunnelOpenFailed { .. }) => opener.ends.push("open failed".into()),
                (1, Event::TunnelIncoming { offer, .. }) => {
                    member.offered = Some(offer);
                    if member_close == Some(0) {
                        net.nodes[1].tunnel_refuse(now, MEMBER, offer).unwrap();
                    } else {
                        net.nodes[1]
                            .tunnel_accept(now, MEMBER, offer, MEMBER_TUNNEL)
                            .unwrap();
                        net.nodes[1]
                            .tunnel_allow(now, MEMBER, MEMBER_TUNNEL, 1 << 30)
                            .unwrap();
                        member.opened = true;
                        accepted_at = Some(now);
                    }
                    net.drain(1);
                }
                (1, Event::TunnelData { payload, .. }) => member.got.extend_from_slice(&payload),
                (1, Event::TunnelClosed { reason, .. }) => member.ends.push(reason),
                (1, Event::TunnelOfferClosed { .. }) => member.ends.push("offer closed".into()),
                _ => {}
            }
        }
        if opener.opened && !opener_closed {
            while credit >= 1024 {
                let chunk: Vec<u8> = (sent..sent + 1024).map(byte).collect();
                if net.nodes[0]
                    .tunnel_send(now, OPENER, TUNNEL, 1024, Bytes::from(chunk))
                    .is_err()
                {
                    break;
                }
                credit -= 1024;
                sent += 1024;
            }
        }
        let since = |t: Time| now.saturating_since(t).as_millis();
        if let Some(d) = opener_close
            && !opener_closed
            && since(t0) >= u128::from(d)
        {
            // Refused only when the tunnel already ended at this end.
            let _ = net.nodes[0].tunnel_close(now, OPENER, TUNNEL);
            opener_closed = true;
        }
        if let (Some(d), Some(at)) = (member_close, accepted_at)
            && !member_closed
            && d > 0
            && since(at) >= u128::from(d)
        {
            let _ = net.nodes[1].tunnel_close(now, MEMBER, MEMBER_TUNNEL);
            member_closed = true;
        }
        net.drain(0);
        net.drain(1);
    }
    for i in [0, 1] {
        assert_eq!(
            net.nodes[i].tunnel_count(),
            0,
            "seed {seed} closes {opener_close:?}/{member_close:?}: node {i} kept a tunnel end"
        );
        assert_eq!(
            net.nodes[i].memory_held(),
            0,
            "seed {seed} closes {opener_close:?}/{member_close:?}: node {i} kept memory charged"
        );
    }
    let expected: Vec<u8> = (0..member.got.len()).map(byte).collect();
    assert!(
        member.got == expected && member.got.len() <= sent,
        "seed {seed} closes {opener_close:?}/{member_close:?}: the data is not a prefix of the \
         stream"
    );
    (opener, member)
}

#[test]
fn either_end_closing_at_any_moment_ends_the_tunnel_once_at_each_end() {
    sweep(false);
}

/// The same on a network that repeats and reorders tunnel messages.
#[test]
fn closes_race_repeated_and_reordered_messages_too() {
    sweep(true);
}

fn sweep(shaky: bool) {
    let times = [0u64, 1, 2, 3, 5, 8, 13, 30, 100, 400];
    let mut checked = 0;
    for (k, opener_close) in times.iter().map(|t| Some(*t)).chain([None]).enumerate() {
        for (j, member_close) in times.iter().map(|t| Some(*t)).chain([None]).enumerate() {
            if opener_close.is_none() && member_close.is_none() {
                continue;
            }
            let seed = 100 + (k * 16 + j) as u64;
            let (o, m) = race_on(seed, opener_close, member_close, shaky);
            let case = format!("closes {opener_close:?}/{member_close:?}: {o:?} {m:?}");
            assert_eq!(o.ends.len(), 1, "the opener heard the end once: {case}");
            assert!(
                m.ends.len() <= 1,
                "the member heard the end at most once: {case}"
            );
            if m.offered.is_some() {
                assert_eq!(m.ends.len(), 1, "an offered member heard the end: {case}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 120);
}

/// Both ends close in the same millisecond while chunks are in flight both ways of the
/// window: both hear a graceful close.
#[test]
fn both_ends_closing_at_once_close_gracefully() {
    for seed in 0..20 {
        let (o, m) = race(seed, Some(20), Some(17));
        assert_eq!(o.ends, vec![String::new()], "{o:?}");
        assert_eq!(m.ends, vec![String::new()], "{m:?}");
    }
}
