//! The journal's error type.
//! Every variant names what it was touching (path, tree, key) so logs are actionable.

use std::path::PathBuf;

/// Anything that can go wrong while opening, reading or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The sled database at `path` could not be opened.
    #[error("cannot open journal at {}: {source}", path.display())]
    Open {
        /// Directory of the database.
        path: PathBuf,
        /// Underlying sled error.
        #[source]
        source: sled::Error,
    },
    /// A sled read, write or flush failed.
    #[error("journal storage error while {what}: {source}")]
    Storage {
        /// What the journal was doing, including tree and key.
        what: String,
        /// Underlying sled error.
        #[source]
        source: sled::Error,
    },
    /// A stored value could not be decoded.
    #[error("corrupt journal entry {key:?} in tree {tree}: {source}")]
    Corrupt {
        /// Tree holding the entry.
        tree: &'static str,
        /// Printable form of the entry's key.
        key: String,
        /// Underlying JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored key does not follow the journal's key encoding.
    #[error("corrupt journal key {key} in tree {tree}: {reason}")]
    CorruptKey {
        /// Tree holding the key.
        tree: &'static str,
        /// Hex form of the raw key bytes.
        key: String,
        /// Why it could not be decoded.
        reason: &'static str,
    },
    /// A value could not be encoded as JSON.
    #[error("cannot encode journal entry {key:?} for tree {tree}: {source}")]
    Encode {
        /// Tree the entry was meant for.
        tree: &'static str,
        /// Printable form of the entry's key.
        key: String,
        /// Underlying JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The database was written by an incompatible format version.
    #[error("journal at {} has format version {found}, expected {expected}", path.display())]
    FormatVersion {
        /// Directory of the database.
        path: PathBuf,
        /// Version found on disk ("missing" or the raw value if unreadable).
        found: String,
        /// Version this build writes.
        expected: u32,
    },
    /// Wiping an unusable database directory failed.
    #[error("cannot reset journal at {}: {source}", path.display())]
    Reset {
        /// Directory of the database.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl JournalError {
    /// Whether wiping the database and starting empty is the right remedy.
    ///
    /// True for format-version mismatches, undecodable entries and sled corruption;
    /// false for I/O errors such as "another process holds the lock", where wiping
    /// would destroy a journal that is in use.
    pub fn calls_for_reset(&self) -> bool {
        match self {
            JournalError::FormatVersion { .. } | JournalError::Corrupt { .. } | JournalError::CorruptKey { .. } => true,
            JournalError::Open { source, .. } | JournalError::Storage { source, .. } => sled_corruption(source),
            JournalError::Encode { .. } | JournalError::Reset { .. } => false,
        }
    }
}

/// Whether a sled error means the on-disk data itself is unusable.
fn sled_corruption(err: &sled::Error) -> bool {
    match err {
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) | sled::Error::ReportableBug(_) => true,
        sled::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        sled::Error::CollectionNotFound(_) => false,
    }
}
