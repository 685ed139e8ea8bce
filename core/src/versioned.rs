//! Reading versioned JSON documents (the inventory and devices annotations):
//! a newer `version` than this build knows is refused before anything else
//! is interpreted, so an old reader never misreads a new layout.

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum VersionedError {
    #[error("malformed {what} document: {source}")]
    Malformed {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{what} document is {size} bytes (at most {MAX_DOCUMENT_BYTES})")]
    TooLarge { what: &'static str, size: usize },
    #[error("{what} document has no numeric \"version\"")]
    MissingVersion { what: &'static str },
    #[error(
        "{what} version {found} is newer than this build understands (up to {supported}); upgrade this component"
    )]
    UnsupportedVersion {
        what: &'static str,
        found: u64,
        supported: u32,
    },
}

/// Largest document read: the API server caps all of an object's annotations at 256 KiB.
pub const MAX_DOCUMENT_BYTES: usize = 256 << 10;

/// Parses `text` as a `what` document of at most version `supported`.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    what: &'static str,
    supported: u32,
) -> Result<T, VersionedError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(VersionedError::TooLarge {
            what,
            size: text.len(),
        });
    }
    let malformed = |source| VersionedError::Malformed { what, source };
    let value: serde_json::Value = serde_json::from_str(text).map_err(malformed)?;
    let found = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or(VersionedError::MissingVersion { what })?;
    if found > u64::from(supported) {
        return Err(VersionedError::UnsupportedVersion {
            what,
            found,
            supported,
        });
    }
    serde_json::from_value(value).map_err(malformed)
}
