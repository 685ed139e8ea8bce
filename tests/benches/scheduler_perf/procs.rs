//! CPU time and memory of the processes under test, read from `/proc`: the API server and
//! etcd (the usual limits at scale), the dedicated kube-scheduler, the extender, and this
//! benchmark itself (it creates the pods and watches them).

use std::path::Path;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process the benchmark accounts for.
#[derive(Debug, Clone)]
pub struct Component {
    /// Short name for the table.
    pub name: &'static str,
    /// Its OS process id.
    pub pid: u32,
}

/// The dedicated kube-scheduler's secure port (`cluster.sh`), which tells it from the default
/// scheduler.
const DEDICATED_SCHEDULER_PORT: &str = "--secure-port=10269";

/// The cluster's processes found in `/proc`, plus the extender (when it runs) and this one.
pub fn components(extender: Option<u32>) -> Vec<Component> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let program = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let name = match program {
            "kube-apiserver" => "apiserver",
            "etcd" => "etcd",
            "kube-scheduler" if args.iter().any(|a| a == DEDICATED_SCHEDULER_PORT) => "scheduler",
            _ => continue,
        };
        out.push(Component { name, pid });
    }
    if let Some(pid) = extender {
        out.push(Component {
            name: "extender",
            pid,
        });
    }
    out.push(Component {
        name: "bench",
        pid: std::process::id(),
    });
    out.sort_by_key(|c| c.name);
    out
}

/// User plus system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after `comm`.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// (resident now, peak resident) in MiB, from `/proc/<pid>/status`.
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU seconds of every component, to subtract from a later reading.
pub fn cpu_snapshot(components: &[Component]) -> Vec<f64> {
    components
        .iter()
        .map(|c| cpu_seconds(c.pid).unwrap_or(0.0))
        .collect()
}
