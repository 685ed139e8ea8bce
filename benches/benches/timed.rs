//! The timed-replay bench: a saturated churn run of 10,000 jobs on 1,000 MIG GPUs
//! (125 nodes of 8 H100s in dynamic MIG mode), one seed, under the production
//! policy and the cheapest baseline. The bar: seconds, in a release build.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_main!` generates an undocumented `main`.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use kubesched_core::scoring;
use kubesched_core::timed::{Arrivals, Generator, TimedConfig};
use kubesched_scheduler::simulate::builtin;
use kubesched_scheduler::simulate::cluster_spec::parse_node_spec;
use kubesched_scheduler::simulate::timed::{self, JobSource, TimedScenario};

fn benches(c: &mut Criterion) {
    let nodes = parse_node_spec("125x8xH100-80GB").unwrap();
    // The built-in mix's MIG jobs: the only kinds an all-MIG cluster can run.
    let mix: Vec<_> = builtin::mix()
        .into_iter()
        .filter(|(req, _)| matches!(req.gpu, kubesched_core::request::GpuDemand::Mig { .. }))
        .collect();
    let generator = Generator {
        arrivals: Arrivals::Saturated,
        jobs: 10_000,
        load: 0.95,
        mean_runtime_ms: 600_000.0,
        capacity_gpus: 1000.0,
        mix: timed::mix_on(&mix, &nodes),
        seed: 42,
    };
    let scenario = TimedScenario {
        name: "saturated".into(),
        nodes,
        jobs: JobSource::Generated(generator),
        coverage: 0.95,
    };
    let mut group = c.benchmark_group("timed_saturated_10k_jobs_1000_mig_gpus");
    group.sample_size(10);
    for name in ["kubesched", "first-fit"] {
        let policy = scoring::by_name(name).unwrap();
        let cfg = TimedConfig {
            seed: 42,
            create_delay_ms: 2000,
            destroy_delay_ms: 1000,
            warmup: 0.25,
            ..TimedConfig::default()
        };
        group.bench_function(name, |b| {
            b.iter(|| timed::run_one(&scenario, policy.as_ref(), &cfg, |_, _| {}))
        });
    }
    group.finish();
}

criterion_group!(timed_benches, benches);
criterion_main!(timed_benches);
