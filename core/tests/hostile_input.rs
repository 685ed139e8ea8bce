//! Property tests over documents from outside: arbitrary inventories and devices
//! annotations, valid-looking or not, go through the parsers and the placement code. Nothing
//! panics or overflows, in debug or release, and whatever is accepted never hands one
//! device (a whole GPU or a MIG position) to two pods.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use kubesched_core::annotation::DevicesAnnotation;
use kubesched_core::inventory::NodeInventory;
use kubesched_core::node::{GpuSlots, NodeState};
use kubesched_core::placement::{self, DeviceChoice};
use kubesched_core::request::{GpuDemand, PodRequest};
use proptest::prelude::*;
use serde_json::{Value, json};

const PROFILES: [&str; 5] = ["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb", "9g.1gb"];

/// A small number, sometimes far out of range.
fn byte() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..10,
        Just(255),
        Just(256),
        Just(u64::from(u32::MAX) + 1)
    ]
}

/// Device ids drawn from a small pool, so duplicates are common.
fn id() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["G0", "G1", "G2", "M0", "M1", "G0,G1", "G::x", ""])
        .prop_map(str::to_string)
}

fn profile_doc() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(PROFILES.to_vec()),
        byte(),
        byte(),
        prop::collection::vec(byte(), 0..4),
        byte(),
    )
        .prop_map(|(name, compute, width, starts, max)| {
            json!({"name": name, "compute_slices": compute, "width": width,
                   "starts": starts, "max_count": max})
        })
}

fn gpu_doc() -> impl Strategy<Value = Value> {
    (
        0u32..4,
        id(),
        prop::sample::select(vec!["H100-80GB", "L4", "A30", "Z9"]),
        prop::option::of((
            any::<bool>(),
            prop::option::of((byte(), byte(), prop::collection::vec(profile_doc(), 0..4))),
            prop::collection::vec(
                (prop::sample::select(PROFILES.to_vec()), byte(), id()),
                0..4,
            ),
        )),
    )
        .prop_map(|(index, uuid, model, mig)| {
            let mut gpu = json!({"index": index, "uuid": uuid, "model": model,
                "pciBusId": "0000:01:00.0", "memoryMib": 1, "healthy": true});
            if let Some((dynamic, geometry, instances)) = mig {
                let instances: Vec<Value> = instances
                    .into_iter()
                    .map(|(p, start, uuid)| json!({"profile": p, "start": start, "uuid": uuid}))
                    .collect();
                let mut m = json!({"mode": if dynamic {"dynamic"} else {"static"},
                                   "instances": instances});
                if let Some((positions, compute, profiles)) = geometry {
                    m["geometry"] = json!({"positions": positions, "compute_slices": compute,
                                           "profiles": profiles});
                }
                gpu["mig"] = m;
            }
            gpu
        })
}

fn inventory_doc() -> impl Strategy<Value = String> {
    prop::collection::vec(gpu_doc(), 0..5).prop_map(|gpus| {
        json!({"version": 1, "node": "n", "agentVersion": "t", "gpus": gpus}).to_string()
    })
}

/// A devices annotation and the demand of the pod carrying it.
fn annotation_doc() -> impl Strategy<Value = (String, GpuDemand)> {
    (
        prop::sample::select(PROFILES.to_vec()),
        1u32..4,
        any::<bool>(),
        prop::collection::vec(
            (
                id(),
                prop::option::of((prop::sample::select(PROFILES.to_vec()), byte())),
            ),
            0..4,
        ),
    )
        .prop_map(|(profile, count, mig, devices)| {
            let devices: Vec<Value> = devices
                .into_iter()
                .map(|(uuid, m)| {
                    let mut d = json!({"gpuUuid": uuid, "gpuIndex": 0});
                    if let Some((p, start)) = m {
                        d["mig"] = json!({"profile": p, "start": start});
                    }
                    d
                })
                .collect();
            let text =
                json!({"version": 1, "node": "n", "resource": "r", "devices": devices}).to_string();
            let demand = if mig {
                GpuDemand::Mig {
                    profile: profile.to_string(),
                    count,
                }
            } else {
                GpuDemand::Whole { count }
            };
            (text, demand)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn hostile_documents_never_panic_nor_share_a_device(
        inventory in inventory_doc(),
        annotations in prop::collection::vec(annotation_doc(), 0..8),
    ) {
        let Ok(inv) = NodeInventory::from_json(&inventory) else { return Ok(()) };
        let mut ids = HashSet::new();
        for g in &inv.gpus {
            prop_assert!(ids.insert(g.uuid.clone()), "duplicate id accepted");
            for i in g.mig.iter().flat_map(|m| &m.instances) {
                prop_assert!(ids.insert(i.uuid.clone()), "duplicate id accepted");
            }
        }
        let Ok(mut node) = NodeState::from_inventory(&inv, 64_000, 1 << 20) else {
            return Ok(());
        };
        let mut whole = HashSet::new();
        let mut slices = HashSet::new();
        for (text, demand) in annotations {
            let Ok(ann) = DevicesAnnotation::from_json(&text) else { continue };
            let Ok(cand) = ann.to_candidate(&node, &demand) else { continue };
            let req = PodRequest::cpu_only(0, 0).with_gpu(demand);
            if placement::apply(&mut node, &req, &cand).is_err() {
                continue;
            }
            match &cand.choice {
                DeviceChoice::Gpus(gpus) => {
                    for g in gpus {
                        prop_assert!(whole.insert(*g), "GPU {g} handed out twice");
                    }
                }
                DeviceChoice::Mig(picks) => {
                    for p in picks {
                        let GpuSlots::Mig(m) = &node.gpus[p.gpu].slots else {
                            return Err(TestCaseError::fail("MIG pick on a plain GPU"));
                        };
                        let mask = m.gpu.geometry().profiles[p.profile].mask_at(p.start);
                        prop_assert!(mask != 0, "empty placement accepted");
                        for bit in 0..8u8 {
                            if mask & (1 << bit) != 0 {
                                prop_assert!(
                                    slices.insert((p.gpu, bit)),
                                    "position {bit} of GPU {} handed out twice", p.gpu
                                );
                            }
                        }
                    }
                }
                DeviceChoice::None | DeviceChoice::Share { .. } => {}
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_parsers(text in ".{0,200}") {
        let _ = NodeInventory::from_json(&text);
        let _ = DevicesAnnotation::from_json(&text);
    }
}

/// Reproduction 1 of the hostile-input report: `"width": 10, "starts": [250]` overflowed
/// `u8` (a panic in debug builds, accepted after wrapping in release).
#[test]
fn a_profile_past_the_gpu_is_refused_not_wrapped() {
    let doc = json!({"version": 1, "node": "n", "agentVersion": "t", "gpus": [{
        "index": 0, "uuid": "G0", "model": "H100-80GB", "pciBusId": "x", "memoryMib": 1,
        "healthy": true, "mig": {"mode": "dynamic", "geometry": {"positions": 8,
        "compute_slices": 7, "profiles": [{"name": "1g.10gb", "compute_slices": 1,
        "width": 10, "starts": [250], "max_count": 7}]}}}]});
    let err = NodeInventory::from_json(&doc.to_string()).expect_err("refused");
    assert!(err.to_string().contains("1g.10gb"), "{err}");
}

/// Reproduction 2: a devices annotation with `"start": 200` panicked at `1u8 << start`.
#[test]
fn an_annotation_start_past_the_gpu_is_refused() {
    let inv = json!({"version": 1, "node": "n", "agentVersion": "t", "gpus": [{
        "index": 0, "uuid": "G0", "model": "H100-80GB", "pciBusId": "x", "memoryMib": 1,
        "healthy": true, "mig": {"mode": "dynamic"}}]});
    let inv = NodeInventory::from_json(&inv.to_string()).expect("valid");
    let mut node = NodeState::from_inventory(&inv, 1000, 1000).expect("valid");
    let ann = DevicesAnnotation::from_json(
        r#"{"version":1,"node":"n","resource":"nvidia.com/mig-1g.10gb","devices":[{"gpuUuid":"G0","gpuIndex":0,"mig":{"profile":"1g.10gb","start":200}}]}"#,
    )
    .expect("parses");
    let demand = GpuDemand::Mig {
        profile: "1g.10gb".into(),
        count: 1,
    };
    let err = ann.to_candidate(&node, &demand).expect_err("refused");
    assert!(
        err.to_string().contains("cannot start at position 200"),
        "{err}"
    );
    // And placement itself refuses such a start rather than shift past the mask.
    let pick = placement::Candidate {
        choice: DeviceChoice::Mig(vec![placement::MigPick {
            gpu: 0,
            profile: 0,
            start: 200,
        }]),
        numa: None,
    };
    let req = PodRequest::cpu_only(0, 0).with_gpu(demand);
    assert!(placement::apply(&mut node, &req, &pick).is_err());
}
