//! The network-namespace LAN helper itself (`common/netns.rs`): unicast and multicast between
//! node namespaces, cutting a node off, partitions that heal, and packet capture. Needs root and
//! iproute2 (tests skip otherwise); the capture test also needs tcpdump, `ping` is used when
//! present. The small network programs run as helpers: this test binary re-executed inside a
//! namespace (see `Lan::helper`), so no python or socat is needed.

#[path = "common/netns.rs"]
mod netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netns::{Lan, find_program, helper_args, pcap_contains, pcap_packets};

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 80, 80);
const MCAST_PORT: u16 = 55557;
const TCP_PORT: u16 = 55558;

/// Marks the lines helpers print for the parent (libtest prints its own lines around them).
const READY: &str = "NETNS-READY";
const GOT: &str = "NETNS-GOT ";

// ---------------------------------------------------------------------------------------------
// Helpers, run inside namespaces (no-ops in an ordinary run).

/// Joins GROUP on MCAST_PORT, prints READY, then prints every datagram received within the
/// given number of milliseconds (at most `args[1]` of them).
#[test]
fn helper_mcast_recv() {
    let Some(args) = helper_args("helper_mcast_recv") else {
        return;
    };
    let (millis, max): (u64, usize) = (args[0].parse().unwrap(), args[1].parse().unwrap());
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, MCAST_PORT)).unwrap();
    // Interface "any": the kernel picks it by routing the group (224.0.0.0/4 via eth0).
    socket
        .join_multicast_v4(&GROUP, &Ipv4Addr::UNSPECIFIED)
        .unwrap();
    println!("\n{READY}");
    let deadline = Instant::now() + Duration::from_millis(millis);
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while got < max {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                println!("\n{GOT}{} {from}", String::from_utf8_lossy(&buf[..n]));
                got += 1;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Sends `args[0]` to GROUP:MCAST_PORT three times, 20 ms apart.
#[test]
fn helper_mcast_send() {
    let Some(args) = helper_args("helper_mcast_send") else {
        return;
    };
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    socket.set_multicast_ttl_v4(1).unwrap();
    for _ in 0..3 {
        if let Err(e) = socket.send_to(args[0].as_bytes(), (GROUP, MCAST_PORT)) {
            println!("\n{GOT}send error: {e}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Accepts one TCP connection on TCP_PORT (after printing READY) and prints what it sent.
#[test]
fn helper_tcp_accept() {
    let Some(_) = helper_args("helper_tcp_accept") else {
        return;
    };
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, TCP_PORT)).unwrap();
    println!("\n{READY}");
    let (mut stream, from) = listener.accept().unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    println!("\n{GOT}{text} {}", from.ip());
}

/// Connects to `args[0]`:TCP_PORT and sends `args[1]`.
#[test]
fn helper_tcp_connect() {
    let Some(args) = helper_args("helper_tcp_connect") else {
        return;
    };
    let ip: Ipv4Addr = args[0].parse().unwrap();
    let addr = SocketAddrV4::new(ip, TCP_PORT).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap();
    stream.write_all(args[1].as_bytes()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The parent's side.

/// A helper process whose marked output lines arrive on a channel; killed when dropped.
struct Helper {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn start(lan: &Lan, i: usize, name: &str, args: &[&str]) -> Helper {
        let mut child = lan
            .helper(i, name, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                for mark in [READY, GOT] {
                    if let Some(at) = line.find(mark) {
                        let _ = tx.send(line[at..].to_string());
                    }
                }
            }
        });
        Helper { child, lines }
    }

    /// Waits for the READY line.
    fn ready(self) -> Helper {
        match self.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line == READY => self,
            other => panic!("helper not ready: {other:?}"),
        }
    }

    /// Waits for the helper to exit successfully; the payloads of its GOT lines.
    fn finish(mut self) -> Vec<String> {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "helper failed: {status}");
        self.lines
            .try_iter()
            .filter_map(|l| l.strip_prefix(GOT).map(str::to_string))
            .collect()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts receivers on `to` (each waits up to `millis` for one datagram), sends `payload` from
/// `from`, and returns which receivers got it.
fn multicast(lan: &Lan, from: usize, to: &[usize], payload: &str, millis: u64) -> Vec<usize> {
    let receivers: Vec<(usize, Helper)> = to
        .iter()
        .map(|&i| {
            let millis = millis.to_string();
            (
                i,
                Helper::start(lan, i, "helper_mcast_recv", &[&millis, "1"]),
            )
        })
        .collect();
    let receivers: Vec<(usize, Helper)> =
        receivers.into_iter().map(|(i, h)| (i, h.ready())).collect();
    let sent = Helper::start(lan, from, "helper_mcast_send", &[payload]).finish();
    assert!(sent.is_empty(), "sending from node {from}: {sent:?}");
    let sender = lan.ip_of(from).to_string();
    receivers
        .into_iter()
        .filter_map(|(i, h)| {
            let got = h.finish();
            for line in &got {
                assert!(line.starts_with(&format!("{payload} {sender}:")), "{line}");
            }
            (!got.is_empty()).then_some(i)
        })
        .collect()
}

fn host_links() -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    // Names and indexes only: counters and states of real interfaces change by themselves.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(':').take(2).collect::<Vec<_>>().join(":"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn nodes_reach_each_other_by_unicast_and_nothing_else() {
    if !netns::available() {
        return;
    }
    let before = host_links();
    let started = Instant::now();
    let Some(lan) = Lan::new("ptl-uni", 3) else {
        return;
    };
    eprintln!("3-node LAN built in {:?}", started.elapsed());
    assert_eq!(host_links(), before, "the host's interfaces changed");
    assert_ne!(lan.ip_of(0), lan.ip_of(1));
    assert_eq!(lan.ns(2), "ptl-uni-n2");

    // No default route: nothing can leave the LAN.
    let routes = lan
        .command(0, "ip")
        .args(["route", "show"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(!routes.contains("default"), "{routes}");
    assert!(routes.contains("224.0.0.0/4 dev eth0"), "{routes}");

    if find_program("ping").is_some() {
        let out = lan
            .command(0, "ping")
            .args(["-c1", "-W1", &lan.ip_of(2).to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Outside the LAN: no route at all.
        let out = lan
            .command(0, "ping")
            .args(["-c1", "-W1", "10.255.255.1"])
            .output()
            .unwrap();
        assert!(!out.status.success());
    } else {
        eprintln!("ping is not installed: checking unicast with TCP only");
    }

    let server = Helper::start(&lan, 1, "helper_tcp_accept", &[]).ready();
    Helper::start(
        &lan,
        0,
        "helper_tcp_connect",
        &[&lan.ip_of(1).to_string(), "hello"],
    )
    .finish();
    assert_eq!(server.finish(), [format!("hello {}", lan.ip_of(0))]);

    let ns = [lan.ns(0).to_string(), lan.bridge_ns().to_string()];
    drop(lan);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for ns in ns {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&ns)),
            "{list}"
        );
    }
    assert_eq!(host_links(), before, "the host's interfaces changed");
}

#[test]
fn multicast_reaches_every_node() {
    let Some(lan) = Lan::new("ptl-mc", 3) else {
        return;
    };
    let started = Instant::now();
    assert_eq!(multicast(&lan, 0, &[1, 2], "beacon-a", 3000), [1, 2]);
    eprintln!(
        "one multicast round (3 helper processes) took {:?}",
        started.elapsed()
    );
    assert_eq!(multicast(&lan, 2, &[0, 1], "beacon-b", 3000), [0, 1]);
}

#[test]
fn a_node_cut_off_hears_nothing_until_reconnected() {
    let Some(lan) = Lan::new("ptl-cut", 3) else {
        return;
    };
    lan.set_link(1, false);
    let carrier = lan
        .command(1, "ip")
        .args(["link", "show", "eth0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&carrier.stdout).contains("NO-CARRIER"));
    assert_eq!(multicast(&lan, 0, &[1, 2], "while-cut", 500), [2]);
    // What the node cut off sends goes nowhere (the send itself succeeds).
    assert_eq!(
        multicast(&lan, 1, &[0, 2], "from-cut", 500),
        [] as [usize; 0]
    );
    lan.set_link(1, true);
    assert_eq!(multicast(&lan, 0, &[1, 2], "reconnected", 3000), [1, 2]);
    assert_eq!(multicast(&lan, 1, &[0, 2], "back", 3000), [0, 2]);
}

#[test]
fn split_groups_do_not_hear_each_other_until_healed() {
    let Some(lan) = Lan::new("ptl-split", 4) else {
        return;
    };
    lan.split(&[0, 1]);
    assert_eq!(multicast(&lan, 0, &[1, 2, 3], "split-a", 500), [1]);
    assert_eq!(multicast(&lan, 3, &[0, 1, 2], "split-b", 500), [2]);
    // Unicast does not cross either.
    let server = Helper::start(&lan, 2, "helper_tcp_accept", &[]).ready();
    let client = lan
        .helper(0, "helper_tcp_connect", &[&lan.ip_of(2).to_string(), "x"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!client.success(), "TCP crossed the partition");
    drop(server);

    let started = Instant::now();
    lan.heal();
    eprintln!("heal took {:?}", started.elapsed());
    assert_eq!(multicast(&lan, 0, &[1, 2, 3], "healed-a", 3000), [1, 2, 3]);
    assert_eq!(multicast(&lan, 3, &[0, 1, 2], "healed-b", 3000), [0, 1, 2]);
}

#[test]
fn capture_records_what_was_sent() {
    let Some(lan) = Lan::new("ptl-cap", 2) else {
        return;
    };
    let started = Instant::now();
    let capture = match lan.capture(1) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    eprintln!("tcpdump capturing after {:?}", started.elapsed());
    assert_eq!(multicast(&lan, 0, &[1], "captured-payload", 3000), [1]);
    let pcap = capture.stop();
    assert!(pcap_contains(&pcap, b"captured-payload"));
    let packets = pcap_packets(&pcap);
    let ours: Vec<&Vec<u8>> = packets
        .iter()
        .filter(|p| p.windows(16).any(|w| w == b"captured-payload"))
        .collect();
    // Three copies were sent; each is an Ethernet frame to the group's MAC 01:00:5e:7f:50:50
    // from 10.X.Y.1 (IPv4 source address at offset 14 + 12).
    assert_eq!(ours.len(), 3, "{} packets captured", packets.len());
    for p in ours {
        assert_eq!(p[..6], [0x01, 0x00, 0x5e, 0x7f, 0x50, 0x50]);
        assert_eq!(p[26..30], lan.ip_of(0).octets());
    }

    // A filtered capture sees only what matches.
    let capture = lan.capture_filter(1, "udp port 9").unwrap();
    assert_eq!(multicast(&lan, 0, &[1], "not-port-9", 3000), [1]);
    let pcap = capture.stop();
    assert!(pcap_packets(&pcap).is_empty());
}

#[test]
fn leftovers_of_a_crashed_run_are_removed() {
    if !netns::available() {
        return;
    }
    // A "crashed run": namespaces with this prefix that nobody deletes.
    Lan::new("ptl-left", 2).unwrap().abandon();
    let lan = Lan::new("ptl-left", 2).unwrap();
    assert_eq!(multicast(&lan, 0, &[1], "fresh", 3000), [1]);
}

#[test]
fn a_second_live_lan_of_one_prefix_in_one_process_is_refused() {
    if !netns::available() {
        return;
    }
    // Its machine-wide lock is this process's already: waiting for it would never end.
    let _first = Lan::new("ptl-twice", 1).unwrap();
    let second = std::panic::catch_unwind(|| Lan::new("ptl-twice", 1));
    assert!(second.is_err(), "a second live LAN of one prefix was made");
}
