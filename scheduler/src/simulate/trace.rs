//! Reading the Alibaba GPU trace (cluster-trace-gpu-v2023, "openb") CSVs:
//! the node list and the pod lists, into core nodes and requests. The data is
//! read from wherever the user keeps it; it is never shipped with us.

use std::path::{Path, PathBuf};

use kubesched_core::node::{GpuState, NodeState};
use kubesched_core::request::{GpuDemand, PodRequest};

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
    let (cpu, mem, num, milli) = (
        t.column("cpu_milli")?,
        t.column("memory_mib")?,
        t.column("num_gpu")?,
        t.column("gpu_milli")?,
    );
    // The multi-GPU variants ship without this column.
    let spec = t.column("gpu_spec").ok();
    let mut pods = Vec::with_capacity(t.rows.len());
    for (line, row) in &t.rows {
        let num_gpu = t.number(*line, row, num, "num_gpu")?;
        let gpu_milli = t.number(*line, row, milli, "gpu_milli")?.min(1000) as u32;
        let gpu = match (num_gpu, gpu_milli) {
            (0, _) => GpuDemand::None,
            (1, m) if m > 0 && m < 1000 => GpuDemand::Share { milli: m },
            (n, _) => GpuDemand::Whole {
                count: u32::try_from(n).unwrap_or(u32::MAX),
            },
        };
        let mut req = PodRequest::cpu_only(
            t.number(*line, row, cpu, "cpu_milli")?,
            t.number(*line, row, mem, "memory_mib")?,
        )
        .with_gpu(gpu);
        if let Some(s) = spec.and_then(|c| row.get(c)).filter(|s| !s.is_empty()) {
            req.gpu_models = s.split('|').map(str::to_string).collect();
        }
        pods.push(req);
    }
    Ok(pods)
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
