//! Reading versioned JSON documents (the inventory and devices annotations):
//! a newer `version` than this build knows is refused before anything else
//! is interpreted, so an old reader never misreads a new layout.

use serde::de::DeserializeOwned;

/// Why a versioned document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VersionedError {
    /// The text is not valid JSON, or does not have the document's layout.
    #[error("malformed {what} document: {source}")]
    Malformed {
        /// Which document was read (`inventory`, `devices`).
        what: &'static str,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The text is longer than `MAX_DOCUMENT_BYTES`; it is refused unread.
    #[error("{what} document is {size} bytes (at most {limit})")]
    TooLarge {
        /// Which document was read (`inventory`, `devices`, `snapshot`).
        what: &'static str,
        /// Length of the text, in bytes.
        size: usize,
        /// The most this kind of document may hold, in bytes.
        limit: usize,
    },
    /// The document has no `version` field holding a non-negative integer.
    #[error("{what} document has no numeric \"version\"")]
    MissingVersion {
        /// Which document was read (`inventory`, `devices`).
        what: &'static str,
    },
    /// The document's version is newer than this build understands.
    #[error(
        "{what} version {found} is newer than this build understands (up to {supported}); upgrade this component"
    )]
    UnsupportedVersion {
        /// Which document was read (`inventory`, `devices`).
        what: &'static str,
        /// Version the document declares.
        found: u64,
        /// Newest version this build reads.
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
    parse_at_most(text, what, supported, MAX_DOCUMENT_BYTES)
}

/// As [`parse`], for a document that is no annotation (a file a user gives) and may hold up
/// to `limit` bytes.
pub fn parse_at_most<T: DeserializeOwned>(
    text: &str,
    what: &'static str,
    supported: u32,
    limit: usize,
) -> Result<T, VersionedError> {
    if text.len() > limit {
        return Err(VersionedError::TooLarge {
            what,
            size: text.len(),
            limit,
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
