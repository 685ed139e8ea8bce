//! The timed replay's measurements: cluster occupancy integrated over the
//! measured window (after the warm-up, before the final drain), the over-time
//! series, and the per-job figures (waits, throughput, makespan).

use super::engine::JobRecord;
use super::job::Job;
use super::occupancy::Occupancy;
use crate::stats::quantile;

/// The measured window: from the end of the warm-up to the last arrival (after it the
/// cluster only drains).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start, in milliseconds.
    pub start_ms: u64,
    /// End, in milliseconds; `None` when every job arrives at once (then the run's end).
    pub end_ms: Option<u64>,
}

impl Window {
    /// The window of arrivals spanning `first..=last` after a warm-up of `warmup` (0 to 1)
    /// of that span.
    pub fn new(first_ms: u64, last_ms: u64, warmup: f64) -> Window {
        let span = last_ms.saturating_sub(first_ms);
        let start_ms = first_ms
            .saturating_add((span as f64 * warmup.clamp(0.0, 0.99)) as u64)
            .min(last_ms.max(first_ms));
        Window {
            start_ms,
            end_ms: (last_ms > start_ms).then_some(last_ms),
        }
    }

    fn end(&self, run_end_ms: u64) -> u64 {
        self.end_ms.unwrap_or(run_end_ms).max(self.start_ms)
    }

    fn contains(&self, t: u64, run_end_ms: u64) -> bool {
        t >= self.start_ms && t <= self.end(run_end_ms)
    }
}

/// One point of the over-time series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesPoint {
    /// Virtual time, in milliseconds.
    pub t_ms: u64,
    /// Compute in use, % of all GPUs.
    pub compute_pct: f64,
    /// Plain GPUs unallocated, % (NaN without plain GPUs).
    pub unallocated_gpu_pct: f64,
    /// MIG GPUs: mean stranded share of their free compute, % (NaN without MIG GPUs).
    pub stranded_pct: f64,
    /// Jobs waiting.
    pub pending: usize,
}

/// Figures of one timed run over its measured window. Definitions in `kubesched simulate --help`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedMetrics {
    /// Compute in use, time-averaged, % of all GPUs' compute.
    pub compute_util_pct: f64,
    /// GPU memory in use, time-averaged, % of all GPUs' memory.
    pub memory_util_pct: f64,
    /// MIG GPUs: free compute no packing of profiles can use, % of free compute, mean over
    /// GPUs, time-averaged (NaN without MIG GPUs).
    pub stranded_pct: f64,
    /// MIG GPUs: free positions outside the longest free run, % of free positions, mean over
    /// GPUs, time-averaged (NaN without MIG GPUs).
    pub physical_frag_pct: f64,
    /// Plain GPUs: share unallocated, time-averaged, % (NaN without plain GPUs).
    pub unallocated_gpu_pct: f64,
    /// Jobs arriving in the window that waited although the free capacity in total would
    /// have held them, % of those arrivals.
    pub request_fragmented_pct: f64,
    /// Waiting time of the jobs arriving in the window, seconds: median.
    pub wait_p50_s: f64,
    /// 95th percentile wait, seconds.
    pub wait_p95_s: f64,
    /// 99th percentile wait, seconds.
    pub wait_p99_s: f64,
    /// Jobs completed in the window per hour of virtual time.
    pub completed_per_hour: f64,
    /// From the first arrival to the last completion, seconds.
    pub makespan_s: f64,
    /// Jobs never placed: they fit no node even when it is empty, and are left out on arrival.
    pub never_placed: usize,
    /// Share of the window with at least one job waiting, %.
    pub queue_nonempty_pct: f64,
    /// Highest compute in use at any instant of the window, % of all GPUs' compute.
    pub peak_compute_pct: f64,
}

/// Integrates the cluster's occupancy over the window as the clock advances.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    window: Window,
    occupancy: Occupancy,
    last_ms: u64,
    integral: Occupancy,
    queue_ms: f64,
    peak_compute: f64,
    sample_every_ms: u64,
    next_sample_ms: Option<u64>,
    series: Vec<SeriesPoint>,
}

impl Recorder {
    pub(crate) fn new(
        window: Window,
        occupancy: Occupancy,
        last_arrival_ms: u64,
        samples: usize,
    ) -> Self {
        Recorder {
            window,
            occupancy,
            last_ms: 0,
            integral: Occupancy::default(),
            queue_ms: 0.0,
            peak_compute: 0.0,
            sample_every_ms: (last_arrival_ms / samples.max(1) as u64).max(1),
            next_sample_ms: Some(0),
            series: Vec::new(),
        }
    }

    /// One node's occupancy changed from `old` to `new`.
    pub(crate) fn replace(&mut self, old: &Occupancy, new: &Occupancy) {
        self.occupancy.add(old, -1.0);
        self.occupancy.add(new, 1.0);
    }

    /// The clock moves to `t`; the occupancy held since the last call is accounted.
    pub(crate) fn advance(&mut self, t: u64, pending: usize) {
        let from = self.last_ms.max(self.window.start_ms);
        let to = t.min(self.window.end(u64::MAX));
        if to > from {
            let dt = (to - from) as f64;
            self.integral.add(&self.occupancy, dt);
            if pending > 0 {
                self.queue_ms += dt;
            }
            self.peak_compute = self
                .peak_compute
                .max(share(self.occupancy.compute_used, self.occupancy.gpus));
        }
        while let Some(at) = self.next_sample_ms
            && at <= t
            && self.series.len() < 100_000
        {
            let o = &self.occupancy;
            self.series.push(SeriesPoint {
                t_ms: at,
                compute_pct: share(o.compute_used, o.gpus),
                unallocated_gpu_pct: 100.0 - share(o.plain_used, o.plain_gpus),
                stranded_pct: share(o.stranded, o.mig_gpus),
                pending,
            });
            // Past the end of time there is no later sample.
            self.next_sample_ms = at.checked_add(self.sample_every_ms);
        }
        self.last_ms = self.last_ms.max(t);
    }

    pub(crate) fn series(&self) -> &[SeriesPoint] {
        &self.series
    }

    /// The window's figures, once the run ended at `end_ms`.
    pub(crate) fn metrics(&self, jobs: &[Job], records: &[JobRecord], end_ms: u64) -> TimedMetrics {
        let w = self.window;
        let length = w.end(end_ms).saturating_sub(w.start_ms).max(1) as f64;
        let i = &self.integral;
        let gpus = self.occupancy.gpus;
        let mut waits = Vec::new();
        let (mut arrived, mut fragmented, mut completed) = (0usize, 0usize, 0usize);
        for (job, record) in jobs.iter().zip(records) {
            if let Some(end) = record.end_ms
                && w.contains(end, end_ms)
            {
                completed += 1;
            }
            // Jobs left out on arrival (they fit nowhere) count only as never placed.
            if !w.contains(job.arrival_ms, end_ms) || record.placed_ms.is_none() {
                continue;
            }
            arrived += 1;
            fragmented += usize::from(record.request_fragmented);
            if let Some(placed) = record.placed_ms {
                waits.push(placed.saturating_sub(job.arrival_ms) as f64 / 1000.0);
            }
        }
        waits.sort_by(f64::total_cmp);
        let first = jobs.iter().map(|j| j.arrival_ms).min().unwrap_or(0);
        let last_end = records
            .iter()
            .filter_map(|r| r.end_ms)
            .max()
            .unwrap_or(first);
        TimedMetrics {
            compute_util_pct: share(i.compute_used, gpus * length),
            memory_util_pct: share(i.memory_used, gpus * length),
            stranded_pct: share(i.stranded, self.occupancy.mig_gpus * length),
            physical_frag_pct: share(i.physical, self.occupancy.mig_gpus * length),
            unallocated_gpu_pct: 100.0 - share(i.plain_used, self.occupancy.plain_gpus * length),
            request_fragmented_pct: share(fragmented as f64, arrived as f64),
            wait_p50_s: quantile(&waits, 0.50),
            wait_p95_s: quantile(&waits, 0.95),
            wait_p99_s: quantile(&waits, 0.99),
            completed_per_hour: completed as f64 / (length / 3_600_000.0),
            makespan_s: last_end.saturating_sub(first) as f64 / 1000.0,
            never_placed: records.iter().filter(|r| r.placed_ms.is_none()).count(),
            queue_nonempty_pct: 100.0 * self.queue_ms / length,
            peak_compute_pct: self.peak_compute,
        }
    }
}

/// `part / whole` in %, NaN when there is no whole.
fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part.max(0.0) / whole
    } else {
        f64::NAN
    }
}
