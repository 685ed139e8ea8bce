//! Naming a pod: its `namespace/name` for messages and logs, and its UID, which tells it
//! apart from a later pod of the same name.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

/// One pod, by name and UID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
}

impl PodRef {
    /// The pod's reference; `None` when the object lacks a name or a UID.
    pub fn of(pod: &Pod) -> Option<PodRef> {
        Some(PodRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone()?,
            uid: pod.metadata.uid.clone()?,
        })
    }
}

/// `namespace/name`.
impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&pod_key(&self.namespace, &self.name))
    }
}

/// `namespace/name`: how pods are named in messages, and keyed where the kubelet names them
/// so (PodResources).
pub fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// `namespace/name` of a pod object, for messages (empty parts where the object has none).
pub fn pod_label(pod: &Pod) -> String {
    pod_key(
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or(""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_named_namespace_slash_name_and_needs_a_uid() {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("ml".into());
        pod.metadata.name = Some("trainer".into());
        assert_eq!(pod_label(&pod), "ml/trainer");
        assert_eq!(PodRef::of(&pod), None, "no UID");
        pod.metadata.uid = Some("u-1".into());
        let reference = PodRef::of(&pod).unwrap();
        assert_eq!(reference.to_string(), "ml/trainer");
        assert_eq!(reference.uid, "u-1");
        assert_eq!(pod_label(&Pod::default()), "/");
    }
}
