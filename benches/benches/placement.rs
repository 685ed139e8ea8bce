//! Core hot paths: MIG allocator queries, candidate enumeration, the
//! incremental fragmentation delta and a policy's choice on one node.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_main!` generates an undocumented `main`.
#![allow(missing_docs)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use kubesched_benches::busy_mig_node;
use kubesched_core::fragmentation::{NodeFrag, Workload};
use kubesched_core::node::GpuSlots;
use kubesched_core::placement;
use kubesched_core::request::{GpuDemand, PodRequest};
use kubesched_core::scoring::{self, ScoreContext};

fn mig(p: &str) -> PodRequest {
    PodRequest::cpu_only(4000, 0).with_gpu(GpuDemand::Mig {
        profile: p.into(),
        count: 1,
    })
}

fn benches(c: &mut Criterion) {
    let node = busy_mig_node();
    let workload = Workload::from_counts(
        ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]
            .iter()
            .map(|p| (mig(p), 1)),
    );
    let req = mig("1g.10gb");
    if let GpuSlots::Mig(m) = &node.gpus[0].slots {
        c.bench_function("mig_fit_count_all_profiles", |b| {
            b.iter(|| {
                (0..m.gpu.geometry().profiles.len())
                    .map(|i| m.gpu.fit_count(black_box(i)))
                    .sum::<u32>()
            })
        });
    }
    c.bench_function("candidates_1g_on_8_gpus", |b| {
        b.iter(|| placement::candidates(black_box(&node), black_box(&req)))
    });
    let frag = NodeFrag::new(&node, &workload);
    let cands = placement::candidates(&node, &req).expect("fits");
    c.bench_function("frag_delta_one_candidate", |b| {
        b.iter(|| frag.value_after(black_box(&node), &workload, &req, &cands[0]))
    });
    c.bench_function("node_frag_summary", |b| {
        b.iter(|| NodeFrag::new(black_box(&node), &workload))
    });
    let policy = scoring::by_name("kubesched").expect("known policy");
    c.bench_function("production_choose_on_node", |b| {
        b.iter(|| {
            let ctx = ScoreContext {
                workload: &workload,
                seed: 1,
                frag: Some(&frag),
            };
            policy.choose(black_box(&node), black_box(&req), &ctx)
        })
    });
}

criterion_group!(placement_benches, benches);
criterion_main!(placement_benches);
