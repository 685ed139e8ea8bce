//! The target workload M that fragmentation is measured against: either
//! configured, or learned from the GPU pods that recently arrived (FGD's
//! "typical pods"). Each change bumps a generation so memoised scores go.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use kubesched_core::fragmentation::Workload;
use kubesched_core::request::PodRequest;

/// Most task types kept when learning: each one costs a little per node.
pub const MAX_LEARNED_TYPES: usize = 16;

/// Where the target workload comes from: configured task types, or learned from arrivals.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadMode {
    /// Fixed task types from the configuration, popularities summing to 1.
    Fixed(Workload),
    /// Learned from the GPU pods that recently arrived, with these settings.
    Learn {
        /// Recent arrivals remembered.
        window: usize,
        /// Share of arrivals the kept task types must cover (0..=1).
        coverage: f64,
        /// Re-derive the workload after this many new arrivals.
        refresh_every: usize,
    },
}

struct Inner {
    mode: WorkloadMode,
    recent: VecDeque<(String, PodRequest)>,
    recent_uids: HashSet<String>,
    since_refresh: usize,
    current: Arc<Workload>,
    generation: u64,
}

/// The target workload in force, with a generation that changes whenever it does;
/// shared by all requests.
pub struct WorkloadSource {
    inner: Mutex<Inner>,
}

impl WorkloadSource {
    /// Starts with the fixed workload, or an empty one to be learned; generation 1.
    pub fn new(mode: WorkloadMode) -> Self {
        let current = match &mode {
            WorkloadMode::Fixed(w) => Arc::new(w.clone()),
            WorkloadMode::Learn { .. } => Arc::new(Workload::default()),
        };
        WorkloadSource {
            inner: Mutex::new(Inner {
                mode,
                recent: VecDeque::new(),
                recent_uids: HashSet::new(),
                since_refresh: 0,
                current,
                generation: 1,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The workload now in force and its generation.
    pub fn current(&self) -> (Arc<Workload>, u64) {
        let g = self.lock();
        (g.current.clone(), g.generation)
    }

    /// Notes a GPU pod's arrival (once per pod UID) when learning.
    pub fn observe(&self, uid: &str, req: &PodRequest) {
        if req.gpu.is_none() {
            return;
        }
        let mut g = self.lock();
        let WorkloadMode::Learn {
            window,
            coverage,
            refresh_every,
        } = g.mode
        else {
            return;
        };
        if !g.recent_uids.insert(uid.to_string()) {
            return;
        }
        g.recent.push_back((uid.to_string(), coarsen(req)));
        while g.recent.len() > window.max(1) {
            if let Some((old, _)) = g.recent.pop_front() {
                g.recent_uids.remove(&old);
            }
        }
        g.since_refresh += 1;
        // Until the window is full every arrival changes the picture a lot
        // (and learning so few is cheap): refresh each time.
        if g.since_refresh >= refresh_every.max(1) || g.recent.len() < window {
            g.since_refresh = 0;
            let learned = learn(g.recent.iter().map(|(_, r)| r), coverage);
            if *g.current != learned {
                g.current = Arc::new(learned);
                g.generation += 1;
            }
        }
    }
}

/// Rounds CPU to whole cores and memory to GiB (up) so that near-identical
/// pods form one task type.
fn coarsen(req: &PodRequest) -> PodRequest {
    let mut r = req.clone();
    r.cpu_milli = r.cpu_milli.div_ceil(1000) * 1000;
    r.memory_mib = r.memory_mib.div_ceil(1024) * 1024;
    r
}

/// The most popular task types in whole percent. Rounding keeps the
/// workload (and so every node's memoised scores) unchanged while the
/// arrival mix only jitters; it changes once a share moves by a percent.
fn learn<'a>(requests: impl IntoIterator<Item = &'a PodRequest>, coverage: f64) -> Workload {
    let mut types = Workload::from_requests(requests, coverage).types;
    types.sort_by(|a, b| b.popularity.total_cmp(&a.popularity));
    types.truncate(MAX_LEARNED_TYPES);
    let top = types.first().map(|t| t.request.clone());
    let rounded = Workload::from_counts(
        types
            .into_iter()
            .map(|t| (t.request, (t.popularity * 100.0).round() as u64)),
    );
    match top {
        // Everything rounded to zero (over a hundred equally rare types):
        // keep the most popular one rather than nothing.
        Some(r) if rounded.is_empty() => Workload::from_counts([(r, 1)]),
        _ => rounded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesched_core::request::GpuDemand;

    fn mig(p: &str) -> PodRequest {
        PodRequest::cpu_only(1500, 3000).with_gpu(GpuDemand::Mig {
            profile: p.into(),
            count: 1,
        })
    }

    #[test]
    fn learns_popularities_and_bumps_the_generation_on_change() {
        let src = WorkloadSource::new(WorkloadMode::Learn {
            window: 100,
            coverage: 1.0,
            refresh_every: 3,
        });
        let (_, g0) = src.current();
        src.observe("a", &mig("1g.10gb"));
        let (w, g1) = src.current();
        assert!(g1 > g0, "the first arrival seeds an empty workload");
        assert_eq!(w.types.len(), 1);
        assert_eq!(w.types[0].request.cpu_milli, 2000, "coarsened");
        src.observe("a", &mig("1g.10gb"));
        src.observe("b", &mig("3g.40gb"));
        src.observe("c", &mig("3g.40gb"));
        src.observe("d", &mig("3g.40gb"));
        src.observe("cpu", &PodRequest::cpu_only(1000, 0));
        let (w, g2) = src.current();
        assert!(g2 > g1);
        assert_eq!(w.types.len(), 2);
        assert_eq!(w.types[0].popularity, 0.75);
    }

    #[test]
    fn small_shifts_in_the_mix_keep_the_generation() {
        let src = WorkloadSource::new(WorkloadMode::Learn {
            window: 10_000,
            coverage: 1.0,
            refresh_every: 1,
        });
        for i in 0..1000 {
            let p = if i % 4 == 0 { "3g.40gb" } else { "1g.10gb" };
            src.observe(&format!("u{i}"), &mig(p));
        }
        let (w, g) = src.current();
        src.observe("extra", &mig("3g.40gb"));
        assert_eq!(src.current().1, g, "a 0.07% shift is not a new workload");
        assert_eq!(w.types[0].popularity, 0.75);
    }

    #[test]
    fn fixed_workload_never_changes() {
        let fixed = Workload::from_counts([(mig("1g.10gb"), 1)]);
        let src = WorkloadSource::new(WorkloadMode::Fixed(fixed.clone()));
        src.observe("a", &mig("7g.80gb"));
        let (w, g) = src.current();
        assert_eq!(*w, fixed);
        assert_eq!(g, 1);
    }

    #[test]
    fn caps_the_number_of_task_types() {
        let reqs: Vec<PodRequest> = (1..=40)
            .map(|i| PodRequest::cpu_only(i * 1000, 0).with_gpu(GpuDemand::Whole { count: 1 }))
            .collect();
        let w = learn(&reqs, 1.0);
        assert_eq!(w.types.len(), MAX_LEARNED_TYPES);
        let total: f64 = w.types.iter().map(|t| t.popularity).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
}
