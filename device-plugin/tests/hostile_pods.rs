//! Pods as an attacker who may only create pods would make them, read by the agent's real pod
//! reader and allocated by the real allocator: a decoy without a GPU request, an annotation
//! that contradicts its pod's request, and a forged (unsigned or copied) annotation. None of
//! them steers a device, and each is refused at once rather than holding up the node.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{annotation, build_waiting_from_fixture};
use k8s_openapi::api::core::v1::Pod;
use kubesched_core::request::ResourceNames;
use kubesched_core::signing::SigningKey;
use kubesched_device_plugin::devices::{AllocationError, Allocator};
use kubesched_device_plugin::pods::InMemoryPods;
use kubesched_device_plugin::pods::PodReader;
use kubesched_proto::deviceplugin::v1beta1::ContainerPreferredAllocationRequest;

const MIG_1G: &str = "nvidia.com/mig-1g.10gb";
const GPU: &str = "nvidia.com/gpu";
const KEY: &str = "kubesched.ai/devices";

fn key() -> SigningKey {
    SigningKey::from_bytes(b"the cluster's shared signing key").unwrap()
}

fn reader(signer: Option<SigningKey>) -> PodReader {
    PodReader::new(
        ResourceNames::default(),
        "kubesched.ai",
        "test-node",
        signer,
    )
}

/// A pod bound to the test node asking for `request` (resource, count), with `annotation`.
fn pod(name: &str, request: Option<(&str, u32)>, annotation: Option<String>) -> Pod {
    let mut container = serde_json::json!({"name": "main"});
    if let Some((resource, count)) = request {
        container["resources"] = serde_json::json!({"limits": {resource: count.to_string()}});
    }
    let mut annotations = serde_json::Map::new();
    if let Some(a) = annotation {
        annotations.insert(KEY.into(), a.into());
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "annotations": annotations},
        "spec": {"nodeName": "test-node", "containers": [container]},
        "status": {"phase": "Pending"}
    }))
    .unwrap()
}

/// The extender's annotation for `pod` naming fixture devices `ids`, signed with `key` when given.
fn written(pod: &str, resource: &str, ids: &[&str], key: Option<&SigningKey>) -> String {
    let mut ann = annotation(resource, ids);
    if let Some(key) = key {
        key.sign(&mut ann, &format!("uid-{pod}"));
    }
    ann.to_json()
}

fn allocator(
    pods: &[Pod],
    signer: Option<SigningKey>,
    wait: Duration,
) -> (Arc<Allocator>, Arc<InMemoryPods>) {
    let reader = reader(signer);
    let source = Arc::new(InMemoryPods::new(
        pods.iter().filter_map(|p| reader.view(p)).collect(),
    ));
    let (_, allocator) = build_waiting_from_fixture(source.clone(), wait);
    (allocator, source)
}

fn preferred(available: &[&str]) -> ContainerPreferredAllocationRequest {
    ContainerPreferredAllocationRequest {
        available_device_i_ds: available.iter().map(|s| s.to_string()).collect(),
        must_include_device_i_ds: vec![],
        allocation_size: 1,
    }
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Reproduction 3: a pod with no GPU request, bound to the node, whose annotation names a
/// free MIG device. Before, the next pod admitted got the decoy's device while its own
/// annotation named another, and the pod after it got the first one's.
#[tokio::test]
async fn a_decoy_without_a_gpu_request_steers_nothing() {
    let pods = [
        pod(
            "decoy",
            None,
            Some(written("decoy", MIG_1G, &["MIG-1b"], None)),
        ),
        pod(
            "first",
            Some((MIG_1G, 1)),
            Some(written("first", MIG_1G, &["MIG-1a"], None)),
        ),
        pod(
            "second",
            Some((MIG_1G, 1)),
            Some(written("second", MIG_1G, &["MIG-1b"], None)),
        ),
    ];
    let (allocator, _) = allocator(&pods, None, Duration::ZERO);
    for (pod, device) in [("first", "MIG-1a"), ("second", "MIG-1b")] {
        let hint = allocator
            .preferred(MIG_1G, &preferred(&["MIG-1a", "MIG-1b"]))
            .await
            .unwrap();
        assert_eq!(hint.device_i_ds, ids(&[device]), "the hint for {pod}");
        let response = allocator.allocate(MIG_1G, &ids(&[device])).await.unwrap();
        assert_eq!(
            response
                .annotations
                .get("kubesched.ai/pod")
                .map(String::as_str),
            Some(format!("default/{pod}").as_str())
        );
    }
}

/// Reproduction 4: a `mig-1g.10gb` pod whose annotation says `nvidia.com/gpu`. Before, its
/// GetPreferredAllocation and Allocate each waited 15 s (a plain pod after it took 35.6 s to
/// run), it was then admitted with the agent's own pick, and the whole-GPU pod after it was
/// offered the GPU the bad annotation named.
#[tokio::test]
async fn a_contradicting_annotation_fails_at_once_and_holds_up_no_one() {
    let pods = [
        pod(
            "liar",
            Some((MIG_1G, 1)),
            Some(written("liar", GPU, &["GPU-0"], None)),
        ),
        pod("plain", Some((GPU, 1)), None),
    ];
    let (allocator, _) = allocator(&pods, None, Duration::from_secs(15));
    let started = Instant::now();
    let refused = allocator
        .preferred(MIG_1G, &preferred(&["MIG-1a", "MIG-1b"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AllocationError::UnreadableAnnotation { reason, .. }
            if reason.contains("but the pod asks for nvidia.com/mig-1g.10gb")),
        "{refused}"
    );
    let refused = allocator
        .allocate(MIG_1G, &ids(&["MIG-1a"]))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, AllocationError::UnreadableAnnotation { .. }),
        "{refused}"
    );
    // The whole-GPU pod is not offered the GPU the liar's annotation named, nor kept waiting.
    let response = allocator.allocate(GPU, &ids(&["GPU-1"])).await.unwrap();
    assert!(response.envs.values().any(|v| v == "GPU-1"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

/// With the signing key, an annotation the extender did not sign for this very pod is
/// refused: unsigned, or signed for another pod and copied. The pod fails with the reason;
/// the correctly annotated pod after it gets exactly its device.
#[tokio::test]
async fn forged_and_copied_annotations_are_refused_and_the_signed_one_followed() {
    let k = key();
    let signed_for_victim = written("victim", MIG_1G, &["MIG-1b"], Some(&k));
    let pods = [
        pod(
            "forged",
            Some((MIG_1G, 1)),
            Some(written("forged", MIG_1G, &["MIG-1b"], None)),
        ),
        pod("copied", Some((MIG_1G, 1)), Some(signed_for_victim.clone())),
        pod("victim", Some((MIG_1G, 1)), Some(signed_for_victim)),
    ];
    let (allocator, source) = allocator(&pods, Some(k.clone()), Duration::from_secs(15));
    let started = Instant::now();
    for (pod, reason) in [
        ("forged", "not signed by the scheduler"),
        ("copied", "does not match this pod"),
    ] {
        let refused = allocator
            .preferred(MIG_1G, &preferred(&["MIG-1a", "MIG-1b"]))
            .await
            .unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains(&format!("default/{pod}")) && text.contains(reason),
            "{text}"
        );
        let refused = allocator
            .allocate(MIG_1G, &ids(&["MIG-1b"]))
            .await
            .unwrap_err();
        assert!(refused.to_string().contains(reason), "{refused}");
        // The kubelet fails the pod's admission: it leaves the node's pod list.
        let left: Vec<Pod> = pods
            .iter()
            .skip_while(|p| p.metadata.name.as_deref() != Some(pod))
            .skip(1)
            .cloned()
            .collect();
        let reader = reader(Some(k.clone()));
        source.set(left.iter().filter_map(|p| reader.view(p)).collect());
    }
    let hint = allocator
        .preferred(MIG_1G, &preferred(&["MIG-1a", "MIG-1b"]))
        .await
        .unwrap();
    assert_eq!(hint.device_i_ds, ids(&["MIG-1b"]));
    let response = allocator.allocate(MIG_1G, &ids(&["MIG-1b"])).await.unwrap();
    assert_eq!(
        response
            .annotations
            .get("kubesched.ai/pod")
            .map(String::as_str),
        Some("default/victim")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Reproduction 8: error messages echoed the whole input (a 1 MiB id gave a 786 KB error).
#[tokio::test]
async fn errors_quote_a_short_prefix_of_an_id() {
    let (allocator, _) = allocator(&[], None, Duration::ZERO);
    let huge = "G".repeat(1 << 20);
    let refused = allocator.allocate(GPU, &[huge]).await.unwrap_err();
    assert!(
        refused.to_string().len() < 300,
        "{} bytes",
        refused.to_string().len()
    );
}
