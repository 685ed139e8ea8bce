//! The one GPU count rule of both binaries: a GPU quantity is read with the API server's
//! grammar (`kubesched_k8s::quantity`) and must be a whole number. The extender schedules by
//! `PodRequestReader` and the agent hands out devices by it, so this table pins both.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::Pod;
use kubesched_core::request::{GpuDemand, ResourceNames};
use kubesched_k8s::{PodRequestError, PodRequestReader};

/// `Some(n)`: a demand of `n` GPUs; `None`: refused.
const GPU_COUNTS: &[(&str, Option<u32>)] = &[
    ("1", Some(1)),
    ("1e0", Some(1)),
    ("1E0", Some(1)),
    ("+2", Some(2)),
    ("2000m", Some(2)),
    ("0.3e1", Some(3)),
    ("4.", Some(4)),
    ("1k", Some(1000)),
    ("0", Some(0)),
    ("-0", Some(0)),
    ("500m", None),
    ("1.5", None),
    ("1e-3", None),
    ("1n", None),
    (" 1", None),
    ("1 ", None),
    ("", None),
    (".", None),
    ("1Gb", None),
    ("-1", None),
    ("0x1", None),
];

#[test]
fn gpu_counts_follow_the_whole_number_rule() {
    let reader = PodRequestReader::new(ResourceNames::default(), "kubesched.ai");
    for &(text, expected) in GPU_COUNTS {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "c", "resources": {"limits": {"nvidia.com/gpu": text}}}
        ]}}))
        .unwrap();
        let got = reader.read(&pod).map(|r| r.gpu);
        match expected {
            Some(0) => assert_eq!(got, Ok(GpuDemand::None), "{text:?}"),
            Some(count) => assert_eq!(got, Ok(GpuDemand::Whole { count }), "{text:?}"),
            None => assert!(
                matches!(
                    got,
                    Err(PodRequestError::NotWhole { .. } | PodRequestError::Quantity { .. })
                ),
                "{text:?}: {got:?}"
            ),
        }
    }
}

#[test]
fn each_container_asks_for_whole_gpus_even_when_the_halves_add_up() {
    let reader = PodRequestReader::new(ResourceNames::default(), "kubesched.ai");
    let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [
        {"name": "a", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "500m"}}},
        {"name": "b", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "500m"}}}
    ]}}))
    .unwrap();
    assert_eq!(
        reader.read(&pod).map(|r| r.gpu).unwrap_err().to_string(),
        "container a: resource nvidia.com/mig-1g.10gb must be a whole number, got \"500m\""
    );
}

/// Found by the `quantity` fuzz target: `9Gi` GPUs was read as 4294967295 (saturated), so
/// messages named a count the pod never asked for.
#[test]
fn a_count_beyond_any_node_is_refused_not_saturated() {
    let reader = PodRequestReader::new(ResourceNames::default(), "kubesched.ai");
    let pod = |count: &str| -> Pod {
        serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"nvidia.com/gpu": count}}},
            {"name": "b", "resources": {"limits": {"nvidia.com/gpu": "4294967295"}}}
        ]}}))
        .unwrap()
    };
    let error = reader.read(&pod("9Gi")).unwrap_err().to_string();
    assert!(error.contains("13958643711 of nvidia.com/gpu"), "{error}");
    // Two counts that fit alone but not together.
    let error = reader.read(&pod("1")).unwrap_err().to_string();
    assert!(error.contains("more than any node can have"), "{error}");
    assert_eq!(
        reader.read(&pod("0")).map(|r| r.gpu),
        Ok(GpuDemand::Whole { count: u32::MAX })
    );
}
