//! `petald --busy-poll-us`: the node task polls for input a while before it sleeps. With it on,
//! requests are answered as before, and once the traffic stops the daemon goes back to
//! sleeping: an idle daemon does not keep a CPU busy.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use petal_client::{Connection, ServiceHandler, register};

struct Echo;

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }
}

/// User and system CPU time of process `pid` so far, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_polling_daemon_answers_and_sleeps_once_idle() {
    let d = Daemon::start(&Spec {
        extra: vec!["--busy-poll-us".into(), "2000".into()],
        ..Spec::alone()
    })
    .await;
    let _svc = register(d.port, "echo", Echo).await.expect("register");
    let client = Connection::connect(d.port).await.expect("connect");
    for i in 0..500u32 {
        let payload = Bytes::from(i.to_be_bytes().to_vec());
        let got = within(
            Duration::from_secs(10),
            "a reply",
            client.request("echo", payload.clone(), Duration::from_secs(5)),
        )
        .await
        .expect("answered");
        assert_eq!(got, payload, "request {i}");
    }
    // Idle now (the connections stay open): polling ends 2 ms after the last input. Over 2 s
    // a daemon that kept polling would use about 200 ticks; an idle one uses next to none
    // (its timers).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(d.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(d.pid()) - before;
    assert!(
        used < 20,
        "an idle daemon used {used} ticks of CPU in 2 s with --busy-poll-us"
    );
    // And it still answers after sleeping.
    let got = client
        .request("echo", Bytes::from_static(b"again"), Duration::from_secs(5))
        .await
        .expect("answered after idling");
    assert_eq!(&got[..], b"again");
}
