//! The benchmark's printed figures: a line per phase as it ends, then one table with both
//! paths side by side at each size and the ratio (b)/(a) of their throughput.

use std::time::Duration;

use crate::measure::{Burst, quantile_ms};
use crate::schedulers::SchedPath;

/// What one size and path measured.
pub struct Phase {
    /// Fake nodes in the cluster.
    pub nodes: usize,
    /// The scheduling path.
    pub path: SchedPath,
    /// The burst's throughput and latencies.
    pub burst: Burst,
    /// Latencies of pods created one at a time after the burst, sorted.
    pub probe: Vec<Duration>,
    /// Latencies of pods of a request shape not seen before, one at a time, sorted.
    pub new_shape: Vec<Duration>,
    /// CPU cores each process used on average during the burst.
    pub cpu: Vec<(&'static str, f64)>,
    /// (resident, peak resident) MiB of each process after the phase.
    pub memory: Vec<(&'static str, f64, f64)>,
    /// Devices handed out, each checked to be given once (extender path only).
    pub devices_checked: Option<usize>,
}

impl Phase {
    fn cpu_of(&self, name: &str) -> String {
        self.cpu
            .iter()
            .find(|(n, _)| *n == name)
            .map_or_else(|| "-".into(), |(_, c)| format!("{c:.2}"))
    }

    fn peak_of(&self, name: &str) -> String {
        self.memory
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or_else(|| "-".into(), |(_, _, hwm)| format!("{hwm:.0}"))
    }
}

/// One line as a phase ends.
pub fn print_phase(p: &Phase) {
    eprintln!(
        "[perf] {} nodes {}: {}/{} bound in {:.1} s, {:.1} pods/s, p50 {:.0} ms, p99 {:.0} ms; \
         one at a time p50 {:.1} ms; new shape max {:.1} ms; devices checked: {}",
        p.nodes,
        p.path.label(),
        p.burst.bound,
        p.burst.created,
        p.burst.span.as_secs_f64(),
        p.burst.pods_per_second(),
        quantile_ms(&p.burst.latencies, 0.5),
        quantile_ms(&p.burst.latencies, 0.99),
        quantile_ms(&p.probe, 0.5),
        quantile_ms(&p.new_shape, 1.0),
        p.devices_checked
            .map_or_else(|| "-".into(), |n| n.to_string()),
    );
}

/// The table of every phase, the ratios, and the agent's memory.
pub fn print_table(setup: &str, phases: &[Phase], agent: Option<(f64, f64)>) {
    println!();
    println!("scheduler_perf: {setup}");
    println!(
        "burst latency = pod create sent -> binding seen on a watch; 1-by-1 = each pod created \
         after the previous is bound; CPU = cores used on average during the burst; peak RSS in MiB"
    );
    println!(
        "{:>6} {:<15} {:>13} {:>8} {:>8} {:>8} {:>15} {:>9} | {:>5} {:>5} {:>5} {:>5} {:>5} | {:>6} {:>6} {:>6}",
        "nodes",
        "path",
        "bound/created",
        "pods/s",
        "p50 ms",
        "p99 ms",
        "1-by-1 p50/p99",
        "new shape",
        "apisv",
        "etcd",
        "sched",
        "ext",
        "bench",
        "apisv",
        "sched",
        "ext",
    );
    for p in phases {
        println!(
            "{:>6} {:<15} {:>13} {:>8.1} {:>8.0} {:>8.0} {:>15} {:>9} | {:>5} {:>5} {:>5} {:>5} {:>5} | {:>6} {:>6} {:>6}",
            p.nodes,
            p.path.label(),
            format!("{}/{}", p.burst.bound, p.burst.created),
            p.burst.pods_per_second(),
            quantile_ms(&p.burst.latencies, 0.5),
            quantile_ms(&p.burst.latencies, 0.99),
            format!(
                "{:.1}/{:.1}",
                quantile_ms(&p.probe, 0.5),
                quantile_ms(&p.probe, 0.99)
            ),
            format!("{:.1}", quantile_ms(&p.new_shape, 1.0)),
            p.cpu_of("apiserver"),
            p.cpu_of("etcd"),
            p.cpu_of("scheduler"),
            p.cpu_of("extender"),
            p.cpu_of("bench"),
            p.peak_of("apiserver"),
            p.peak_of("scheduler"),
            p.peak_of("extender"),
        );
    }
    let mut sizes: Vec<usize> = phases.iter().map(|p| p.nodes).collect();
    sizes.dedup();
    for nodes in sizes {
        let of = |path| phases.iter().find(|p| p.nodes == nodes && p.path == path);
        let Some(a) = of(SchedPath::InTree) else {
            continue;
        };
        for (b, name) in [
            (SchedPath::Extender, "b"),
            (SchedPath::ExtenderSampled, "c"),
        ] {
            let Some(b) = of(b) else {
                continue;
            };
            println!(
                "{nodes} nodes: throughput ({name})/(a) = {:.2} ({:.1} / {:.1} pods/s); burst \
                 p99 {:.0} vs {:.0} ms; 1-by-1 p50 {:.1} vs {:.1} ms",
                b.burst.pods_per_second() / a.burst.pods_per_second(),
                b.burst.pods_per_second(),
                a.burst.pods_per_second(),
                quantile_ms(&b.burst.latencies, 0.99),
                quantile_ms(&a.burst.latencies, 0.99),
                quantile_ms(&b.probe, 0.5),
                quantile_ms(&a.probe, 0.5),
            );
        }
    }
    if let Some((rss, hwm)) = agent {
        println!(
            "node agent, 8 GPUs with {} MIG instances: {rss:.1} MiB resident, {hwm:.1} MiB peak \
             (budget 30 MB)",
            crate::agent_memory::INSTANCES
        );
    }
    if let Some(p) = phases
        .iter()
        .filter(|p| p.path == SchedPath::Extender)
        .max_by_key(|p| p.nodes)
    {
        println!(
            "extender at {} nodes with {} bound pods: {} MiB peak resident (budget 200 MB)",
            p.nodes,
            p.burst.bound,
            p.peak_of("extender")
        );
    }
}
