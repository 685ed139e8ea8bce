//! Timed replay: jobs arrive at their time, run for a while and leave, as
//! pods do in an inference cluster. Departures free devices and leave holes;
//! waiting jobs are retried in arrival order; the cluster's occupancy is
//! measured over a window that leaves out the warm-up and the final drain.
//!
//! - `job`: a timed job and its run time once placed;
//! - `engine`: the event loop;
//! - `occupancy`: per-GPU measures (compute, memory, stranded, physical fragmentation);
//! - `totals`: the cluster's free capacity in total;
//! - `metrics`: the window, the integrals and the per-job figures;
//! - `generator`: built-in seeded workloads.

mod engine;
mod generator;
mod job;
mod metrics;
mod occupancy;
mod totals;

pub use engine::{Holding, JobRecord, TimedConfig, TimedReplay, TimedRun};
pub use generator::{Arrivals, Generator, MixEntry};
pub use job::{Job, Length, compute_share, demand_share};
pub use metrics::{SeriesPoint, TimedMetrics, Window};
pub use occupancy::{Meter, Occupancy};
pub use totals::FreeTotals;
