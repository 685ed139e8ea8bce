//! Resource quantities as a pod spec carries them: the parser never panics, what it accepts
//! prints back to the same value, its whole-number and milli readings agree, and a pod asking
//! for that many GPUs is read (or refused) without a panic.
#![no_main]

use k8s_openapi::api::core::v1::Pod;
use kubesched_core::request::{GpuDemand, ResourceNames};
use kubesched_k8s::PodRequestReader;
use kubesched_k8s::quantity::Quantity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = Quantity::parse(text) {
        let printed = q.to_string();
        assert_eq!(Quantity::parse(&printed), Ok(q), "{text:?} printed as {printed:?}");
        if let Some(whole) = q.whole() {
            assert_eq!(q.milli_ceil(), whole.saturating_mul(1000), "{text:?}");
        }
    }
    let pod: Pod = match serde_json::from_value(serde_json::json!({"spec": {"containers": [
        {"name": "c", "resources": {"limits": {"nvidia.com/gpu": text, "cpu": text}}}
    ]}})) {
        Ok(pod) => pod,
        Err(_) => return,
    };
    let reader = PodRequestReader::new(ResourceNames::default(), "kubesched.ai");
    if let Ok(request) = reader.read(&pod) {
        let whole = Quantity::parse(text).ok().and_then(Quantity::whole);
        match request.gpu {
            GpuDemand::None => assert_eq!(whole, Some(0), "{text:?}"),
            GpuDemand::Whole { count } => assert_eq!(whole, Some(u64::from(count)), "{text:?}"),
            other => panic!("{text:?} read as {other:?}"),
        }
    }
});
