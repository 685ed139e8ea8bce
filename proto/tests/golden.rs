//! Pins the wire format: each message is compared against protobuf bytes encoded by hand
//! from the kubelet's field numbers, in both directions (encode and decode).
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use kubesched_proto::deviceplugin::v1beta1 as dp;
use kubesched_proto::podresources::v1 as pr;
use prost::Message;

/// Hand-encodes a length-delimited field (wire type 2).
fn ld(field: u8, payload: &[u8]) -> Vec<u8> {
    assert!(
        payload.len() < 128,
        "single-byte lengths keep the goldens readable"
    );
    let mut out = vec![(field << 3) | 2, payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

/// Hand-encodes a small varint field (wire type 0).
fn varint(field: u8, value: u8) -> Vec<u8> {
    assert!(value < 128);
    vec![field << 3, value]
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn assert_golden<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, golden: &[u8]) {
    assert_eq!(msg.encode_to_vec(), golden, "encoding of {msg:?}");
    match M::decode(golden) {
        Ok(decoded) => assert_eq!(&decoded, msg),
        Err(e) => panic!("golden bytes do not decode: {e}"),
    }
}

fn numa(id: u8) -> Vec<u8> {
    varint(1, id)
}

#[test]
fn register_request_field_numbers() {
    let msg = dp::RegisterRequest {
        version: "v1beta1".into(),
        endpoint: "g.sock".into(),
        resource_name: "nvidia.com/gpu".into(),
        options: Some(dp::DevicePluginOptions {
            pre_start_required: true,
            get_preferred_allocation_available: true,
        }),
    };
    let golden = cat(&[
        ld(1, b"v1beta1"),
        ld(2, b"g.sock"),
        ld(3, b"nvidia.com/gpu"),
        ld(4, &cat(&[varint(1, 1), varint(2, 1)])),
    ]);
    assert_golden(&msg, &golden);
}

#[test]
fn list_and_watch_device_with_topology() {
    let msg = dp::ListAndWatchResponse {
        devices: vec![dp::Device {
            id: "GPU-1".into(),
            health: dp::HEALTHY.into(),
            topology: Some(dp::TopologyInfo {
                nodes: vec![dp::NumaNode { id: 1 }],
            }),
        }],
    };
    let device = cat(&[ld(1, b"GPU-1"), ld(2, b"Healthy"), ld(3, &ld(1, &numa(1)))]);
    assert_golden(&msg, &ld(1, &device));
}

#[test]
fn preferred_allocation_messages() {
    let req = dp::PreferredAllocationRequest {
        container_requests: vec![dp::ContainerPreferredAllocationRequest {
            available_device_i_ds: vec!["a".into(), "b".into()],
            must_include_device_i_ds: vec!["a".into()],
            allocation_size: 2,
        }],
    };
    let container = cat(&[ld(1, b"a"), ld(1, b"b"), ld(2, b"a"), varint(3, 2)]);
    assert_golden(&req, &ld(1, &container));

    let resp = dp::PreferredAllocationResponse {
        container_responses: vec![dp::ContainerPreferredAllocationResponse {
            device_i_ds: vec!["a".into(), "b".into()],
        }],
    };
    assert_golden(&resp, &ld(1, &cat(&[ld(1, b"a"), ld(1, b"b")])));
}

#[test]
fn allocate_request_and_response() {
    let req = dp::AllocateRequest {
        container_requests: vec![dp::ContainerAllocateRequest {
            devices_ids: vec!["MIG-x".into()],
        }],
    };
    assert_golden(&req, &ld(1, &ld(1, b"MIG-x")));

    let container = dp::ContainerAllocateResponse {
        envs: HashMap::from([("K".to_string(), "V".to_string())]),
        mounts: vec![dp::Mount {
            container_path: "/c".into(),
            host_path: "/h".into(),
            read_only: true,
        }],
        devices: vec![dp::DeviceSpec {
            container_path: "/dev/c".into(),
            host_path: "/dev/h".into(),
            permissions: "rw".into(),
        }],
        annotations: HashMap::from([("A".to_string(), "B".to_string())]),
        cdi_devices: vec![dp::CdiDevice {
            name: "nvidia.com/gpu=0".into(),
        }],
    };
    let golden = cat(&[
        ld(1, &cat(&[ld(1, b"K"), ld(2, b"V")])),
        ld(2, &cat(&[ld(1, b"/c"), ld(2, b"/h"), varint(3, 1)])),
        ld(3, &cat(&[ld(1, b"/dev/c"), ld(2, b"/dev/h"), ld(3, b"rw")])),
        ld(4, &cat(&[ld(1, b"A"), ld(2, b"B")])),
        ld(5, &ld(1, b"nvidia.com/gpu=0")),
    ]);
    let resp = dp::AllocateResponse {
        container_responses: vec![container],
    };
    assert_golden(&resp, &ld(1, &golden));
}

#[test]
fn pre_start_container_request() {
    let msg = dp::PreStartContainerRequest {
        devices_ids: vec!["d".into()],
    };
    assert_golden(&msg, &ld(1, b"d"));
    assert_golden(&dp::Empty {}, &[]);
}

#[test]
fn pod_resources_list_response() {
    let devices = pr::ContainerDevices {
        resource_name: "nvidia.com/gpu".into(),
        device_ids: vec!["GPU-1".into()],
        topology: Some(pr::TopologyInfo {
            nodes: vec![pr::NumaNode { id: 0 }, pr::NumaNode { id: 1 }],
        }),
    };
    let devices_golden = cat(&[
        ld(1, b"nvidia.com/gpu"),
        ld(2, b"GPU-1"),
        // A NUMA node with ID 0 encodes as an empty message: proto3 omits zero scalars.
        ld(3, &cat(&[ld(1, &[]), ld(1, &numa(1))])),
    ]);
    let memory = pr::ContainerMemory {
        memory_type: "memory".into(),
        size: 64,
        topology: Some(pr::TopologyInfo {
            nodes: vec![pr::NumaNode { id: 1 }],
        }),
    };
    let memory_golden = cat(&[ld(1, b"memory"), varint(2, 64), ld(3, &ld(1, &numa(1)))]);
    let dynamic = pr::DynamicResource {
        claim_name: "c".into(),
        claim_namespace: "n".into(),
        claim_resources: vec![pr::ClaimResource {
            cdi_devices: vec![pr::CdiDevice { name: "x=y".into() }],
            driver_name: "d".into(),
            pool_name: "p".into(),
            device_name: "g".into(),
        }],
    };
    let dynamic_golden = cat(&[
        ld(2, b"c"),
        ld(3, b"n"),
        ld(
            4,
            &cat(&[ld(1, &ld(1, b"x=y")), ld(2, b"d"), ld(3, b"p"), ld(4, b"g")]),
        ),
    ]);
    let msg = pr::ListPodResourcesResponse {
        pod_resources: vec![pr::PodResources {
            name: "p".into(),
            namespace: "ns".into(),
            containers: vec![pr::ContainerResources {
                name: "c".into(),
                devices: vec![devices],
                cpu_ids: vec![2, 3],
                memory: vec![memory],
                dynamic_resources: vec![dynamic],
            }],
        }],
    };
    let container = cat(&[
        ld(1, b"c"),
        ld(2, &devices_golden),
        // Repeated int64 is packed in proto3.
        ld(3, &[2, 3]),
        ld(4, &memory_golden),
        ld(5, &dynamic_golden),
    ]);
    let pod = cat(&[ld(1, b"p"), ld(2, b"ns"), ld(3, &container)]);
    assert_golden(&msg, &ld(1, &pod));
}

#[test]
fn pod_resources_allocatable_and_get() {
    let msg = pr::AllocatableResourcesResponse {
        devices: vec![pr::ContainerDevices {
            resource_name: "r".into(),
            device_ids: vec![],
            topology: None,
        }],
        cpu_ids: vec![0, 1],
        memory: vec![pr::ContainerMemory {
            memory_type: "hugepages-2Mi".into(),
            size: 2,
            topology: None,
        }],
    };
    let golden = cat(&[
        ld(1, &ld(1, b"r")),
        // cpu 0 is a zero varint but still present inside a packed list.
        ld(2, &[0, 1]),
        ld(3, &cat(&[ld(1, b"hugepages-2Mi"), varint(2, 2)])),
    ]);
    assert_golden(&msg, &golden);

    let get = pr::GetPodResourcesRequest {
        pod_name: "p".into(),
        pod_namespace: "ns".into(),
    };
    assert_golden(&get, &cat(&[ld(1, b"p"), ld(2, b"ns")]));
    let resp = pr::GetPodResourcesResponse {
        pod_resources: Some(pr::PodResources {
            name: "p".into(),
            namespace: String::new(),
            containers: vec![],
        }),
    };
    assert_golden(&resp, &ld(1, &ld(1, b"p")));
}
