//! The report as text for a terminal: one block per node, one line per GPU
//! with its MIG map (`1g` slices as `1`, a `3g` as `333`, free as `.`, a
//! static instance nobody uses as `o`, unhealthy as `x`), then the totals.

use std::fmt::Write as _;

use kubesched_core::planning::cost::{CostLine, CostReport};

use super::model::{Position, Report};

fn map(positions: &[Position]) -> String {
    let mut out = String::from("[");
    let mut last: Option<(String, u8)> = None;
    for p in positions {
        let (id, ch) = match p {
            Position::Free => (None, '.'),
            Position::Unhealthy => (None, 'x'),
            Position::Idle { profile, start } => (Some((profile.clone(), *start)), 'o'),
            Position::Used { profile, start } => (
                Some((profile.clone(), *start)),
                profile.chars().next().unwrap_or('?'),
            ),
        };
        // A bar between two instances that touch.
        if id.is_some() && last.is_some() && id != last {
            out.push('|');
        }
        out.push(ch);
        last = id;
    }
    out.push(']');
    out
}

/// The report as terminal text: per node its free CPU, memory and whole GPUs, one line
/// per GPU with its MIG map and what still fits, then the cluster totals.
pub fn render(report: &Report) -> String {
    let mut s = String::new();
    for n in &report.nodes {
        let _ = writeln!(
            s,
            "node {}  policy {}  cpu free {}m  memory free {}Mi  whole GPUs free {}",
            n.name,
            n.topology_policy.as_str(),
            n.cpu_free_milli,
            n.memory_free_mib,
            n.whole_gpus_free
        );
        for g in &n.gpus {
            let numa = g.numa.map_or("-".to_string(), |x| x.to_string());
            let health = if g.healthy { "" } else { "  UNHEALTHY" };
            if g.positions.is_empty() {
                let _ = writeln!(
                    s,
                    "  GPU{:<2} {:<14} numa {numa}  whole  {}m free{health}",
                    g.index, g.model, g.free_milli
                );
                continue;
            }
            let fits: Vec<String> = g
                .fits
                .iter()
                .filter(|(_, c)| *c > 0)
                .map(|(p, c)| format!("{p}×{c}"))
                .collect();
            let _ = writeln!(
                s,
                "  GPU{:<2} {:<14} numa {numa}  {:<7} {}  largest {:<9} fits {}{health}",
                g.index,
                g.model,
                g.mode,
                map(&g.positions),
                g.largest_placeable.as_deref().unwrap_or("-"),
                if fits.is_empty() {
                    "-".to_string()
                } else {
                    fits.join(" ")
                }
            );
        }
        let fits: Vec<String> = n
            .profile_fits
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(p, c)| format!("{p}×{c}"))
            .collect();
        if !fits.is_empty() {
            let _ = writeln!(
                s,
                "  more slices that fit (per profile, alone): {}",
                fits.join(" ")
            );
        }
        for p in &n.numa_problems {
            let _ = writeln!(s, "  NUMA problem: {p}");
        }
    }
    let t = &report.totals;
    let pct = |v: f64| {
        if t.capacity_milli == 0 {
            0.0
        } else {
            100.0 * v / t.capacity_milli as f64
        }
    };
    let _ = writeln!(
        s,
        "cluster: {} nodes, {} GPUs, unallocated {:.1}% of GPU capacity, fragmented {:.1}% ({:.1}% of the idle share)",
        t.nodes,
        t.gpus,
        pct(t.unallocated_milli as f64),
        pct(t.fragment_milli),
        t.fragmentation_ratio_pct
    );
    for (cause, milli) in &t.stranded_by_cause {
        let _ = writeln!(s, "  stranded by {cause:<15} {:>8.2} GPUs", milli / 1000.0);
    }
    for (task, causes) in &t.stranded_by_task {
        let parts: Vec<String> = causes
            .iter()
            .map(|(c, m)| format!("{c} {:.2}", *m as f64 / 1000.0))
            .collect();
        let _ = writeln!(s, "  {task:<22} cannot use: {} GPUs", parts.join(", "));
    }
    if let Some(cost) = &report.cost {
        s.push_str(&render_cost(cost));
    }
    s
}

/// The cost section: per pool and per namespace, GPUs (GPU-hours per hour) and cost per
/// hour by state, and what the unused capacity costs over 30 days.
fn render_cost(cost: &CostReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "cost (GPUs = GPU-hours per hour; cost per hour at pricing.gpuHourly):"
    );
    let header = |s: &mut String, what: &str| {
        let _ = writeln!(
            s,
            "  {what:<22} {:>7} {:>9} {:>7} {:>9} {:>9} {:>10} {:>10} {:>12}",
            "GPUs", "allocated", "idle", "stranded", "alloc/h", "idle/h", "strand/h", "unused 30d"
        );
    };
    // Namespaces hold no capacity of their own and no idle share: those columns are blank.
    let row = |s: &mut String, name: &str, l: &CostLine, pool: bool| {
        let blank = |v: f64, w: usize, p: usize| {
            if pool {
                format!("{v:>w$.p$}")
            } else {
                format!("{:>w$}", "-")
            }
        };
        let _ = writeln!(
            s,
            "  {name:<22} {} {:>9.2} {} {:>9.2} {:>9.2} {} {:>10.2} {:>12.0}",
            blank(l.gpus, 7, 2),
            l.allocated_gpus,
            blank(l.idle_gpus, 7, 2),
            l.stranded_gpus,
            l.allocated_per_hour,
            blank(l.idle_per_hour, 10, 2),
            l.stranded_per_hour,
            l.unused_per_hour() * 24.0 * 30.0
        );
    };
    header(&mut s, "pool");
    for (pool, line) in &cost.pools {
        row(&mut s, pool, line, true);
    }
    row(&mut s, "(all)", &cost.total, true);
    header(&mut s, "namespace");
    for (ns, line) in &cost.namespaces {
        row(&mut s, ns, line, false);
    }
    if cost.total.unpriced_gpus > 0.0 {
        let _ = writeln!(
            s,
            "  {:.0} GPUs have no price in pricing.gpuHourly: counted, not charged",
            cost.total.unpriced_gpus
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_marks_instances_free_and_idle_positions() {
        let used = |p: &str, start| Position::Used {
            profile: p.into(),
            start,
        };
        let positions = vec![
            used("1g.10gb", 0),
            used("1g.10gb", 1),
            used("2g.20gb", 2),
            used("2g.20gb", 2),
            Position::Idle {
                profile: "3g.40gb".into(),
                start: 4,
            },
            Position::Idle {
                profile: "3g.40gb".into(),
                start: 4,
            },
            Position::Free,
            Position::Unhealthy,
        ];
        assert_eq!(map(&positions), "[1|1|22|oo.x]");
    }
}
