//! Reading a job file: a timed workload written by hand or by a script, as JSON
//! Lines, one pod per line. Blank lines and lines starting with `#` are skipped.
//!
//! ```text
//! # id, arrival and length: duration_ms (fixed) or work_ms (whole-GPU work)
//! {"id": "train-1", "arrival_ms": 0, "work_ms": 600000, "profile": "3g.40gb"}
//! {"id": "infer-1", "arrival_ms": 250, "duration_ms": 60000, "memory_mib": 15000}
//! {"id": "batch-1", "arrival_ms": 500, "duration_ms": 90000, "gpus": 2, "cpu_milli": 16000}
//! {"id": "share-1", "arrival_ms": 500, "duration_ms": 9000, "gpus": 1, "gpu_milli": 250}
//! {"id": "etl-1", "arrival_ms": 900, "duration_ms": 5000, "memory_request_mib": 8192}
//! ```
//!
//! Fields (unknown ones are errors, so a typo is not silently dropped):
//!
//! - `id` (string, required, unique in the file) and `arrival_ms` (required).
//! - Exactly one of `duration_ms` and `work_ms`, at least 1.
//! - At most one GPU form: `profile`, one MIG instance of that profile; `memory_mib`,
//!   one MIG instance of the smallest profile of the given geometry that holds that
//!   much memory; or `gpus`, that many whole GPUs, where `gpu_milli` 1 to 999 (with
//!   `gpus` 1) asks for that share of one GPU instead and `gpu_milli` 1000 means whole
//!   GPUs. None of them: a CPU-only pod.
//! - `cpu_milli` (default 1000) and `memory_request_mib` (default 1024): the pod's
//!   CPU and memory requests.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use kubesched_core::catalogue::{CatalogueError, MAX_PROFILE_NAME, MigGeometry};
use kubesched_core::request::{GpuDemand, PodRequest, RequestError, validate_profile_name};
use kubesched_core::text::quote;
use kubesched_core::timed::{Job, Length};
use serde::Deserialize;

/// Longest line accepted, in bytes (without its line break).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most jobs one file may hold.
pub const MAX_JOBS: usize = 5_000_000;
/// CPU request of a job that gives no `cpu_milli`, in millicores.
pub const DEFAULT_CPU_MILLI: u64 = 1000;
/// Memory request of a job that gives no `memory_request_mib`, in MiB.
pub const DEFAULT_MEMORY_REQUEST_MIB: u64 = 1024;

/// Characters of a JSON parser message an error repeats.
const MAX_MESSAGE_CHARS: usize = 300;

/// Why a job file could not be read. Every error about the content names its line,
/// counting from 1.
#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path of the job file.
        path: PathBuf,
        /// The I/O error from reading it.
        #[source]
        source: std::io::Error,
    },
    /// A line is not UTF-8 text.
    #[error("line {line}: not UTF-8 text: {source}")]
    NotUtf8 {
        /// Line number.
        line: usize,
        /// Where the text stopped being UTF-8.
        #[source]
        source: std::str::Utf8Error,
    },
    /// A line is longer than [`MAX_LINE_BYTES`].
    #[error("line {line}: longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong {
        /// Line number.
        line: usize,
    },
    /// The file holds more than [`MAX_JOBS`] jobs.
    #[error("line {line}: more than {MAX_JOBS} jobs in one file")]
    TooManyJobs {
        /// Line number of the first job over the limit.
        line: usize,
    },
    /// A line is not a job object: malformed JSON, a missing or unknown field, a value of
    /// the wrong type.
    #[error("line {line}, column {column}: {message}")]
    Json {
        /// Line number.
        line: usize,
        /// Column in the line, counting from 1.
        column: usize,
        /// The parser's message, cut short.
        message: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A MIG profile the given geometry does not offer.
    #[error("line {line}: {source}")]
    UnknownProfile {
        /// Line number.
        line: usize,
        /// The catalogue's error, naming the profiles it does offer.
        #[source]
        source: CatalogueError,
    },
    /// A MIG profile name that is not of the form `3g.40gb` (checked when no geometry is
    /// given).
    #[error("line {line}: {source}")]
    MalformedProfile {
        /// Line number.
        line: usize,
        /// The request parser's error.
        #[source]
        source: RequestError,
    },
    /// A job id already used by an earlier line.
    #[error("line {line}: job id {} is already used on line {first}", quote(.id))]
    DuplicateId {
        /// Line number.
        line: usize,
        /// The repeated id.
        id: String,
        /// Line of its first use.
        first: usize,
    },
    /// A job whose fields are well-formed JSON but do not make a job.
    #[error("line {line}: {detail}")]
    Invalid {
        /// Line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
}

/// One line of the file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    id: String,
    arrival_ms: u64,
    duration_ms: Option<u64>,
    work_ms: Option<u64>,
    profile: Option<String>,
    memory_mib: Option<u64>,
    gpus: Option<u32>,
    gpu_milli: Option<u32>,
    cpu_milli: Option<u64>,
    memory_request_mib: Option<u64>,
}

impl RawJob {
    /// The job this line describes, checked (`mig` resolves profiles and memory sizes).
    fn into_job(self, line: usize, mig: Option<&MigGeometry>) -> Result<Job, JobFileError> {
        let invalid = |detail: String| JobFileError::Invalid { line, detail };
        if self.id.is_empty() {
            return Err(invalid("the id is empty".into()));
        }
        let length = match (self.duration_ms, self.work_ms) {
            (Some(0), None) => return Err(invalid("duration_ms must be at least 1".into())),
            (None, Some(0)) => return Err(invalid("work_ms must be at least 1".into())),
            (Some(ms), None) => Length::Duration { ms },
            (None, Some(ms)) => Length::Work { ms },
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "both duration_ms and work_ms are given; a job has one of them".into(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "neither duration_ms nor work_ms is given; a job needs one of them".into(),
                ));
            }
        };
        let forms = [
            self.profile.is_some(),
            self.memory_mib.is_some(),
            self.gpus.is_some(),
        ];
        if forms.iter().filter(|&&given| given).count() > 1 {
            return Err(invalid(
                "more than one of profile, memory_mib and gpus is given; a job asks for one kind of GPU"
                    .into(),
            ));
        }
        if let Some(milli) = self.gpu_milli
            && self.gpus.is_none()
        {
            return Err(invalid(format!(
                "gpu_milli {milli} is given without gpus (\"gpus\": 1 asks for a share of one GPU)"
            )));
        }
        let gpu = if let Some(profile) = self.profile {
            mig_profile(line, profile, mig)?
        } else if let Some(mib) = self.memory_mib {
            let profile = profile_holding(mib, mig).map_err(invalid)?;
            GpuDemand::Mig { profile, count: 1 }
        } else if let Some(gpus) = self.gpus {
            whole_or_share(gpus, self.gpu_milli).map_err(invalid)?
        } else {
            GpuDemand::None
        };
        Ok(Job {
            id: self.id,
            arrival_ms: self.arrival_ms,
            length,
            request: PodRequest::cpu_only(
                self.cpu_milli.unwrap_or(DEFAULT_CPU_MILLI),
                self.memory_request_mib
                    .unwrap_or(DEFAULT_MEMORY_REQUEST_MIB),
            )
            .with_gpu(gpu),
        })
    }
}

/// One instance of a named profile: one the geometry offers, or, without a geometry,
/// a well-formed name.
fn mig_profile(
    line: usize,
    profile: String,
    mig: Option<&MigGeometry>,
) -> Result<GpuDemand, JobFileError> {
    if profile.len() > MAX_PROFILE_NAME {
        return Err(JobFileError::Invalid {
            line,
            detail: format!("profile {} is too long", quote(&profile)),
        });
    }
    match mig {
        Some(geometry) => {
            geometry
                .profile(&profile)
                .map_err(|source| JobFileError::UnknownProfile { line, source })?;
        }
        None => validate_profile_name(&profile)
            .map_err(|source| JobFileError::MalformedProfile { line, source })?,
    }
    Ok(GpuDemand::Mig { profile, count: 1 })
}

/// The smallest profile of the geometry holding `mib` MiB, or what is wrong.
fn profile_holding(mib: u64, mig: Option<&MigGeometry>) -> Result<String, String> {
    let Some(geometry) = mig else {
        return Err(format!(
            "memory_mib {mib} needs a MIG geometry to pick a profile from; give a profile instead"
        ));
    };
    if mib == 0 {
        return Err("memory_mib must be at least 1".into());
    }
    match geometry.smallest_holding(mib) {
        Some(p) => Ok(p.name.clone()),
        None => {
            let largest = geometry
                .profiles
                .iter()
                .filter_map(|p| p.memory_mib())
                .max()
                .unwrap_or(0);
            Err(format!(
                "memory_mib {mib}: no MIG profile holds that much (the largest holds {largest} MiB)"
            ))
        }
    }
}

/// Whole GPUs, or a share of one GPU, or what is wrong.
fn whole_or_share(gpus: u32, milli: Option<u32>) -> Result<GpuDemand, String> {
    if gpus == 0 {
        return Err("gpus must be at least 1 (leave it out for a CPU-only pod)".into());
    }
    match milli {
        None | Some(1000) => Ok(GpuDemand::Whole { count: gpus }),
        Some(m @ 1..=999) if gpus == 1 => Ok(GpuDemand::Share { milli: m }),
        Some(m @ 1..=999) => Err(format!(
            "gpu_milli {m} is a share of one GPU: gpus must be 1, not {gpus}"
        )),
        Some(m) => Err(format!("gpu_milli {m} is out of range (1 to 1000)")),
    }
}

/// A parser error as a line's error, the column kept and the message cut short.
fn json_error(line: usize, source: serde_json::Error) -> JobFileError {
    let text = source.to_string();
    let position = format!(" at line {} column {}", source.line(), source.column());
    let message = text
        .strip_suffix(position.as_str())
        .unwrap_or(text.as_str());
    let message = match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => message.to_string(),
        Some((cut, _)) => format!("{}...", &message[..cut]),
    };
    JobFileError::Json {
        line,
        column: source.column(),
        message,
        source,
    }
}

/// Jobs read so far, line by line.
struct Reader<'a> {
    mig: Option<&'a MigGeometry>,
    max_jobs: usize,
    jobs: Vec<Job>,
    /// Line of each id's job.
    ids: HashMap<String, usize>,
}

impl<'a> Reader<'a> {
    fn new(mig: Option<&'a MigGeometry>, max_jobs: usize) -> Self {
        Reader {
            mig,
            max_jobs,
            jobs: Vec::new(),
            ids: HashMap::new(),
        }
    }

    /// Reads line `line` (its text without the line break).
    fn line(&mut self, line: usize, text: &str) -> Result<(), JobFileError> {
        if text.len() > MAX_LINE_BYTES {
            return Err(JobFileError::LineTooLong { line });
        }
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return Ok(());
        }
        if self.jobs.len() >= self.max_jobs {
            return Err(JobFileError::TooManyJobs { line });
        }
        let raw: RawJob = serde_json::from_str(text).map_err(|e| json_error(line, e))?;
        let job = raw.into_job(line, self.mig)?;
        match self.ids.entry(job.id.clone()) {
            Entry::Occupied(first) => {
                return Err(JobFileError::DuplicateId {
                    line,
                    id: job.id,
                    first: *first.get(),
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(line);
            }
        }
        self.jobs.push(job);
        Ok(())
    }

    /// The jobs, by arrival (jobs arriving together keep the file's order).
    fn finish(mut self) -> Vec<Job> {
        self.jobs.sort_by_key(|j| j.arrival_ms);
        self.jobs
    }
}

/// Jobs of a job file's text, sorted by arrival (jobs arriving together keep the
/// file's order). `mig` is the geometry `profile` names are checked against and
/// `memory_mib` sizes resolved with; without it, profile names are only checked for
/// their shape and `memory_mib` is an error.
pub fn parse_jobs(text: &str, mig: Option<&MigGeometry>) -> Result<Vec<Job>, JobFileError> {
    parse_capped(text, mig, MAX_JOBS)
}

fn parse_capped(
    text: &str,
    mig: Option<&MigGeometry>,
    max_jobs: usize,
) -> Result<Vec<Job>, JobFileError> {
    let mut reader = Reader::new(mig, max_jobs);
    for (i, line) in text.lines().enumerate() {
        reader.line(i + 1, line)?;
    }
    Ok(reader.finish())
}

/// Jobs of the job file at `path`, as [`parse_jobs`] reads them; the file is read a
/// line at a time, so an over-long line is refused without being held whole.
pub fn read_jobs(path: &Path, mig: Option<&MigGeometry>) -> Result<Vec<Job>, JobFileError> {
    let read_error = |source: std::io::Error| JobFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut input = BufReader::new(file);
    let mut reader = Reader::new(mig, MAX_JOBS);
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        // At most one byte past the limit and a line break: enough to tell a line too long.
        let n = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 2)
            .read_until(b'\n', &mut buf)
            .map_err(read_error)?;
        if n == 0 {
            break;
        }
        line += 1;
        let bytes = buf.strip_suffix(b"\n").unwrap_or(buf.as_slice());
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.len() > MAX_LINE_BYTES {
            return Err(JobFileError::LineTooLong { line });
        }
        let text =
            std::str::from_utf8(bytes).map_err(|source| JobFileError::NotUtf8 { line, source })?;
        reader.line(line, text)?;
    }
    Ok(reader.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesched_core::catalogue;

    fn h100() -> &'static MigGeometry {
        catalogue::model("H100-80GB")
            .unwrap()
            .mig
            .as_deref()
            .unwrap()
    }

    /// The error of a file, read with the H100's geometry.
    fn error(text: &str) -> String {
        parse_jobs(text, Some(h100())).unwrap_err().to_string()
    }

    const VALID: &str = r#"# every form of job
{"id": "cpu", "arrival_ms": 500, "duration_ms": 1000}

{"id": "prof", "arrival_ms": 100, "work_ms": 2000, "profile": "3g.40gb", "cpu_milli": 4000, "memory_request_mib": 8192}
{"id": "mem", "arrival_ms": 100, "duration_ms": 5, "memory_mib": 15000}
{"id": "whole", "arrival_ms": 0, "duration_ms": 7, "gpus": 2}
{"id": "share", "arrival_ms": 300, "duration_ms": 7, "gpus": 1, "gpu_milli": 250}
{"id": "full", "arrival_ms": 300, "duration_ms": 7, "gpus": 1, "gpu_milli": 1000}
   # an indented comment
{"id": "me", "arrival_ms": 300, "duration_ms": 7, "profile": "1g.10gb+me"}
"#;

    #[test]
    fn reads_every_form_sorted_by_arrival() {
        let jobs = parse_jobs(VALID, Some(h100())).unwrap();
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["whole", "prof", "mem", "share", "full", "me", "cpu"]);
        let by_id = |id: &str| jobs.iter().find(|j| j.id == id).unwrap();
        let mig = |p: &str| GpuDemand::Mig {
            profile: p.into(),
            count: 1,
        };

        let cpu = by_id("cpu");
        assert_eq!(cpu.arrival_ms, 500);
        assert_eq!(cpu.length, Length::Duration { ms: 1000 });
        assert_eq!(
            cpu.request,
            PodRequest::cpu_only(DEFAULT_CPU_MILLI, DEFAULT_MEMORY_REQUEST_MIB)
        );

        let prof = by_id("prof");
        assert_eq!(prof.length, Length::Work { ms: 2000 });
        assert_eq!(
            prof.request,
            PodRequest::cpu_only(4000, 8192).with_gpu(mig("3g.40gb"))
        );
        assert_eq!(by_id("mem").request.gpu, mig("1g.20gb"));
        assert_eq!(by_id("whole").request.gpu, GpuDemand::Whole { count: 2 });
        assert_eq!(by_id("share").request.gpu, GpuDemand::Share { milli: 250 });
        assert_eq!(by_id("full").request.gpu, GpuDemand::Whole { count: 1 });
        assert_eq!(by_id("me").request.gpu, mig("1g.10gb+me"));
    }

    #[test]
    fn without_a_geometry_profile_names_are_checked_for_shape_only() {
        let jobs = parse_jobs(
            r#"{"id": "a", "arrival_ms": 0, "duration_ms": 1, "profile": "9g.90gb"}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            jobs[0].request.gpu,
            GpuDemand::Mig {
                profile: "9g.90gb".into(),
                count: 1
            }
        );
        let err = parse_jobs(
            "\n{\"id\": \"a\", \"arrival_ms\": 0, \"duration_ms\": 1, \"profile\": \"huge\"}",
            None,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            JobFileError::MalformedProfile { line: 2, .. }
        ));
        assert!(err.to_string().starts_with("line 2: malformed MIG profile"));
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = error("# first\n{\"id\": \"a\", \"arrival_ms\": 0,\n");
        assert!(err.starts_with("line 2, column "), "{err}");
        assert!(err.contains("EOF while parsing"), "{err}");
        assert!(!err.contains("at line 1"), "{err}");
        let err = error(r#"{"id": "a", "arrival_ms": -1, "duration_ms": 1}"#);
        assert!(err.starts_with("line 1, column "), "{err}");
        assert!(err.contains("-1"), "{err}");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = error(r#"{"id": "a", "arrival_ms": 0, "durations_ms": 1}"#);
        assert!(err.starts_with("line 1, column "), "{err}");
        assert!(err.contains("unknown field `durations_ms`"), "{err}");
    }

    #[test]
    fn missing_fields_are_errors() {
        let err = error(r#"{"arrival_ms": 0, "duration_ms": 1}"#);
        assert!(err.contains("missing field `id`"), "{err}");
        assert_eq!(
            error(r#"{"id": "", "arrival_ms": 0, "duration_ms": 1}"#),
            "line 1: the id is empty"
        );
    }

    #[test]
    fn both_or_neither_length_is_an_error() {
        assert_eq!(
            error("\n\n{\"id\": \"a\", \"arrival_ms\": 0, \"duration_ms\": 1, \"work_ms\": 1}"),
            "line 3: both duration_ms and work_ms are given; a job has one of them"
        );
        assert_eq!(
            error(r#"{"id": "a", "arrival_ms": 0}"#),
            "line 1: neither duration_ms nor work_ms is given; a job needs one of them"
        );
    }

    #[test]
    fn zero_length_is_an_error() {
        assert_eq!(
            error(r#"{"id": "a", "arrival_ms": 0, "duration_ms": 0}"#),
            "line 1: duration_ms must be at least 1"
        );
        assert_eq!(
            error(r#"{"id": "a", "arrival_ms": 0, "work_ms": 0}"#),
            "line 1: work_ms must be at least 1"
        );
    }

    #[test]
    fn unknown_profile_for_the_geometry_is_an_error() {
        let err = parse_jobs(
            "#\n{\"id\": \"a\", \"arrival_ms\": 0, \"duration_ms\": 1, \"profile\": \"4g.24gb\"}",
            Some(h100()),
        )
        .unwrap_err();
        assert!(matches!(err, JobFileError::UnknownProfile { line: 2, .. }));
        let text = err.to_string();
        assert!(
            text.starts_with("line 2: unknown MIG profile \"4g.24gb\""),
            "{text}"
        );
        assert!(text.contains("3g.40gb"), "names the known profiles: {text}");
        let long = format!(
            r#"{{"id": "a", "arrival_ms": 0, "duration_ms": 1, "profile": "{}"}}"#,
            "1".repeat(100)
        );
        assert!(error(&long).starts_with("line 1: profile \"111"));
        assert!(error(&long).ends_with("is too long"));
    }

    #[test]
    fn memory_without_a_geometry_is_an_error() {
        let err = parse_jobs(
            r#"{"id": "a", "arrival_ms": 0, "duration_ms": 1, "memory_mib": 5000}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: memory_mib 5000 needs a MIG geometry to pick a profile from; give a profile instead"
        );
    }

    #[test]
    fn memory_too_large_for_any_profile_is_an_error() {
        assert_eq!(
            error(r#"{"id": "a", "arrival_ms": 0, "duration_ms": 1, "memory_mib": 82945}"#),
            "line 1: memory_mib 82945: no MIG profile holds that much (the largest holds 81920 MiB)"
        );
        assert_eq!(
            error(r#"{"id": "a", "arrival_ms": 0, "duration_ms": 1, "memory_mib": 0}"#),
            "line 1: memory_mib must be at least 1"
        );
    }

    #[test]
    fn two_gpu_forms_are_an_error() {
        assert_eq!(
            error(
                r#"{"id": "a", "arrival_ms": 0, "duration_ms": 1, "gpus": 1, "profile": "1g.10gb"}"#
            ),
            "line 1: more than one of profile, memory_mib and gpus is given; a job asks for one kind of GPU"
        );
    }

    #[test]
    fn zero_gpus_is_an_error() {
        assert_eq!(
            error(r#"{"id": "a", "arrival_ms": 0, "duration_ms": 1, "gpus": 0}"#),
            "line 1: gpus must be at least 1 (leave it out for a CPU-only pod)"
        );
    }

    #[test]
    fn gpu_milli_out_of_range_is_an_error() {
        let line = |milli: u32, gpus: u32| {
            error(&format!(
                r#"{{"id": "a", "arrival_ms": 0, "duration_ms": 1, "gpus": {gpus}, "gpu_milli": {milli}}}"#
            ))
        };
        assert_eq!(
            line(0, 1),
            "line 1: gpu_milli 0 is out of range (1 to 1000)"
        );
        assert_eq!(
            line(1001, 1),
            "line 1: gpu_milli 1001 is out of range (1 to 1000)"
        );
        assert_eq!(
            line(500, 2),
            "line 1: gpu_milli 500 is a share of one GPU: gpus must be 1, not 2"
        );
        assert_eq!(
            error(r#"{"id": "a", "arrival_ms": 0, "duration_ms": 1, "gpu_milli": 500}"#),
            "line 1: gpu_milli 500 is given without gpus (\"gpus\": 1 asks for a share of one GPU)"
        );
        // 1000 milli of each GPU is whole GPUs, as in the Alibaba trace.
        let jobs = parse_jobs(
            r#"{"id": "a", "arrival_ms": 0, "duration_ms": 1, "gpus": 8, "gpu_milli": 1000}"#,
            None,
        )
        .unwrap();
        assert_eq!(jobs[0].request.gpu, GpuDemand::Whole { count: 8 });
    }

    #[test]
    fn duplicate_ids_are_an_error() {
        let text = "{\"id\": \"a\", \"arrival_ms\": 0, \"duration_ms\": 1}\n# x\n{\"id\": \"a\", \"arrival_ms\": 5, \"duration_ms\": 1}\n";
        assert_eq!(
            error(text),
            "line 3: job id \"a\" is already used on line 1"
        );
    }

    #[test]
    fn over_long_lines_are_refused() {
        let text = format!("#\n#{}\n", "x".repeat(MAX_LINE_BYTES));
        assert_eq!(
            error(&text),
            format!("line 2: longer than {MAX_LINE_BYTES} bytes")
        );
    }

    #[test]
    fn too_many_jobs_are_refused() {
        let text = "{\"id\": \"a\", \"arrival_ms\": 0, \"duration_ms\": 1}\n\n{\"id\": \"b\", \"arrival_ms\": 0, \"duration_ms\": 1}\n";
        assert_eq!(parse_capped(text, None, 2).unwrap().len(), 2);
        let err = parse_capped(text, None, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("line 3: more than {MAX_JOBS} jobs in one file")
        );
    }

    #[test]
    fn reads_a_file_line_by_line() {
        let dir = std::env::temp_dir().join(format!("kubesched-jobs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jobs.jsonl");
        // CRLF line breaks and no break after the last line.
        std::fs::write(&path, VALID.replace('\n', "\r\n").trim_end()).unwrap();
        let from_file = read_jobs(&path, Some(h100())).unwrap();
        assert_eq!(from_file, parse_jobs(VALID, Some(h100())).unwrap());

        // A blank line of the longest length is still a blank line.
        std::fs::write(&path, format!("{}\r\n#\n", " ".repeat(MAX_LINE_BYTES))).unwrap();
        assert!(read_jobs(&path, None).unwrap().is_empty());
        // Refused after its first bytes, whatever follows.
        let long = format!("#\n{}\n{{}}\n", " ".repeat(3 * MAX_LINE_BYTES));
        std::fs::write(&path, long).unwrap();
        let err = read_jobs(&path, None).unwrap_err();
        assert!(
            matches!(err, JobFileError::LineTooLong { line: 2 }),
            "{err}"
        );
        std::fs::write(&path, format!("#\n{}", " ".repeat(MAX_LINE_BYTES + 1))).unwrap();
        let err = read_jobs(&path, None).unwrap_err();
        assert!(
            matches!(err, JobFileError::LineTooLong { line: 2 }),
            "{err}"
        );
        std::fs::write(&path, b"#\n\xff\n").unwrap();
        let err = read_jobs(&path, None).unwrap_err();
        assert!(
            matches!(err, JobFileError::NotUtf8 { line: 2, .. }),
            "{err}"
        );

        let missing = dir.join("missing.jsonl");
        let err = read_jobs(&missing, None).unwrap_err();
        assert!(matches!(err, JobFileError::Read { .. }));
        assert!(err.to_string().contains("missing.jsonl"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
