//! The trace-replay bench: one policy, one seed, the whole arrival stream.
//! Always the built-in scenario; the Alibaba default trace too when its
//! files are found (see `trace_dir`), otherwise a message says it was skipped.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_main!` generates an undocumented `main`.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use kubesched_core::inventory::MigMode;
use kubesched_core::replay::ReplayConfig;
use kubesched_core::scoring;
use kubesched_scheduler::simulate::{self, Scenario, builtin, trace};

fn replay(c: &mut Criterion, label: &str, scenario: &Scenario, policies: &[&str]) {
    let mut group = c.benchmark_group(label);
    group.sample_size(10);
    for name in policies {
        let policy = scoring::by_name(name).expect("known policy");
        let cfg = ReplayConfig {
            seed: 42,
            ..Default::default()
        };
        group.bench_function(*name, |b| {
            b.iter(|| simulate::run_one(scenario, policy.as_ref(), &cfg, |_, _| {}))
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let scenario = builtin::scenario(MigMode::Dynamic, 1000);
    replay(
        c,
        "replay_builtin",
        &scenario,
        &["kubesched", "fgd", "best-fit"],
    );
    match trace::default_dir() {
        Some(dir) => match (
            trace::load_nodes(&dir.join("openb_node_list_gpu_node.csv")),
            trace::load_pods(&dir.join("openb_pod_list_default.csv")),
        ) {
            (Ok(nodes), Ok(pods)) => {
                let scenario = Scenario::from_trace("default", nodes, pods, 0.95);
                replay(
                    c,
                    "replay_trace_default",
                    &scenario,
                    &["kubesched", "fgd", "best-fit"],
                );
            }
            (Err(e), _) | (_, Err(e)) => eprintln!("trace replay bench skipped: {e}"),
        },
        None => eprintln!(
            "trace replay bench skipped: set KUBESCHED_TRACE_DIR to the cluster-trace-gpu-v2023 csv folder"
        ),
    }
}

criterion_group!(replay_benches, benches);
criterion_main!(replay_benches);
