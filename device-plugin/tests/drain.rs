//! The agent's inventory says `draining` whenever the kubelet cannot hand its devices: before
//! its plugins are registered, and on shutdown, where the plugins keep serving for the grace
//! period after that document is written (pods bound just before are still admitted).
// A test states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{FIXTURE, FakeKubelet, TempDir};
use kubesched_core::inventory::NodeInventory;
use kubesched_device_plugin::discovery::FakeInventory;
use kubesched_device_plugin::pods::InMemoryPods;
use kubesched_device_plugin::publish::{NodeAnnotator, PublishError};

/// Records every inventory written, with whether our plugin sockets existed at that moment.
struct Recorder {
    plugin_dir: std::path::PathBuf,
    writes: Mutex<Vec<(NodeInventory, bool)>>,
}

fn our_sockets(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".sock") && name != "kubelet.sock"
        })
        .count()
}

#[tonic::async_trait]
impl NodeAnnotator for Recorder {
    async fn annotate(&self, key: &str, value: &str) -> Result<(), PublishError> {
        assert_eq!(key, "kubesched.ai/inventory");
        let serving = our_sockets(&self.plugin_dir) > 0;
        let inventory = NodeInventory::from_json(value).unwrap();
        self.writes.lock().unwrap().push((inventory, serving));
        Ok(())
    }
}

impl Recorder {
    fn last(&self) -> Option<(NodeInventory, bool)> {
        self.writes.lock().unwrap().last().cloned()
    }

    async fn until(&self, what: &str, check: impl Fn(&NodeInventory) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.last().is_some_and(|(inv, _)| check(&inv)) {
            assert!(
                Instant::now() < deadline,
                "no inventory {what}: {:?}",
                self.last()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn draining_until_registered_and_on_shutdown_while_the_plugins_still_serve() {
    let dir = TempDir::new();
    let fake = FakeInventory::open(Path::new(FIXTURE)).unwrap();
    let recorder = Arc::new(Recorder {
        plugin_dir: dir.0.clone(),
        writes: Mutex::new(Vec::new()),
    });
    let grace = Duration::from_millis(400);
    let mut agent = common::test_agent(&dir.0, fake, Arc::new(InMemoryPods::default()));
    agent.paths.retry_interval = Duration::from_millis(100);
    agent.publisher = Some((recorder.clone(), "kubesched.ai/inventory".into()));
    agent.drain_grace = grace;
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(agent.run(stop.clone()));

    // No kubelet yet: the GPUs are published, draining (nothing may be placed here yet).
    recorder
        .until("published", |inv| !inv.gpus.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(recorder.last().unwrap().0.draining, "{:?}", recorder.last());

    // The kubelet comes: once every resource is registered the inventory serves.
    let (tx, _registrations) = tokio::sync::mpsc::unbounded_channel();
    let _kubelet = FakeKubelet::start(&dir.0, tx);
    recorder.until("serving", |inv| !inv.draining).await;

    // Shutdown: draining is written while the plugins still serve, and they keep serving for
    // the grace period.
    let stopped = Instant::now();
    stop.cancel();
    recorder.until("draining again", |inv| inv.draining).await;
    let (_, serving) = recorder.last().unwrap();
    assert!(
        serving,
        "the plugins stopped before the draining inventory was written"
    );
    tokio::time::sleep(grace / 2).await;
    assert!(
        our_sockets(&dir.0) > 0,
        "the plugins stopped during the grace period"
    );
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        stopped.elapsed() >= grace,
        "stopped after {:?}, before the grace period",
        stopped.elapsed()
    );
    assert_eq!(our_sockets(&dir.0), 0, "sockets removed once stopped");
}
