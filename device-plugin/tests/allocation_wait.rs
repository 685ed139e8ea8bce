//! Allocate waiting for the pod it is for: the allocator sleeps until the pod source says the
//! pods changed, instead of polling the cache (before: every 50 ms for up to 15 s, cloning and
//! sorting the whole cache each time).
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{build_over_source, pod};
use kubesched_device_plugin::pods::{InMemoryPods, PodSource, PodSourceError, PodView};
use tokio::sync::watch;

/// An in-memory pod list that counts how often it is read.
#[derive(Default)]
struct Counted {
    pods: InMemoryPods,
    reads: AtomicUsize,
}

#[tonic::async_trait]
impl PodSource for Counted {
    async fn pods_on_node(&self) -> Result<Vec<PodView>, PodSourceError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.pods.pods_on_node().await
    }

    fn changes(&self) -> watch::Receiver<()> {
        self.pods.changes()
    }
}

const GPU: &str = "nvidia.com/gpu";

#[tokio::test]
async fn waiting_for_a_pod_reads_the_pods_only_when_they_change() {
    let source = Arc::new(Counted::default());
    let (_manager, allocator) = build_over_source(source.clone(), Duration::from_millis(1500));
    let started = Instant::now();
    // No pod waits for this resource: the allocator waits out its period, then follows the
    // kubelet's choice.
    allocator
        .allocate(GPU, &["GPU-0".to_string()])
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let reads = source.reads.load(Ordering::SeqCst);
    assert!(
        reads <= 2,
        "read the pods {reads} times while nothing changed"
    );
}

#[tokio::test]
async fn a_pod_that_arrives_while_waiting_is_served_at_once() {
    let source = Arc::new(Counted::default());
    let (_manager, allocator) = build_over_source(source.clone(), Duration::from_secs(10));
    let arriving = source.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        arriving
            .pods
            .set(vec![pod("late", GPU, 1, Some(&["GPU-3"]))]);
    });
    let started = Instant::now();
    // The kubelet offers GPU-3 (the annotated device) among others.
    let answer = allocator
        .allocate(GPU, &["GPU-3".to_string()])
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "served after {waited:?}"
    );
    assert_eq!(
        answer
            .envs
            .get("NVIDIA_VISIBLE_DEVICES")
            .map(String::as_str),
        Some("GPU-3")
    );
    let reads = source.reads.load(Ordering::SeqCst);
    assert!(reads <= 3, "read the pods {reads} times for one change");
}
