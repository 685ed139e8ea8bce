//! The JSON merge patch that sets one annotation. Both binaries annotate objects (the agent
//! its Node, the extender a pod at bind); the preconditions make the API server refuse the
//! patch instead of applying it to an object that is no longer the one read.

use serde_json::{Map, Value, json};

/// What the object must still be for the patch to apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preconditions<'a> {
    /// The object's UID: refused if it was deleted and replaced by a namesake.
    pub uid: Option<&'a str>,
    /// The resourceVersion read: refused (409) if anyone changed the object since.
    pub resource_version: Option<&'a str>,
}

/// `{"metadata": {"annotations": {key: value}, ...preconditions}}`.
pub fn annotation_patch(key: &str, value: &str, preconditions: Preconditions<'_>) -> Value {
    let mut metadata = Map::new();
    metadata.insert("annotations".into(), json!({ key: value }));
    if let Some(uid) = preconditions.uid {
        metadata.insert("uid".into(), uid.into());
    }
    if let Some(version) = preconditions.resource_version {
        metadata.insert("resourceVersion".into(), version.into());
    }
    json!({ "metadata": metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_one_annotation_with_the_preconditions_given() {
        assert_eq!(
            annotation_patch("kubesched.ai/inventory", "{}", Preconditions::default()),
            json!({"metadata": {"annotations": {"kubesched.ai/inventory": "{}"}}})
        );
        let guarded = Preconditions {
            uid: Some("u-1"),
            resource_version: Some("42"),
        };
        assert_eq!(
            annotation_patch("k", "v", guarded),
            json!({"metadata": {"annotations": {"k": "v"}, "uid": "u-1", "resourceVersion": "42"}})
        );
    }
}
