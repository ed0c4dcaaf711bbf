//! The dashboard (`GET /`) in a real browser: headless Chromium (Debian's `chromium`) loads it
//! from a node's admin API; the page shows the node's id, its links, and charts that fill as
//! it polls. Skipped when Chromium is missing, unless `PETAL_CHROMIUM=1` (CI) says it must
//! run. Writes a screenshot to `target/test-figures/dashboard.png`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use petal_admin::AdminOptions;
use petal_node::TokioNet;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

fn options(n: u64, seeds: Vec<SocketAddr>) -> petal_node::Options {
    common::options(n, 0x5b, seeds)
}

/// Runs headless Chromium on `url` with `args`, letting the page's timers run for `budget` of
/// virtual time; returns its stdout.
async fn browse(browser: &str, url: String, args: Vec<String>, budget: Duration) -> String {
    let browser = browser.to_string();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-dev-shm-usage",
                &format!("--virtual-time-budget={}", budget.as_millis()),
            ])
            .args(&args)
            .arg(&url)
            .output()
            .expect("running chromium");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_node_and_its_charts_update_in_a_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("PETAL_CHROMIUM").as_deref() != Ok("1"),
            "PETAL_CHROMIUM=1 but no chromium is installed"
        );
        eprintln!("chromium not installed: skipped");
        return;
    };
    let a = petal_node::spawn(TokioNet, options(1, vec![]))
        .await
        .unwrap();
    let b = petal_node::spawn(TokioNet, options(2, vec![a.info().addr]))
        .await
        .unwrap();
    let c = petal_node::spawn(TokioNet, options(3, vec![a.info().addr]))
        .await
        .unwrap();
    let admin = petal_admin::start(
        a.stats_source(),
        AdminOptions::new("127.0.0.1:0".parse().unwrap(), "test"),
    )
    .await
    .unwrap();
    let url = format!("http://{}/", admin.local_addr());
    // Some traffic for the charts: an application publishing on a topic it subscribes to.
    let app = petal_client::Connection::connect_addr(a.relay_addrs()[0])
        .await
        .unwrap();
    app.subscribe("ticks", |_: bytes::Bytes| {}).await.unwrap();
    let publisher = tokio::spawn(async move {
        loop {
            let _ = app.publish("ticks", bytes::Bytes::from_static(b"t")).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let dom = browse(
        browser,
        url.clone(),
        vec!["--dump-dom".into()],
        Duration::from_secs(9),
    )
    .await;
    let id = a.info().id.to_string();
    assert!(
        dom.contains(&format!("<code id=\"node-id\">{id}</code>")),
        "the node id is not on the page:\n{dom}"
    );
    assert!(
        dom.contains("<p id=\"error\"></p>"),
        "the page shows an error:\n{dom}"
    );
    // Each chart holds one sample per poll after the first (rates need two readings): the
    // page polled more than once, and the charts moved.
    let points = |name: &str| -> usize {
        let tag = format!("id=\"chart-{name}\" data-points=\"");
        let at = dom.find(&tag).unwrap_or_else(|| panic!("no chart {name}")) + tag.len();
        dom[at..].split('"').next().unwrap().parse().unwrap()
    };
    for chart in ["requests", "events", "drops"] {
        assert!(points(chart) >= 2, "chart {chart} did not update:\n{dom}");
    }
    assert!(points("queue") >= 3);
    // The links table lists both peers, and the ring draws the tables' entries.
    for peer in [&b, &c] {
        let short = &peer.info().id.to_string()[..12];
        assert!(dom.contains(short), "peer {short} not listed");
    }
    assert!(
        dom.matches("class=\"entry\"").count() >= 2,
        "no entries on the ring"
    );

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-figures");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        browser,
        url,
        vec![
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,860".into(),
        ],
        Duration::from_secs(9),
    )
    .await;
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000));
    publisher.abort();
    admin.stop();
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
