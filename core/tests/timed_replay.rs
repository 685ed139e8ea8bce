//! The timed replay on small cases whose outcome can be worked out by hand,
//! and its invariants on random ones: no slice held by two jobs at any
//! instant, every departure gives back exactly what its job held, and a job
//! waits only while no legal placement exists for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubesched_core::catalogue::mig_geometry;
use kubesched_core::fragmentation::Workload;
use kubesched_core::node::{GpuSlots, GpuState, NodeState};
use kubesched_core::placement;
use kubesched_core::request::{GpuDemand, PodRequest};
use kubesched_core::scoring::{self, FirstFit};
use kubesched_core::timed::{Job, Length, TimedConfig, TimedReplay};
use proptest::prelude::*;

fn h100_node(name: &str, gpus: u32, plain: u32) -> NodeState {
    let mut node = NodeState::new(name, 64_000, 1 << 20);
    for i in 0..gpus {
        node.gpus.push(GpuState::dynamic_mig(
            i,
            &format!("{name}-{i}"),
            "H100-80GB",
            None,
            mig_geometry("H100-80GB").unwrap(),
        ));
    }
    for i in 0..plain {
        node.gpus.push(GpuState::plain(
            gpus + i,
            &format!("{name}-p{i}"),
            "L40S",
            None,
        ));
    }
    node
}

fn mig(profile: &str) -> PodRequest {
    PodRequest::cpu_only(1000, 1024).with_gpu(GpuDemand::Mig {
        profile: profile.into(),
        count: 1,
    })
}

fn job(id: &str, arrival_s: u64, seconds: u64, request: PodRequest) -> Job {
    Job {
        id: id.into(),
        arrival_ms: arrival_s * 1000,
        length: Length::Duration { ms: seconds * 1000 },
        request,
    }
}

fn in_order() -> TimedConfig {
    TimedConfig {
        shuffle_nodes: false,
        warmup: 0.0,
        ..TimedConfig::default()
    }
}

#[test]
fn a_waiting_job_does_not_hold_up_the_ones_behind_it() {
    let nodes = vec![h100_node("n", 2, 0)];
    let jobs = vec![
        job("a", 0, 100, mig("4g.40gb")),
        job("b", 1, 200, mig("7g.80gb")),
        job("c", 2, 50, mig("7g.80gb")),
        job("d", 3, 300, mig("3g.40gb")),
    ];
    let workload = Workload::from_requests(jobs.iter().map(|j| &j.request), 1.0);
    let run = TimedReplay::new(nodes, &jobs, &FirstFit, &workload, &in_order()).finish(|_, _| {});
    let placed: Vec<Option<u64>> = run.records.iter().map(|r| r.placed_ms).collect();
    // c waits; d, behind it, fits beside a at once; c gets b's GPU when b ends at 201 s
    // (a's end at 100 s frees nothing c can use while d runs there).
    assert_eq!(
        placed,
        vec![Some(0), Some(1000), Some(201_000), Some(3000)],
        "{run:?}"
    );
    assert_eq!(run.records[2].end_ms, Some(251_000));
    assert_eq!(run.metrics.never_placed, 0);
    assert!(
        (run.metrics.makespan_s - 303.0).abs() < 1e-9,
        "{:?}",
        run.metrics
    );
}

#[test]
fn work_runs_for_as_long_as_the_granted_share_needs_and_delays_hold_the_slice() {
    let nodes = vec![h100_node("n", 1, 0)];
    let jobs = vec![
        Job {
            id: "w".into(),
            arrival_ms: 0,
            length: Length::Work { ms: 3000 },
            request: mig("3g.40gb"),
        },
        job("next", 1, 10, mig("7g.80gb")),
    ];
    let workload = Workload::from_requests(jobs.iter().map(|j| &j.request), 1.0);
    let cfg = TimedConfig {
        create_delay_ms: 500,
        destroy_delay_ms: 2000,
        ..in_order()
    };
    let run = TimedReplay::new(nodes, &jobs, &FirstFit, &workload, &cfg).finish(|_, _| {});
    let w = &run.records[0];
    // 3000 ms of whole-GPU work on 3/7 of a GPU: 7000 ms, after 500 ms of creation.
    assert_eq!(
        (w.placed_ms, w.end_ms, w.released_ms),
        (Some(0), Some(7500), Some(9500))
    );
    // The 7g waits until the 3g's instance is destroyed.
    assert_eq!(run.records[1].placed_ms, Some(9500));
    assert!(
        run.metrics.request_fragmented_pct == 0.0,
        "{:?}",
        run.metrics
    );
}

#[test]
fn a_fragmented_gpu_is_measured_and_its_waiting_job_counted() {
    // One GPU: 1g slices at the lowest starts leave room a 4g cannot use once
    // a 1g sits in each half; the 4g waits although 5 slices are free in total.
    let nodes = vec![h100_node("n", 1, 0)];
    let jobs = vec![
        job("a", 0, 1000, mig("1g.10gb")),
        job("b", 0, 10, mig("1g.10gb")),
        job("c", 0, 1000, mig("1g.10gb")),
        job("d", 0, 10, mig("1g.10gb")),
        job("e", 0, 1000, mig("1g.10gb")),
        job("big", 20, 100, mig("4g.40gb")),
        job("late", 2000, 1, mig("1g.10gb")),
    ];
    let workload = Workload::from_requests(jobs.iter().map(|j| &j.request), 1.0);
    let run = TimedReplay::new(nodes, &jobs, &FirstFit, &workload, &in_order()).finish(|_, _| {});
    // First fit puts a..e at 0..4; b and d leave at 10 s: free 1, 3, 5, 6, 7.
    // A 4g needs 0-3 or 4-7: it waits until a, c, e leave at 1000 s.
    assert_eq!(run.records[5].placed_ms, Some(1_000_000));
    assert!(run.records[5].request_fragmented);
    assert!(run.metrics.physical_frag_pct > 0.0, "{:?}", run.metrics);
    assert!(run.metrics.wait_p99_s >= 980.0, "{:?}", run.metrics);
}

/// One GPU's occupancy: plain milli in use, MIG instances (start, profile) sorted, and the
/// allocated mask.
type GpuKey = (u32, Vec<(u8, usize)>, u8);

/// A node's occupancy, independent of the order instances were made in.
fn canonical(node: &NodeState) -> (u64, u64, Vec<GpuKey>, Vec<String>) {
    let gpus = node
        .gpus
        .iter()
        .map(|g| match &g.slots {
            GpuSlots::Plain { used_milli } => (*used_milli, Vec::new(), 0),
            GpuSlots::Mig(m) => {
                let mut slots: Vec<(u8, usize)> =
                    m.gpu.slots().iter().map(|s| (s.start, s.profile)).collect();
                slots.sort_unstable();
                (0, slots, m.allocated)
            }
        })
        .collect();
    let mut classes: Vec<String> = node
        .classes
        .iter()
        .map(|(d, n)| format!("{d:?}x{n}"))
        .collect();
    classes.sort();
    (node.cpu_free_milli, node.memory_free_mib, gpus, classes)
}

fn arb_request() -> impl Strategy<Value = PodRequest> {
    prop_oneof![
        Just(mig("1g.10gb")),
        Just(mig("1g.20gb")),
        Just(mig("2g.20gb")),
        Just(mig("3g.40gb")),
        Just(mig("4g.40gb")),
        Just(mig("7g.80gb")),
        Just(PodRequest::cpu_only(1000, 1024).with_gpu(GpuDemand::Mig {
            profile: "1g.10gb".into(),
            count: 2,
        })),
        Just(PodRequest::cpu_only(2000, 1024).with_gpu(GpuDemand::Whole { count: 1 })),
        Just(PodRequest::cpu_only(500, 512).with_gpu(GpuDemand::Share { milli: 400 })),
        Just(PodRequest::cpu_only(30_000, 1024)),
        // Fits nowhere: never placed, never blocks anyone.
        Just(mig("7g.80gb").with_gpu(GpuDemand::Mig {
            profile: "7g.80gb".into(),
            count: 3,
        })),
    ]
}

fn arb_jobs() -> impl Strategy<Value = Vec<Job>> {
    prop::collection::vec((0u64..200, 1u64..120, any::<bool>(), arb_request()), 1..60).prop_map(
        |v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (arrival, length, work, request))| Job {
                    id: format!("j{i}"),
                    arrival_ms: arrival * 1000,
                    length: if work {
                        Length::Work { ms: length * 500 }
                    } else {
                        Length::Duration { ms: length * 1000 }
                    },
                    request,
                })
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_slice_is_held_twice_departures_free_what_was_held_and_waits_are_forced(
        jobs in arb_jobs(),
        policy in 0usize..scoring::policy_names().count(),
        nodes in 1usize..4,
        create in 0u64..3,
        destroy in 0u64..3,
    ) {
        let name = scoring::policy_names().nth(policy).unwrap();
        let policy = scoring::by_name(name).unwrap();
        let cluster: Vec<NodeState> =
            (0..nodes).map(|i| h100_node(&format!("n{i}"), 2, 1)).collect();
        let workload = Workload::from_requests(jobs.iter().map(|j| &j.request), 1.0);
        let cfg = TimedConfig {
            create_delay_ms: create * 1000,
            destroy_delay_ms: destroy * 1000,
            ..in_order()
        };
        let mut replay = TimedReplay::new(cluster.clone(), &jobs, policy.as_ref(), &workload, &cfg);
        while replay.step() {
            // What the jobs hold, applied to the empty cluster, is exactly the cluster now:
            // nothing held twice, nothing held that no job holds.
            let mut rebuilt = cluster.clone();
            let mut holdings: Vec<_> = replay.holdings().collect();
            holdings.sort_by_key(|h| h.job);
            for h in holdings {
                placement::apply(&mut rebuilt[h.node], &jobs[h.job].request, &h.candidate)
                    .map_err(|e| TestCaseError::fail(format!("{name}: job {} double-held: {e}", h.job)))?;
            }
            let now: Vec<_> = replay.nodes().iter().map(canonical).collect();
            prop_assert_eq!(rebuilt.iter().map(canonical).collect::<Vec<_>>(), now, "{}", name);
            // A waiting job has no legal placement anywhere.
            for &j in replay.pending() {
                for node in replay.nodes() {
                    prop_assert!(
                        placement::candidates(node, &jobs[j].request).is_err(),
                        "{name}: job {j} waits though it fits {}", node.name
                    );
                }
            }
        }
        let nodes_at_end = replay.nodes().to_vec();
        let run = replay.finish(|_, _| {});
        // Every departure gave back what its job held: the cluster is empty again.
        prop_assert_eq!(nodes_at_end, cluster.clone());
        for (job, r) in jobs.iter().zip(&run.records) {
            let fits_empty = cluster.iter().any(|n| placement::candidates(n, &job.request).is_ok());
            prop_assert_eq!(r.placed_ms.is_some(), fits_empty, "{}", job.id);
            if let (Some(placed), Some(end), Some(released)) = (r.placed_ms, r.end_ms, r.released_ms) {
                prop_assert!(placed >= job.arrival_ms && end > placed && released >= end);
            }
        }
    }
}

#[test]
fn lengths_at_the_end_of_time_saturate_instead_of_overflowing() {
    // A job file may say anything that fits a u64.
    let nodes = vec![h100_node("n", 1, 0)];
    let jobs = vec![
        job("forever", 0, 1, mig("7g.80gb")),
        job("late", 10, 1, mig("7g.80gb")),
    ];
    let mut jobs = jobs;
    jobs[0].length = Length::Duration { ms: u64::MAX };
    jobs[1].arrival_ms = u64::MAX - 5;
    let workload = Workload::from_requests(jobs.iter().map(|j| &j.request), 1.0);
    let cfg = TimedConfig {
        create_delay_ms: 1000,
        destroy_delay_ms: 1000,
        ..in_order()
    };
    let run = TimedReplay::new(nodes, &jobs, &FirstFit, &workload, &cfg).finish(|_, _| {});
    assert_eq!(run.records[0].end_ms, Some(u64::MAX));
    assert_eq!(run.records[1].placed_ms, Some(u64::MAX));
    assert!(run.series.len() <= 100_000);
}
