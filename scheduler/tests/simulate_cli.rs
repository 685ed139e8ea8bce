//! `kubesched simulate` as a user runs it: the timed replay's table, its files,
//! the README's job file example, the metric definitions in `--help`, and
//! clear refusals of bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::kubesched;

use kubesched_core::catalogue::mig_geometry;
use kubesched_scheduler::simulate::jobs::parse_jobs;

fn scratch(name: &str) -> PathBuf {
    common::scratch("simulate_cli", name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_timed_replay_prints_one_row_per_metric_and_ours_first() {
    let out_dir = scratch("table");
    let out = kubesched(&[
        "simulate",
        "--seeds",
        "2",
        "--generate-jobs",
        "400",
        "--policies",
        "kubesched,first-fit,hami",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let header = stdout
        .lines()
        .find(|l| l.contains("kubesched") && l.contains("first-fit"))
        .expect("a header naming the policies");
    assert!(
        header.find("kubesched") < header.find("first-fit"),
        "{header}"
    );
    for metric in [
        "compute util %",
        "stranded %",
        "wait p95 s",
        "completed / h",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(metric))
            .unwrap_or_else(|| panic!("no {metric} row in\n{stdout}"));
        assert_eq!(row.matches('±').count(), 3, "{row}");
    }
    let runs = std::fs::read_to_string(out_dir.join("timed-runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 1 + 3 * 2, "{runs}");
    let series = std::fs::read_to_string(out_dir.join("timed-series.csv")).unwrap();
    assert!(
        series.lines().count() > 6 * 50,
        "{}",
        series.lines().count()
    );
}

#[test]
fn the_readme_job_file_example_parses_and_runs() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find("```json\n")
        .expect("a JSON Lines example in the README")
        + 8;
    let example: String = readme[start..]
        .lines()
        .take_while(|l| !l.trim_start().starts_with("```"))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let geometry = mig_geometry("H100-80GB").unwrap();
    let jobs = parse_jobs(&example, Some(&geometry)).unwrap();
    assert_eq!(jobs.len(), 4);
    let path = scratch("readme").join("jobs.jsonl");
    std::fs::write(&path, &example).unwrap();
    let out = kubesched(&[
        "simulate",
        "--jobs",
        path.to_str().unwrap(),
        "--cluster-nodes",
        "1x2xH100-80GB,1x2xL40S",
        "--seeds",
        "1",
        "--policies",
        "kubesched",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let never = stdout
        .lines()
        .find(|l| l.starts_with("never placed"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(never.contains("0.00"), "every example job fits: {never}");
}

#[test]
fn bad_input_is_refused_with_where_and_why() {
    let path = scratch("bad").join("jobs.jsonl");
    std::fs::write(
        &path,
        "{\"id\": \"a\", \"arrival_ms\": 0, \"duration_ms\": 10, \"profile\": \"1g.10gb\"}\n\
         {\"id\": \"b\", \"arrival_ms\": 0, \"duration_ms\": 10, \"profile\": \"9g.900gb\"}\n",
    )
    .unwrap();
    let out = kubesched(&["simulate", "--jobs", path.to_str().unwrap(), "--seeds", "1"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 2") && stderr.contains("9g.900gb"),
        "{stderr}"
    );
    for (args, expect) in [
        (&["simulate", "--policies", "nope"][..], "unknown policy"),
        (
            &["simulate", "--cluster-nodes", "2x4xNoSuchGpu"][..],
            "NoSuchGpu",
        ),
        (&["simulate", "--warmup", "1.5"][..], "--warmup"),
        (&["simulate", "--seeds", "0"][..], "--seeds"),
    ] {
        let out = kubesched(args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}

#[test]
fn help_defines_every_metric() {
    let out = kubesched(&["simulate", "--help"]);
    let help = text(&out.stdout);
    assert!(out.status.success());
    for m in kubesched_scheduler::simulate::timed_table::METRICS {
        assert!(help.contains(m.name), "--help lacks {}", m.name);
    }
    for flag in [
        "--generate",
        "--jobs",
        "--cluster-nodes",
        "--create-delay-ms",
        "--warmup",
        "--replay",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn a_snapshot_with_a_job_file_is_replayed_timed_on_the_cluster_as_it_is() {
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/snapshot.json");
    let path = scratch("snapshot").join("jobs.jsonl");
    let jobs: String = (0..20)
        .map(|i| {
            format!(
                "{{\"id\": \"j{i}\", \"arrival_ms\": {}, \"duration_ms\": 60000, \"profile\": \"1g.10gb\"}}\n",
                i * 5000
            )
        })
        .collect();
    std::fs::write(&path, jobs).unwrap();
    let out = kubesched(&[
        "simulate",
        "--cluster",
        snapshot.to_str().unwrap(),
        "--jobs",
        path.to_str().unwrap(),
        "--seeds",
        "1",
        "--policies",
        "kubesched,first-fit",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("20 jobs per seed"), "{stdout}");
    let util = stdout
        .lines()
        .find(|l| l.starts_with("compute util %"))
        .unwrap_or_else(|| panic!("{stdout}"));
    // The snapshot's running pods hold devices from the start: the cluster is never idle.
    let first: f64 = util
        .split_whitespace()
        .nth(3)
        .unwrap()
        .split('±')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first > 0.0, "{util}");
    // Alone, --cluster is still the what-if of the snapshot's pending pods.
    let out = kubesched(&[
        "simulate",
        "--cluster",
        snapshot.to_str().unwrap(),
        "--policies",
        "kubesched",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("pending pods"),
        "{}",
        text(&out.stdout)
    );
}
