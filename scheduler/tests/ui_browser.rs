//! The GPU map page in a real headless Chromium against the extender on
//! loopback, serving a fixture cluster offline: the page must draw every GPU
//! and slice, and redraw when a pod is bound through `/bind`. A screenshot
//! is saved in the test's output folder.
//!
//! Needs Debian's `chromium`, so it is ignored by default; the test script
//! installs Chromium and runs it with `--ignored`, where a missing browser fails.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

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
