//! Timing pods from creation to binding: a watch that notes when each pod is first seen with a
//! node, a burst created by concurrent clients, and one-at-a-time probes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use kubesched_e2e::pods;
use tokio::sync::Notify;
use tokio_stream::StreamExt as _;

use crate::workload::SCENARIO;

/// A burst gives up when no pod has been bound for this long.
const STALL: Duration = Duration::from_secs(90);

/// When each of the benchmark's pods was first seen bound, from one watch.
pub struct BindWatch {
    bound: Arc<Mutex<HashMap<String, Instant>>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl BindWatch {
    /// Starts watching the benchmark's pods; returns once the watch's first list is done, so
    /// no binding after this call is missed.
    pub async fn start(api: Api<Pod>) -> anyhow::Result<BindWatch> {
        let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let changed = Arc::new(Notify::new());
        let listed = Arc::new(AtomicBool::new(false));
        let config = watcher::Config::default().labels(&format!("{}={SCENARIO}", pods::LABEL));
        let (b, c, l) = (bound.clone(), changed.clone(), listed.clone());
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher::watcher(api, config));
            while let Some(event) = events.next().await {
                let pod = match event {
                    Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
                    Ok(Event::InitDone) => {
                        l.store(true, Ordering::Release);
                        c.notify_waiters();
                        continue;
                    }
                    Ok(_) => continue,
                    Err(error) => {
                        eprintln!("[perf] watch error (it retries): {error}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                if pods::node_name(&pod).is_none() {
                    continue;
                }
                let now = Instant::now();
                let name = pod.metadata.name.unwrap_or_default();
                let mut map = b.lock().unwrap_or_else(|p| p.into_inner());
                if let std::collections::hash_map::Entry::Vacant(first) = map.entry(name) {
                    first.insert(now);
                    drop(map);
                    c.notify_waiters();
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while !listed.load(Ordering::Acquire) {
            anyhow::ensure!(Instant::now() < deadline, "the pod watch did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(BindWatch {
            bound,
            changed,
            task,
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When `name` was first seen bound.
    pub fn bound_at(&self, name: &str) -> Option<Instant> {
        self.map().get(name).copied()
    }

    /// How many of `names` are bound.
    pub fn count(&self, names: &[String]) -> usize {
        let map = self.map();
        names.iter().filter(|n| map.contains_key(*n)).count()
    }

    /// Waits until `name` is bound, at most `timeout`.
    pub async fn wait(&self, name: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(at) = self.bound_at(name) {
                return Ok(at);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(!left.is_zero(), "{name} not bound within {timeout:?}");
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

impl Drop for BindWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one burst measured.
pub struct Burst {
    /// Pods created.
    pub created: usize,
    /// Pods bound before the end (all, unless the scheduler stalled).
    pub bound: usize,
    /// From the first create sent to the last binding seen.
    pub span: Duration,
    /// Creation (request sent) to binding seen, per bound pod, sorted.
    pub latencies: Vec<Duration>,
}

impl Burst {
    /// Bound pods per second over the burst.
    pub fn pods_per_second(&self) -> f64 {
        self.bound as f64 / self.span.as_secs_f64().max(1e-9)
    }
}

/// Creates `specs` with `creators` concurrent clients, as fast as the API server takes them,
/// and waits until all are bound (or none has been for [`STALL`]).
pub async fn burst(
    api: &Api<Pod>,
    watch: &BindWatch,
    specs: Vec<Pod>,
    creators: usize,
) -> anyhow::Result<Burst> {
    let names: Vec<String> = specs
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    let specs = Arc::new(specs);
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; specs.len()]));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..creators.max(1) {
        let (api, specs, sent, next) = (api.clone(), specs.clone(), sent.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(pod) = specs.get(i) else {
                    return anyhow::Ok(());
                };
                let at = Instant::now();
                api.create(&PostParams::default(), pod).await?;
                sent.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(at);
            }
        });
    }
    let mut last_progress = (0, Instant::now());
    let mut last_report = Instant::now();
    let mut creating = true;
    loop {
        if creating && tasks.is_empty() {
            creating = false;
            eprintln!(
                "[perf] {} pods created in {:.1} s",
                names.len(),
                start.elapsed().as_secs_f64()
            );
        }
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
        let bound = watch.count(&names);
        if bound == names.len() {
            break;
        }
        if bound > last_progress.0 {
            last_progress = (bound, Instant::now());
        } else if !creating && last_progress.1.elapsed() > STALL {
            eprintln!("[perf] stalled: {bound} of {} bound", names.len());
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!("[perf]   {bound} of {} bound", names.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut latencies = Vec::new();
    let mut last = start;
    for (name, sent) in names.iter().zip(&sent) {
        if let (Some(sent), Some(bound)) = (sent, watch.bound_at(name)) {
            latencies.push(bound.saturating_duration_since(*sent));
            last = last.max(bound);
        }
    }
    latencies.sort();
    Ok(Burst {
        created: names.len(),
        bound: latencies.len(),
        span: last.saturating_duration_since(start),
        latencies,
    })
}

/// Creates `specs` one at a time, each after the previous one is bound: the latency of a
/// scheduler with nothing else queued. Sorted.
pub async fn one_at_a_time(
    api: &Api<Pod>,
    watch: &BindWatch,
    specs: Vec<Pod>,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::new();
    for pod in specs {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let at = Instant::now();
        api.create(&PostParams::default(), &pod).await?;
        let bound = watch.wait(&name, Duration::from_secs(60)).await?;
        out.push(bound.saturating_duration_since(at));
    }
    out.sort();
    Ok(out)
}

/// The `q` quantile of sorted `values` (nearest rank), in milliseconds.
pub fn quantile_ms(values: &[Duration], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1].as_secs_f64() * 1e3
}
