//! The GPU map page in a real headless Chromium against the extender on
//! loopback, serving a fixture cluster offline: the page must draw every GPU
//! and slice, and redraw when a pod is bound through `/bind`; and at 1,000 nodes,
//! the overview (pools, models, a cell per node), a filtered and sorted list and one
//! node's drill-down, with the page's load and refresh time. Screenshots are saved in
//! the test's output folder.
//!
//! Needs Debian's `chromium`, so it is ignored by default; the test script
//! installs Chromium and runs it with `--ignored`, where a missing browser fails.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

mod common;

use std::time::{Duration, Instant};

use common::{FakeBinder, binding, bound, observe, pod};

use k8s_openapi::api::core::v1::Node;
use kubesched_scheduler::extender::Extender;
use kubesched_scheduler::extender::config::{Config, Overrides};
use kubesched_scheduler::extender::server;
use kubesched_scheduler::offline::{self, OfflineBinder};
use kubesched_scheduler::snapshot::Snapshot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|d| Path::new(d).join(name))
                .find(|p| p.exists())
        })
}

/// Runs headless Chromium on `url` with extra arguments; returns stdout.
fn browse(chrome: &Path, profile: &Path, url: &str, extra: &[&str]) -> String {
    let out = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        // Let the page's fetch and first render finish before dumping.
        .arg("--virtual-time-budget=4000")
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium; scripts/test.sh installs it and runs this with --ignored"]
async fn gpu_map_draws_the_cluster_and_follows_binds() {
    let Some(chrome) = chromium() else {
        panic!("no chromium on PATH: install it (scripts/test.sh does)");
    };
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/snapshot.json");
    let snapshot = Snapshot::read(Path::new(fixture)).expect("fixture");
    let (binder, updates) = OfflineBinder::new(&snapshot);
    let ext = Arc::new(
        Extender::new(
            Config::load(None, &Overrides::default()).expect("config"),
            binder,
        )
        .expect("extender"),
    );
    snapshot.load_into(&ext);
    ext.set_ready(true);
    tokio::spawn(offline::apply_updates(ext.clone(), updates));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server::serve(ext.clone(), listener, std::future::pending()));

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&out_dir).expect("output folder");
    let profile = out_dir.join("chromium-profile");
    let url = format!("http://{addr}/ui");
    let chrome_c = chrome.clone();
    let (p, u) = (profile.clone(), url.clone());
    let before = tokio::task::spawn_blocking(move || browse(&chrome_c, &p, &u, &["--dump-dom"]))
        .await
        .expect("browse");
    assert_eq!(before.matches("class=\"gpu\"").count(), 5, "5 GPUs drawn");
    assert_eq!(
        before.matches("data-position=").count(),
        16 + 8,
        "two 8-position H100s and one A100"
    );
    assert_eq!(
        before.matches("data-state=\"used\"").count(),
        4 + 1 + 4 + 1,
        "3g+1g on gpu-a, 3g on the A100, one L40S"
    );
    assert_eq!(
        before.matches("data-state=\"idle\"").count(),
        4,
        "the A100's unused static 3g"
    );
    assert!(before.contains("data-node=\"gpu-a\"") && before.contains("NUMA 1"));

    // Bind the pending 4g pod through the extender: it lands on gpu-a's empty GPU.
    let body = r#"{"PodName":"pending-4g","PodNamespace":"inference","PodUID":"uid-pending-4g","Node":"gpu-a"}"#;
    let reply = post(addr, "/bind", body).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        !reply.contains("\"Error\":\"") || reply.contains("\"Error\":\"\""),
        "bind refused: {reply}"
    );

    let shot = out_dir.join("gpu-map.png");
    let (c, p, u, s) = (chrome.clone(), profile.clone(), url.clone(), shot.clone());
    let after = tokio::task::spawn_blocking(move || {
        let dom = browse(&c, &p, &u, &["--dump-dom"]);
        browse(
            &c,
            &p,
            &u,
            &[
                &format!("--screenshot={}", s.display()),
                "--window-size=1280,900",
            ],
        );
        dom
    })
    .await
    .expect("browse");
    assert_eq!(
        after.matches("data-state=\"used\"").count(),
        10 + 4,
        "the 4g's four positions are now used"
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    eprintln!("GPU map screenshot: {}", shot.display());
}

/// The wall time of one headless Chromium run.
fn timed_browse(chrome: &Path, profile: &Path, url: &str, extra: &[&str]) -> (String, Duration) {
    let start = Instant::now();
    let dom = browse(chrome, profile, url, extra);
    (dom, start.elapsed())
}

/// `n` nodes of `model` in pool `pool`, named `<pool>-NNNN`.
fn pool_nodes(
    pool: &str,
    n: usize,
    model: &str,
    mig: Option<&str>,
    instances: &[(&str, u8)],
) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let gpus: Vec<(&str, Option<&str>, u32)> =
                (0..8).map(|g| (model, mig, u32::from(g >= 4))).collect();
            let mut node = common::node(&format!("{pool}-{i:04}"), &gpus, instances);
            node.metadata.labels =
                Some([("kubesched.ai/pool".to_string(), pool.to_string())].into());
            node
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium; scripts/test.sh installs it and runs this with --ignored"]
async fn gpu_map_serves_a_thousand_nodes_with_an_overview_and_a_drill_down() {
    let Some(chrome) = chromium() else {
        panic!("no chromium on PATH: install it (scripts/test.sh does)");
    };
    // 1,000 nodes of 8 GPUs in three pools.
    let a100_layout = [("3g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)];
    let mut nodes = pool_nodes("h100-mig", 400, "H100-80GB", Some("dynamic"), &[]);
    nodes.extend(pool_nodes(
        "a100-static",
        100,
        "A100-80GB",
        Some("static"),
        &a100_layout,
    ));
    nodes.extend(pool_nodes("l40s", 500, "L40S", None, &[]));
    let config =
        Config::from_yaml("pricing:\n  gpuHourly: {H100-80GB: 4.1, A100-80GB: 2.6, L40S: 1.2}\n")
            .expect("config");
    let binder = Arc::new(FakeBinder::default());
    let ext = Arc::new(Extender::new(config, binder.clone()).expect("extender"));
    {
        let key = ext.inventory_key().to_string();
        ext.state_mut().reset_nodes(
            nodes
                .iter()
                .filter_map(|n| kubesched_scheduler::extender::reflectors::node_base(n, &key))
                .collect(),
        );
    }
    ext.set_ready(true);
    // Occupancy through the real bind: MIG pods on the H100s, whole GPUs on the L40S nodes,
    // static slices on the A100s; the watch then shows each bound pod.
    let mut bound_pods = Vec::new();
    for i in 0..3000usize {
        let (resource, node) = match i % 3 {
            0 => (
                [
                    "nvidia.com/mig-1g.10gb",
                    "nvidia.com/mig-3g.40gb",
                    "nvidia.com/mig-2g.20gb",
                ][i % 9 / 3],
                format!("h100-mig-{:04}", i % 400),
            ),
            1 => ("nvidia.com/gpu", format!("l40s-{:04}", i % 500)),
            _ => (
                "nvidia.com/mig-3g.40gb",
                format!("a100-static-{:04}", i % 100),
            ),
        };
        let p = pod(
            &format!("p{i}"),
            &format!("uid-{i}"),
            &[(resource, "1"), ("cpu", "1")],
        );
        observe(&ext, &p);
        let reply = ext.bind(&binding(&p, &node)).await;
        if reply.error.is_empty() {
            let annotation = binder
                .annotation_of(&format!("uid-{i}"))
                .expect("annotation");
            bound_pods.push(bound(&p, &node, &annotation));
        }
    }
    assert!(bound_pods.len() > 2500, "{} pods bound", bound_pods.len());
    // As the pod watch's list shows them: the target workload is learned from them too.
    ext.load_pods(
        bound_pods
            .iter()
            .filter_map(|p| kubesched_scheduler::extender::reflectors::pod_record(&ext, p))
            .collect(),
    );
    assert_eq!(ext.state().reservation_count(), 0);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server::serve(ext.clone(), listener, std::future::pending()));

    // What the page fetches every refresh.
    let fetched = Instant::now();
    let body = get(addr, "/ui/data").await;
    let data_ms = fetched.elapsed().as_secs_f64() * 1e3;
    assert!(
        body.starts_with("HTTP/1.1 200"),
        "{}",
        &body[..200.min(body.len())]
    );

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-1000");
    std::fs::create_dir_all(&out_dir).expect("output folder");
    let profile = out_dir.join("chromium-profile");
    let base = format!("http://{addr}");
    let chrome_c = chrome.clone();
    let shots_dir = out_dir.clone();
    let (overview, drill, timings) = tokio::task::spawn_blocking(move || {
        let run = |path: &str, extra: &[&str]| {
            timed_browse(&chrome_c, &profile, &format!("{base}{path}"), extra)
        };
        // A first run makes the browser profile; it is not timed.
        run("/healthz", &["--dump-dom"]);
        // The median of three wall times: this machine's timings spread widely.
        let median = |path: &str, extra: &[&str]| {
            let mut runs: Vec<(String, Duration)> = (0..3).map(|_| run(path, extra)).collect();
            runs.sort_by_key(|r| r.1);
            runs.swap_remove(1)
        };
        // Chromium's own start, on a page that draws nothing.
        let (_, blank) = median("/healthz", &["--dump-dom"]);
        // The first render (the page refreshes every 2 s of virtual time), then four more.
        let (overview, load) = median("/ui", &["--dump-dom", "--virtual-time-budget=1500"]);
        let (_, five) = median("/ui", &["--dump-dom", "--virtual-time-budget=9500"]);
        let (drill, _) = run(
            "/ui#pool=h100-mig&sort=stranded&node=h100-mig-0042",
            &["--dump-dom"],
        );
        let shots = [
            ("overview.png", "/ui"),
            (
                "drill-down.png",
                "/ui#pool=h100-mig&sort=stranded&node=h100-mig-0042",
            ),
        ];
        for (file, path) in shots {
            let shot = shots_dir.join(file);
            run(
                path,
                &[
                    &format!("--screenshot={}", shot.display()),
                    "--window-size=1400,1100",
                ],
            );
            let png = std::fs::read(&shot).expect("screenshot written");
            assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{file}");
        }
        (overview, drill, (blank, load, five))
    })
    .await
    .expect("browse");

    // The overview: every node a cell, the three pools and models, the first page of the list,
    // and no GPU drawn in full until a node is picked.
    assert!(overview.contains("<b>1000</b>nodes"), "totals");
    assert_eq!(overview.matches("data-cell=").count(), 1000);
    for pool in ["h100-mig", "a100-static", "l40s"] {
        assert!(
            overview.contains(&format!("data-pool=\"{pool}\"")),
            "{pool}"
        );
    }
    assert_eq!(overview.matches("data-row=").count(), 100);
    assert!(overview.contains("1000 of 1000 nodes"));
    assert_eq!(overview.matches("class=\"gpu\"").count(), 0);
    assert!(overview.contains("idle + stranded cost/h"));
    assert_eq!(
        overview.matches("class=\"item\"").count(),
        8,
        "legend: 5 sizes, free, idle, unhealthy"
    );
    // The drill-down: the pool's 400 nodes sorted by stranded share, and one node's 8 GPUs.
    assert!(drill.contains("400 of 1000 nodes"), "filtered by pool");
    assert!(drill.contains("id=\"detail-node\"") && drill.contains("data-node=\"h100-mig-0042\""));
    assert_eq!(
        drill.matches("class=\"gpu\"").count(),
        8,
        "the picked node's GPUs"
    );
    let stranded: Vec<f64> = drill
        .split("data-row=")
        .skip(1)
        .take(20)
        .filter_map(|r| r.split("<td>").nth(6)?.split('<').next()?.parse().ok())
        .collect();
    assert_eq!(stranded.len(), 20, "20 rows read");
    assert!(
        stranded.windows(2).all(|w| w[0] >= w[1]),
        "sorted by stranded share: {stranded:?}"
    );

    let (blank, load, five) = timings;
    eprintln!(
        "GPU map at 1000 nodes: /ui/data {:.0} KiB built and sent in {data_ms:.0} ms; page load {:.2} s \
         (Chromium start to first render, median of 3; Chromium alone {:.2} s); one refresh {:.2} s \
         (fetch, parse, redraw: four more refreshes' extra time over four); screenshots in {}",
        body.len() as f64 / 1024.0,
        load.as_secs_f64(),
        blank.as_secs_f64(),
        (five.saturating_sub(load)).as_secs_f64() / 4.0,
        out_dir.display()
    );
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
