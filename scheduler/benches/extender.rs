//! Filter + prioritize latency on synthetic clusters of 500 and 5000 nodes
//! with 8 GPUs each (dynamic-MIG H100s, static-MIG A100s and whole H100s,
//! partly occupied), in-process and over loopback HTTP.
//!
//! Criterion reports mean/median; each case also runs a plain timing loop
//! and prints p50/p99/max, since the targets are stated as p99.
//! "steady" changes one node between cycles (as one bind does); "cold"
//! asks for a new request shape every cycle, so no memo helps: it costs one
//! evaluation per distinct node state. Two occupancies: "random" (about half of
//! each node taken at random positions, nearly every node in its own state: the
//! worst case) and "packed" (eight pods per node in the first free positions, as
//! a packing scheduler leaves nodes: few distinct states, 40,000 pods at 5,000
//! nodes). Each cluster's resident memory is printed.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_main!` generates an undocumented `main`.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Node, Pod};
use kubesched_core::annotation::DevicesAnnotation;
use kubesched_core::placement;
use kubesched_scheduler::extender::Extender;
use kubesched_scheduler::extender::cluster_state::PodRecord;
use kubesched_scheduler::extender::config::Config;
use kubesched_scheduler::extender::protocol::ExtenderArgs;
use kubesched_scheduler::extender::server;

const WORKLOAD: &str = "workload:
  fixed:
    - {request: {cpu_milli: 4000, memory_mib: 16384, gpu: {kind: mig, profile: 1g.10gb, count: 1}}, popularity: 4}
    - {request: {cpu_milli: 8000, memory_mib: 32768, gpu: {kind: mig, profile: 2g.20gb, count: 1}}, popularity: 2}
    - {request: {cpu_milli: 8000, memory_mib: 65536, gpu: {kind: mig, profile: 3g.40gb, count: 1}}, popularity: 2}
    - {request: {cpu_milli: 16000, memory_mib: 131072, gpu: {kind: whole, count: 1}}, popularity: 2}
    - {request: {cpu_milli: 32000, memory_mib: 262144, gpu: {kind: whole, count: 4}}, popularity: 1}
";

fn synthetic_node(i: usize) -> Node {
    let name = format!("gpu-{i:05}");
    let numa = |g: u32| g / 4;
    match i % 4 {
        0 | 1 => {
            let gpus: Vec<(&str, Option<&str>, u32)> = (0..8)
                .map(|g| ("H100-80GB", Some("dynamic"), numa(g)))
                .collect();
            common::node(&name, &gpus, &[])
        }
        2 => {
            let gpus: Vec<(&str, Option<&str>, u32)> = (0..8)
                .map(|g| ("A100-80GB", Some("static"), numa(g)))
                .collect();
            common::node(
                &name,
                &gpus,
                &[("3g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)],
            )
        }
        _ => {
            let gpus: Vec<(&str, Option<&str>, u32)> =
                (0..8).map(|g| ("H100-80GB", None, numa(g))).collect();
            common::node(&name, &gpus, &[])
        }
    }
}

const SHAPES: [(&str, &str); 4] = [
    ("nvidia.com/mig-1g.10gb", "1"),
    ("nvidia.com/mig-2g.20gb", "1"),
    ("nvidia.com/mig-3g.40gb", "1"),
    ("nvidia.com/gpu", "1"),
];

/// How a cluster is filled before the timing.
#[derive(Clone, Copy)]
enum Occupancy {
    /// About half of each node, random shapes at random candidates.
    Random,
    /// Eight pods per node at the first candidate, the shapes' order turning every four nodes.
    Packed,
}

impl Occupancy {
    fn label(self) -> &'static str {
        match self {
            Occupancy::Random => "random",
            Occupancy::Packed => "packed",
        }
    }
}

/// Binds pod `k` of node `i` of shape `shape` at its `pick`-th candidate (modulo), as the
/// pod watch would record it with its devices annotation. False when it does not fit.
fn bind(ext: &Extender, i: usize, k: usize, shape: usize, pick: usize) -> bool {
    let name = format!("gpu-{i:05}");
    let (res, q) = SHAPES[shape % SHAPES.len()];
    let uid = format!("{name}-{k}");
    let p = common::pod(&uid, &uid, &[("cpu", "2"), ("memory", "8Gi"), (res, q)]);
    let Ok(req) = ext.reader().read(&p) else {
        return false;
    };
    let mut st = ext.state_mut();
    let Some(state) = st.node_state(&name) else {
        return false;
    };
    let Ok(cands) = placement::candidates(state, &req) else {
        return false;
    };
    let Ok(ann) = DevicesAnnotation::from_candidate(state, res, &cands[pick % cands.len()]) else {
        return false;
    };
    st.upsert_pod(
        &uid,
        PodRecord {
            namespace: "bench".into(),
            name: uid.clone(),
            node: Some(name),
            request: req,
            devices: Some(Ok(ann)),
        },
    );
    true
}

/// Fills the cluster; returns the pods bound.
fn occupy(ext: &Extender, nodes: usize, occupancy: Occupancy) -> usize {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut bound = 0;
    for i in 0..nodes {
        for k in 0..8 {
            let placed = match occupancy {
                Occupancy::Random => {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    !seed.is_multiple_of(2)
                        && bind(ext, i, k, (seed >> 8) as usize, (seed >> 16) as usize)
                }
                Occupancy::Packed => bind(ext, i, k, k + i / 4, 0),
            };
            bound += usize::from(placed);
        }
    }
    bound
}

/// Resident memory of this process in MiB.
fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn cluster(nodes: usize, occupancy: Occupancy) -> Arc<Extender> {
    let before = resident_mib();
    let list: Vec<Node> = (0..nodes).map(synthetic_node).collect();
    let (ext, _) = common::extender(Config::from_yaml(WORKLOAD).expect("workload"), &list);
    drop(list);
    let pods = occupy(&ext, nodes, occupancy);
    println!(
        "{nodes} nodes, {} occupancy: {pods} pods bound, {} distinct node states, {:.0} MiB \
         more resident",
        occupancy.label(),
        ext.state().distinct_states(),
        resident_mib() - before
    );
    ext
}

fn request(nodes: usize, cpu: &str) -> (Pod, ExtenderArgs) {
    let p = common::pod(
        "bench-pod",
        "bench-uid",
        &[
            ("cpu", cpu),
            ("memory", "16Gi"),
            ("nvidia.com/mig-1g.10gb", "1"),
        ],
    );
    let args = ExtenderArgs {
        pod: p.clone(),
        nodes: None,
        node_names: Some((0..nodes).map(|i| format!("gpu-{i:05}")).collect()),
    };
    (p, args)
}

/// One scheduling cycle in-process: filter, then prioritize the survivors.
fn cycle(ext: &Extender, args: &ExtenderArgs) -> usize {
    let f = ext.filter(args);
    let survivors = ExtenderArgs {
        pod: args.pod.clone(),
        nodes: None,
        node_names: Some(f.node_names),
    };
    ext.prioritize(&survivors).expect("prioritize").len()
}

/// Changes one node, as a bind between two cycles would.
fn touch(ext: &Extender, i: usize, nodes: usize) {
    let node = format!("gpu-{:05}", (i * 7919) % nodes);
    let uid = format!("churn-{}", i % 2);
    let mut st = ext.state_mut();
    st.remove_pod(&uid);
    st.upsert_pod(
        &uid,
        PodRecord {
            namespace: "bench".into(),
            name: uid.clone(),
            node: Some(node),
            request: kubesched_core::request::PodRequest::cpu_only(100, 0),
            devices: None,
        },
    );
}

fn percentiles(label: &str, mut t: Vec<Duration>) {
    t.sort();
    let at = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    println!(
        "{label}: n={} p50={:.3} ms p99={:.3} ms max={:.3} ms",
        t.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        t[t.len() - 1].as_secs_f64() * 1e3
    );
}

/// Times 40 scheduling cycles, each for a request shape not asked for before.
fn cold(ext: &Extender, nodes: usize, label: &str, first_cpu_milli: usize) {
    let mut times = Vec::new();
    for i in 0..40 {
        let (_, fresh) = request(nodes, &format!("{}m", first_cpu_milli + i));
        let t = Instant::now();
        cycle(ext, &fresh);
        times.push(t.elapsed());
    }
    percentiles(label, times);
}

fn in_process(c: &mut Criterion) {
    for nodes in [500usize, 5000] {
        let packed = cluster(nodes, Occupancy::Packed);
        cold(
            &packed,
            nodes,
            &format!("in-process cold {nodes} nodes packed"),
            1000,
        );
        drop(packed);
        let ext = cluster(nodes, Occupancy::Random);
        let (_, args) = request(nodes, "4");
        cycle(&ext, &args);
        let mut times = Vec::new();
        for i in 0..1000 {
            touch(&ext, i, nodes);
            let t = Instant::now();
            cycle(&ext, &args);
            times.push(t.elapsed());
        }
        percentiles(&format!("in-process steady {nodes} nodes"), times);
        cold(
            &ext,
            nodes,
            &format!("in-process cold {nodes} nodes random"),
            1000,
        );
        let mut i = 0;
        c.bench_function(&format!("filter+prioritize steady {nodes} nodes"), |b| {
            b.iter(|| {
                i += 1;
                touch(&ext, i, nodes);
                cycle(&ext, &args)
            })
        });
    }
}

fn over_http(c: &mut Criterion) {
    let nodes = 5000;
    let ext = cluster(nodes, Occupancy::Random);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(server::serve(ext.clone(), listener, std::future::pending()));
    let (_, args) = request(nodes, "4");
    let body = serde_json::to_vec(&args).expect("body");
    let mut client = rt.block_on(common::Http::connect(addr));
    let http_cycle = |client: &mut common::Http| {
        rt.block_on(async {
            let (status, text) = client.request("POST", "/filter", &body).await;
            assert_eq!(status, 200, "{text}");
            let reply: serde_json::Value = serde_json::from_str(&text).expect("reply");
            let survivors = serde_json::json!({"Pod": &args.pod, "Nodes": null, "NodeNames": reply["NodeNames"]});
            let (status, _) = client
                .request("POST", "/prioritize", survivors.to_string().as_bytes())
                .await;
            assert_eq!(status, 200);
        })
    };
    http_cycle(&mut client);
    let mut times = Vec::new();
    for i in 0..300 {
        touch(&ext, i, nodes);
        let t = Instant::now();
        http_cycle(&mut client);
        times.push(t.elapsed());
    }
    percentiles("loopback HTTP steady 5000 nodes (filter+prioritize)", times);
    let mut i = 0;
    c.bench_function("HTTP filter+prioritize steady 5000 nodes", |b| {
        b.iter(|| {
            i += 1;
            touch(&ext, i, nodes);
            http_cycle(&mut client)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = in_process, over_http
}
criterion_main!(benches);
