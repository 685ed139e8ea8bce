//! Reading the Alibaba GPU trace (cluster-trace-gpu-v2023, "openb") CSVs:
//! the node list and the pod lists, into core nodes and requests, or into timed
//! jobs with the trace's own arrivals and run times. The data is read from
//! wherever the user keeps it; it is never shipped with us.

use std::path::{Path, PathBuf};

use kubesched_core::node::{GpuState, NodeState};
use kubesched_core::request::{GpuDemand, PodRequest};
use kubesched_core::timed::{Job, Length};

/// Why a trace CSV file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path of the CSV file.
        path: PathBuf,
        /// The I/O error from reading it.
        source: std::io::Error,
    },
    /// The header line lacks a column the loader needs.
    #[error("{path}: missing column {column:?} in the header")]
    MissingColumn {
        /// Path of the CSV file.
        path: PathBuf,
        /// Name of the missing column, e.g. `cpu_milli`.
        column: &'static str,
    },
    /// A row is malformed: a quoted field, a value that is not a non-negative
    /// integer, or more than 64 GPUs on one node.
    #[error("{path}:{line}: {detail}")]
    Bad {
        /// Path of the CSV file.
        path: PathBuf,
        /// Line number in the file, counting from 1.
        line: usize,
        /// What is wrong with the row.
        detail: String,
    },
    /// The file has no header or no data rows.
    #[error("{path}: no rows")]
    Empty {
        /// Path of the CSV file.
        path: PathBuf,
    },
}

/// A parsed CSV with named columns (the trace has no quoted fields).
struct Table {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    fn read(path: &Path) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, TraceError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, head)) = lines.next() else {
            return Err(TraceError::Empty {
                path: path.to_owned(),
            });
        };
        let header: Vec<String> = head.split(',').map(|s| s.trim().to_string()).collect();
        let mut rows = Vec::new();
        for (i, line) in lines {
            if line.contains('"') {
                return Err(TraceError::Bad {
                    path: path.to_owned(),
                    line: i + 1,
                    detail: "quoted fields are not supported".into(),
                });
            }
            rows.push((
                i + 1,
                line.split(',').map(|s| s.trim().to_string()).collect(),
            ));
        }
        if rows.is_empty() {
            return Err(TraceError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Table {
            path: path.to_owned(),
            header,
            rows,
        })
    }

    fn column(&self, name: &'static str) -> Result<usize, TraceError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or(TraceError::MissingColumn {
                path: self.path.clone(),
                column: name,
            })
    }

    fn number(
        &self,
        line: usize,
        row: &[String],
        col: usize,
        name: &str,
    ) -> Result<u64, TraceError> {
        let raw = row.get(col).map(String::as_str).unwrap_or("");
        raw.parse::<u64>().map_err(|_| TraceError::Bad {
            path: self.path.clone(),
            line,
            detail: format!("{name} {raw:?} is not a non-negative integer"),
        })
    }

    /// Like `number`, with an empty (or absent) field read as `None`.
    fn optional_number(
        &self,
        line: usize,
        row: &[String],
        col: usize,
        name: &str,
    ) -> Result<Option<u64>, TraceError> {
        match row.get(col) {
            Some(raw) if !raw.is_empty() => self.number(line, row, col, name).map(Some),
            _ => Ok(None),
        }
    }
}

/// Where tests and benches look for the trace's csv folder:
/// `KUBESCHED_TRACE_DIR`, else the shared data folder beside the repository.
/// `None` when the default pod list is not there.
pub fn default_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("KUBESCHED_TRACE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/alibaba-gpu-v2023/csv")
        });
    dir.join("openb_pod_list_default.csv")
        .exists()
        .then_some(dir)
}

/// GPU nodes of the trace (`sn,cpu_milli,memory_mib,gpu,model`), as plain GPUs.
pub fn load_nodes(path: &Path) -> Result<Vec<NodeState>, TraceError> {
    parse_nodes(&Table::read(path)?)
}

fn parse_nodes(t: &Table) -> Result<Vec<NodeState>, TraceError> {
    let (sn, cpu, mem, gpu, model) = (
        t.column("sn")?,
        t.column("cpu_milli")?,
        t.column("memory_mib")?,
        t.column("gpu")?,
        t.column("model")?,
    );
    let mut nodes = Vec::with_capacity(t.rows.len());
    for (line, row) in &t.rows {
        let name = row.get(sn).cloned().unwrap_or_default();
        let mut node = NodeState::new(
            name.clone(),
            t.number(*line, row, cpu, "cpu_milli")?,
            t.number(*line, row, mem, "memory_mib")?,
        );
        let count = t.number(*line, row, gpu, "gpu")?;
        if count > 64 {
            return Err(TraceError::Bad {
                path: t.path.clone(),
                line: *line,
                detail: format!("{count} GPUs on one node"),
            });
        }
        let model = row.get(model).cloned().unwrap_or_default();
        for g in 0..count as u32 {
            node.gpus
                .push(GpuState::plain(g, &format!("{name}-gpu{g}"), &model, None));
        }
        nodes.push(node);
    }
    Ok(nodes)
}

/// Pods of a trace pod list (`cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec]`).
pub fn load_pods(path: &Path) -> Result<Vec<PodRequest>, TraceError> {
    parse_pods(&Table::read(path)?)
}

fn parse_pods(t: &Table) -> Result<Vec<PodRequest>, TraceError> {
    let cols = RequestColumns::find(t)?;
    t.rows
        .iter()
        .map(|(line, row)| cols.request(t, *line, row))
        .collect()
}

/// The columns of a pod list a pod's request is built from.
struct RequestColumns {
    cpu: usize,
    mem: usize,
    num: usize,
    milli: usize,
    /// The multi-GPU variants ship without `gpu_spec`.
    spec: Option<usize>,
}

impl RequestColumns {
    fn find(t: &Table) -> Result<Self, TraceError> {
        Ok(RequestColumns {
            cpu: t.column("cpu_milli")?,
            mem: t.column("memory_mib")?,
            num: t.column("num_gpu")?,
            milli: t.column("gpu_milli")?,
            spec: t.column("gpu_spec").ok(),
        })
    }

    /// The request of one row (`line` for errors).
    fn request(&self, t: &Table, line: usize, row: &[String]) -> Result<PodRequest, TraceError> {
        let num_gpu = t.number(line, row, self.num, "num_gpu")?;
        let gpu_milli = t.number(line, row, self.milli, "gpu_milli")?.min(1000) as u32;
        let gpu = match (num_gpu, gpu_milli) {
            (0, _) => GpuDemand::None,
            (1, m) if m > 0 && m < 1000 => GpuDemand::Share { milli: m },
            (n, _) => GpuDemand::Whole {
                count: u32::try_from(n).unwrap_or(u32::MAX),
            },
        };
        let mut req = PodRequest::cpu_only(
            t.number(line, row, self.cpu, "cpu_milli")?,
            t.number(line, row, self.mem, "memory_mib")?,
        )
        .with_gpu(gpu);
        if let Some(s) = self.spec.and_then(|c| row.get(c)).filter(|s| !s.is_empty()) {
            req.gpu_models = s.split('|').map(str::to_string).collect();
        }
        Ok(req)
    }
}

/// Shortest run time a timed trace pod gets, in milliseconds.
pub const MIN_TRACE_RUN_MS: u64 = 1000;

/// Largest time in seconds a trace row may give: its milliseconds still fit a `u64`.
const MAX_TRACE_TIME_S: u64 = u64::MAX / 1000;

/// Pods of a trace pod list as timed jobs, with the trace's own timing
/// (`creation_time`, `deletion_time`, `scheduled_time`: whole seconds from the
/// trace's start), sorted by arrival (rows arriving together keep the file's order).
///
/// - The job is the row's `name`; its request is built exactly as [`load_pods`]
///   builds it.
/// - It arrives at `creation_time`.
/// - It runs for `deletion_time - scheduled_time`, the time it ran in the traced
///   cluster, when both are given and the deletion is not earlier than the
///   scheduling; otherwise for `deletion_time - creation_time`. In the published
///   lists `scheduled_time` is empty exactly for the pods that stayed `Pending`
///   (never scheduled there): they run for as long as they existed.
/// - A row with an empty `deletion_time` is a pod still running when the trace
///   ends. Its run is cut at the last time the file records (its largest
///   `deletion_time`, `creation_time` or `scheduled_time`), from its
///   `scheduled_time` (its `creation_time` when that is empty too): the
///   trace cannot tell how much longer it ran, so none is invented. (The published
///   lists leave no `deletion_time` empty: their pods still running at the end
///   carry the trace's last time as their deletion.)
/// - Every run lasts at least [`MIN_TRACE_RUN_MS`]: the trace counts whole seconds,
///   so a pod deleted within the second it started still ran.
///
/// A deletion before the creation, or a time too large to count in milliseconds, is
/// an error naming the line. The multi-GPU variants have no time columns: a
/// [`TraceError::MissingColumn`].
pub fn load_timed_pods(path: &Path) -> Result<Vec<Job>, TraceError> {
    parse_timed_pods(&Table::read(path)?)
}

/// One row's times, in seconds.
struct RowTimes {
    created: u64,
    deleted: Option<u64>,
    scheduled: Option<u64>,
}

fn parse_timed_pods(t: &Table) -> Result<Vec<Job>, TraceError> {
    let cols = RequestColumns::find(t)?;
    let (name, created, deleted, scheduled) = (
        t.column("name")?,
        t.column("creation_time")?,
        t.column("deletion_time")?,
        t.column("scheduled_time")?,
    );
    let bad = |line: usize, detail: String| TraceError::Bad {
        path: t.path.clone(),
        line,
        detail,
    };
    // First pass: every row's times, and the last time the file records.
    let mut times = Vec::with_capacity(t.rows.len());
    let mut end = 0u64;
    for (line, row) in &t.rows {
        let time = RowTimes {
            created: t.number(*line, row, created, "creation_time")?,
            deleted: t.optional_number(*line, row, deleted, "deletion_time")?,
            scheduled: t.optional_number(*line, row, scheduled, "scheduled_time")?,
        };
        let latest = time
            .created
            .max(time.deleted.unwrap_or(0))
            .max(time.scheduled.unwrap_or(0));
        if latest > MAX_TRACE_TIME_S {
            return Err(bad(
                *line,
                format!("time {latest} s is too large (at most {MAX_TRACE_TIME_S})"),
            ));
        }
        end = end.max(latest);
        times.push(time);
    }
    let mut jobs = Vec::with_capacity(t.rows.len());
    for ((line, row), time) in t.rows.iter().zip(times) {
        let RowTimes {
            created,
            deleted,
            scheduled,
        } = time;
        let run_s = match (deleted, scheduled) {
            (Some(d), Some(s)) if d >= s => d - s,
            (Some(d), _) => d.checked_sub(created).ok_or_else(|| {
                bad(
                    *line,
                    format!("deletion_time {d} is before creation_time {created}"),
                )
            })?,
            // Still running at the trace's end (`end` is at least every time of the file).
            (None, s) => end.saturating_sub(s.unwrap_or(created)),
        };
        jobs.push(Job {
            id: row.get(name).cloned().unwrap_or_default(),
            arrival_ms: created * 1000,
            length: Length::Duration {
                ms: (run_s * 1000).max(MIN_TRACE_RUN_MS),
            },
            request: cols.request(t, *line, row)?,
        });
    }
    // Stable: pods created in the same second keep the file's order.
    jobs.sort_by_key(|j| j.arrival_ms);
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nodes_and_pods_with_and_without_gpu_spec() {
        let p = Path::new("t.csv");
        let nodes = parse_nodes(
            &Table::parse(
                p,
                "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,P100\n",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(nodes[0].gpus.len(), 2);
        assert_eq!(&*nodes[0].gpus[1].model, "P100");
        let pods = parse_pods(
            &Table::parse(
                p,
                "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos\na,1000,10,1,460,,LS\nb,2000,10,8,1000,V100M16|V100M32,BE\nc,500,1,0,0,,BE\n",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(pods[0].gpu, GpuDemand::Share { milli: 460 });
        assert_eq!(pods[1].gpu, GpuDemand::Whole { count: 8 });
        assert_eq!(pods[1].gpu_models, vec!["V100M16", "V100M32"]);
        assert_eq!(pods[2].gpu, GpuDemand::None);
        let multi = parse_pods(
            &Table::parse(
                p,
                "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,2,1000\n",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(multi[0].gpu, GpuDemand::Whole { count: 2 });
    }

    #[test]
    fn timed_pods_take_the_trace_timing() {
        let p = Path::new("t.csv");
        let csv = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
late,1000,10,1,460,,LS,Running,50,100,60
first,2000,10,2,1000,,BE,Succeeded,0,10,0
pending,500,1,0,0,,BE,Pending,20,25,
instant,500,1,0,0,,BE,Failed,30,30,30
running,1000,10,1,1000,T4,LS,Running,40,,45
odd,1000,10,1,1000,,LS,Running,10,15,20
";
        let jobs = parse_timed_pods(&Table::parse(p, csv).unwrap()).unwrap();
        let got: Vec<(&str, u64, Length)> = jobs
            .iter()
            .map(|j| (j.id.as_str(), j.arrival_ms, j.length))
            .collect();
        let d = |ms| Length::Duration { ms };
        assert_eq!(
            got,
            vec![
                ("first", 0, d(10_000)),
                // Deleted before it was scheduled: from creation to deletion.
                ("odd", 10_000, d(5_000)),
                // Never scheduled: from creation to deletion.
                ("pending", 20_000, d(5_000)),
                // Deleted the second it started: the minimum run.
                ("instant", 30_000, d(MIN_TRACE_RUN_MS)),
                // Still running at the end (100 s): from its scheduling to the end.
                ("running", 40_000, d(55_000)),
                ("late", 50_000, d(40_000)),
            ]
        );
        // The request is the one the plain pod list gives for the same row.
        let pods = parse_pods(&Table::parse(p, csv).unwrap()).unwrap();
        assert_eq!(jobs[5].request, pods[0]);
        assert_eq!(jobs[5].request.gpu, GpuDemand::Share { milli: 460 });
        assert_eq!(jobs[0].request.gpu, GpuDemand::Whole { count: 2 });
        assert_eq!(jobs[4].request.gpu_models, vec!["T4"]);
        assert_eq!(jobs[2].request.gpu, GpuDemand::None);
    }

    #[test]
    fn timed_pods_refuse_bad_times() {
        let p = Path::new("t.csv");
        let head = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time,scheduled_time\n";
        let parse = |rows: &str| {
            parse_timed_pods(&Table::parse(p, &format!("{head}{rows}")).unwrap()).unwrap_err()
        };
        assert_eq!(
            parse("a,1,1,0,0,0,1,0\nb,1,1,0,0,10,5,\n").to_string(),
            "t.csv:3: deletion_time 5 is before creation_time 10"
        );
        assert_eq!(
            parse("a,1,1,0,0,,1,0\n").to_string(),
            "t.csv:2: creation_time \"\" is not a non-negative integer"
        );
        assert!(
            parse(&format!("a,1,1,0,0,0,{},0\n", u64::MAX))
                .to_string()
                .starts_with("t.csv:2: time ")
        );
        // The multi-GPU variants have no timing.
        let err = parse_timed_pods(
            &Table::parse(
                p,
                "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,2,1000\n",
            )
            .unwrap(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            TraceError::MissingColumn {
                column: "creation_time",
                ..
            }
        ));
    }

    #[test]
    fn bad_rows_name_the_line() {
        let p = Path::new("t.csv");
        let err = parse_pods(
            &Table::parse(p, "cpu_milli,memory_mib,num_gpu,gpu_milli\n1,1,x,1\n").unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.csv:2: num_gpu \"x\" is not a non-negative integer"
        );
        let err = parse_pods(&Table::parse(p, "cpu_milli,memory_mib\n1,1\n").unwrap()).unwrap_err();
        assert!(matches!(
            err,
            TraceError::MissingColumn {
                column: "num_gpu",
                ..
            }
        ));
        assert!(matches!(Table::parse(p, ""), Err(TraceError::Empty { .. })));
    }
}
