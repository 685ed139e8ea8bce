//! The report as text for a terminal: one block per node, one line per GPU
//! with its MIG map (`1g` slices as `1`, a `3g` as `333`, free as `.`, a
//! static instance nobody uses as `o`, unhealthy as `x`), then the totals.

use std::fmt::Write as _;

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
