//! Who wrote a devices annotation. Anyone who may create pods can also set annotations on
//! them, so the node agent must not hand out devices on an annotation's word alone: the
//! extender signs what it writes, an HMAC-SHA256 over the pod's UID and the annotation's
//! content with a key that only it and the agents read (a Secret), and the agent follows
//! only annotations whose signature checks out for that very pod.
//!
//! The UID binds a signature to one pod object: copied onto another pod (a new UID, which
//! only the API server assigns) it no longer verifies. Changing any field (node, resource,
//! devices, NUMA node) breaks it too.

use ring::hmac;

use crate::annotation::{AnnotationError, DevicesAnnotation};

/// Prefix of a signature value, naming the scheme so it can change later.
pub const SIGNATURE_SCHEME: &str = "hmac-sha256:";
/// Shortest key accepted: 128 bits.
pub const MIN_KEY_BYTES: usize = 16;

/// Why a signing key cannot be used, or why a devices annotation's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The key, less surrounding whitespace, is shorter than `MIN_KEY_BYTES` (length given).
    #[error("the signing key has {0} bytes; at least {MIN_KEY_BYTES} are needed")]
    ShortKey(usize),
    /// The annotation carries no signature.
    #[error("the devices annotation is not signed by the scheduler")]
    Missing,
    /// The signature is malformed, or does not match this pod's UID, the annotation's content
    /// and the key.
    #[error("the devices annotation's signature does not match this pod and these devices")]
    Mismatch,
}

/// Why a devices annotation is not one to trust.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedAnnotation {
    /// It does not parse, or is of a newer version.
    #[error(transparent)]
    Document(#[from] AnnotationError),
    /// Its signature is missing or does not check out.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// A pod's devices annotation as both the extender and the agent trust it: parsed and, when
/// there is a key, signed by the extender for the pod with UID `pod_uid`.
pub fn read_trusted(
    text: &str,
    pod_uid: &str,
    key: Option<&SigningKey>,
) -> Result<DevicesAnnotation, UntrustedAnnotation> {
    let annotation = DevicesAnnotation::from_json(text)?;
    if let Some(key) = key {
        key.verify(&annotation, pod_uid)?;
    }
    Ok(annotation)
}

/// The shared key. Its bytes are never printed.
#[derive(Clone)]
pub struct SigningKey(hmac::Key);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// A key from the bytes of a key file; surrounding whitespace (a trailing newline) is
    /// not part of it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        let key = bytes.trim_ascii();
        if key.len() < MIN_KEY_BYTES {
            return Err(SignatureError::ShortKey(key.len()));
        }
        Ok(SigningKey(hmac::Key::new(hmac::HMAC_SHA256, key)))
    }

    /// Sets `annotation.signature` for the pod with UID `pod_uid`.
    pub fn sign(&self, annotation: &mut DevicesAnnotation, pod_uid: &str) {
        annotation.signature = None;
        let tag = hmac::sign(&self.0, &message(annotation, pod_uid));
        annotation.signature = Some(format!("{SIGNATURE_SCHEME}{}", hex(tag.as_ref())));
    }

    /// Checks the annotation's signature for the pod with UID `pod_uid` (in constant time).
    pub fn verify(
        &self,
        annotation: &DevicesAnnotation,
        pod_uid: &str,
    ) -> Result<(), SignatureError> {
        let signature = annotation
            .signature
            .as_deref()
            .ok_or(SignatureError::Missing)?;
        let tag = signature
            .strip_prefix(SIGNATURE_SCHEME)
            .and_then(unhex)
            .ok_or(SignatureError::Mismatch)?;
        let mut unsigned = annotation.clone();
        unsigned.signature = None;
        hmac::verify(&self.0, &message(&unsigned, pod_uid), &tag)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// What is signed: the UID, a separator no UID contains, and the annotation's canonical JSON
/// (the struct's field order, without the signature).
fn message(unsigned: &DevicesAnnotation, pod_uid: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(256);
    message.extend_from_slice(pod_uid.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(unsigned.to_json().as_bytes());
    message
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotation::{AssignedDevice, AssignedMig, DEVICES_VERSION};

    fn annotation() -> DevicesAnnotation {
        DevicesAnnotation {
            version: DEVICES_VERSION,
            node: "gpu-1".into(),
            resource: "nvidia.com/mig-1g.10gb".into(),
            devices: vec![AssignedDevice {
                gpu_uuid: "GPU-a".into(),
                gpu_index: 0,
                mig: Some(AssignedMig {
                    profile: "1g.10gb".into(),
                    start: 3,
                    uuid: Some("MIG-3".into()),
                }),
            }],
            numa_node: Some(0),
            signature: None,
        }
    }

    fn key(text: &str) -> SigningKey {
        SigningKey::from_bytes(text.as_bytes()).expect("long enough")
    }

    #[test]
    fn a_signed_annotation_verifies_for_its_pod_only() {
        let k = key("0123456789abcdef0123456789abcdef\n");
        let mut ann = annotation();
        k.sign(&mut ann, "uid-1");
        let text = ann.to_json();
        assert!(text.contains("\"signature\":\"hmac-sha256:"), "{text}");
        let back = DevicesAnnotation::from_json(&text).expect("parses");
        assert_eq!(k.verify(&back, "uid-1"), Ok(()));
        assert_eq!(k.verify(&back, "uid-2"), Err(SignatureError::Mismatch));
        assert_eq!(
            key("another key of 32 bytes........").verify(&back, "uid-1"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            k.verify(&annotation(), "uid-1"),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn changing_any_field_breaks_the_signature() {
        let k = key("0123456789abcdef");
        let mut signed = annotation();
        k.sign(&mut signed, "uid-1");
        type Edit = Box<dyn Fn(&mut DevicesAnnotation)>;
        let edits: Vec<Edit> = vec![
            Box::new(|a| a.node = "gpu-2".into()),
            Box::new(|a| a.resource = "nvidia.com/gpu".into()),
            Box::new(|a| a.numa_node = Some(1)),
            Box::new(|a| a.devices[0].gpu_uuid = "GPU-b".into()),
            Box::new(|a| {
                if let Some(m) = a.devices[0].mig.as_mut() {
                    m.start = 4;
                }
            }),
            Box::new(|a| a.devices.push(a.devices[0].clone())),
            Box::new(|a| a.signature = Some("hmac-sha256:zz".into())),
        ];
        for edit in edits {
            let mut forged = signed.clone();
            edit(&mut forged);
            assert_eq!(k.verify(&forged, "uid-1"), Err(SignatureError::Mismatch));
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(
            SigningKey::from_bytes(b"  short \n").err(),
            Some(SignatureError::ShortKey(5))
        );
    }

    #[test]
    fn both_binaries_trust_an_annotation_only_when_it_parses_and_is_signed_for_the_pod() {
        let k = key("a test key of thirty-two bytes!!");
        let mut signed = annotation();
        k.sign(&mut signed, "uid-1");
        let text = signed.to_json();
        assert_eq!(read_trusted(&text, "uid-1", Some(&k)).unwrap(), signed);
        assert!(matches!(
            read_trusted(&text, "uid-2", Some(&k)),
            Err(UntrustedAnnotation::Signature(SignatureError::Mismatch))
        ));
        let plain = annotation().to_json();
        assert!(matches!(
            read_trusted(&plain, "uid-1", Some(&k)),
            Err(UntrustedAnnotation::Signature(SignatureError::Missing))
        ));
        assert_eq!(read_trusted(&plain, "uid-1", None).unwrap(), annotation());
        assert!(matches!(
            read_trusted("{oops", "uid-1", None),
            Err(UntrustedAnnotation::Document(_))
        ));
    }
}
