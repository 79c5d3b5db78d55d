//! The [`Journal`] handle: opening, format-version checking, reset-on-corruption,
//! flushing, and the JSON codec shared by the per-tree modules.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::JournalError;

/// On-disk format version; bump when stored keys or values change incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// Key of the format version in sled's default tree.
const FORMAT_KEY: &[u8] = b"claimsync.format_version";
/// File sled 0.34 keeps its data in, inside the database directory.
const SLED_DATA_FILE: &str = "db";

/// How long an open waits for the file lock of a journal that was just closed: sled lets go of it from its
/// background flusher a moment after the last handle is dropped (a reset reopens at once; found as a flaky unit
/// test). A journal another process holds is still refused, after this wait.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Whether sled could not take the journal's file lock (it says so only in the error's text).
fn is_lock_busy(error: &std::io::Error) -> bool {
    error.to_string().contains("could not acquire lock")
}

/// sled's page cache unless told otherwise: its default (1 GiB) let the journal of 10,000 claims grow claimsync's
/// memory by what it read and wrote; a few MiB keep the hot records, and a miss is a read of a local file.
const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Name sled gives its default tree.
const DEFAULT_TREE: &[u8] = b"__sled__default";

/// Tree of claim records, keyed by encoded [`crate::ClaimKey`].
pub(crate) const CLAIMS: &str = "claims";
/// Tree of catalog entries, keyed by CRD name.
pub(crate) const CATALOG: &str = "catalog";
/// Tree of mirrored-event marks, keyed by remote event UID.
pub(crate) const EVENTS: &str = "events";

/// Handle on the journal database; cheap to clone, clones share the same database.
#[derive(Clone, Debug)]
pub struct Journal {
    /// The sled database (default tree holds the format version and the cluster id).
    pub(crate) db: sled::Db,
    /// Claim records.
    pub(crate) claims: sled::Tree,
    /// Catalog entries.
    pub(crate) catalog: sled::Tree,
    /// Mirrored-event marks.
    pub(crate) events: sled::Tree,
    /// Claim records written or removed through this handle and its clones since it was opened.
    pub(crate) claim_writes: Arc<AtomicU64>,
}

impl Journal {
    /// Opens (creating if missing) the journal in `dir` and checks its format version.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`Journal::open`] with a page cache of `cache_bytes` (sled's cap on the pages it keeps in memory).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Journal, JournalError> {
        let existed = dir.join(SLED_DATA_FILE).exists();
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(dir).cache_capacity(cache_bytes).open() {
                Err(sled::Error::Io(e)) if is_lock_busy(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                opened => {
                    break opened.map_err(|source| JournalError::Open {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
            }
        };
        Self::init(db, dir, existed)
    }

    /// Opens the journal in `dir`, wiping and recreating it if it is corrupt or of
    /// another format version; the flag tells whether it was reset.
    ///
    /// A reset deletes the journal's own files in `dir` (sled's `conf`, `db`,
    /// `blobs/` and `snap.*`) and nothing else: `dir` may be a volume's root, with
    /// `lost+found`, or hold an operator's files.
    /// Every stored entry is decoded once to detect corruption. Errors that a wipe
    /// would not cure (e.g. the database is locked by another process) are returned.
    pub fn open_or_reset(dir: &Path) -> Result<(Journal, bool), JournalError> {
        Self::open_or_reset_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`Journal::open_or_reset`] with a page cache of `cache_bytes`.
    pub fn open_or_reset_with_cache(dir: &Path, cache_bytes: u64) -> Result<(Journal, bool), JournalError> {
        match Self::open_with_cache(dir, cache_bytes).and_then(|j| j.validate().map(|()| j)) {
            Ok(journal) => return Ok((journal, false)),
            Err(err) if err.calls_for_reset() => {}
            Err(err) => return Err(err),
        }
        clear_dir(dir).map_err(|source| JournalError::Reset {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok((Self::open_with_cache(dir, cache_bytes)?, true))
    }

    /// Opens an empty journal that lives only as long as the handle (for tests).
    pub fn temporary() -> Result<Journal, JournalError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|source| JournalError::Open {
                path: PathBuf::from("<temporary>"),
                source,
            })?;
        Self::init(db, Path::new("<temporary>"), false)
    }

    /// The journal's size on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, JournalError> {
        self.db
            .size_on_disk()
            .map_err(storage(|| "measuring the journal".to_string()))
    }

    /// Durably writes everything recorded so far.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.db
            .flush()
            .map(drop)
            .map_err(storage(|| "flushing the journal".to_string()))
    }

    /// Checks or writes the format version, then opens the trees.
    /// `existed` tells whether sled's data file was on disk before opening.
    fn init(db: sled::Db, path: &Path, existed: bool) -> Result<Journal, JournalError> {
        let mismatch = |found: String| JournalError::FormatVersion {
            path: path.to_path_buf(),
            found,
            expected: FORMAT_VERSION,
        };
        let stored = db
            .get(FORMAT_KEY)
            .map_err(storage(|| "reading the format version".to_string()))?;
        match stored {
            Some(raw) => match serde_json::from_slice::<u32>(&raw) {
                Ok(FORMAT_VERSION) => {}
                Ok(other) => return Err(mismatch(other.to_string())),
                Err(_) => return Err(mismatch(String::from_utf8_lossy(&raw).into_owned())),
            },
            None => {
                // A database that was on disk always has the key; if it is gone, the
                // files were damaged (sled may then open them as empty) or never
                // finished being created.
                let has_data = existed
                    || db.was_recovered()
                    || !db.is_empty()
                    || db.tree_names().iter().any(|name| name != DEFAULT_TREE);
                if has_data {
                    return Err(mismatch("missing".to_string()));
                }
                db.insert(FORMAT_KEY, FORMAT_VERSION.to_string().as_bytes())
                    .map_err(storage(|| "writing the format version".to_string()))?;
                db.flush()
                    .map_err(storage(|| "flushing the format version".to_string()))?;
            }
        }
        let open_tree = |name: &'static str| db.open_tree(name).map_err(storage(|| format!("opening tree {name}")));
        Ok(Journal {
            claims: open_tree(CLAIMS)?,
            catalog: open_tree(CATALOG)?,
            events: open_tree(EVENTS)?,
            db,
            claim_writes: Arc::default(),
        })
    }

    /// How many claim records were written or removed since the journal was opened (a confirmation that changes
    /// nothing should not be one).
    pub fn claim_writes(&self) -> u64 {
        self.claim_writes.load(Ordering::Relaxed)
    }

    /// Decodes every stored entry, returning the first corruption found.
    fn validate(&self) -> Result<(), JournalError> {
        self.claims()?;
        self.catalog()?;
        self.validate_events()
    }
}

/// Whether a name in the journal's directory is one of sled's own files (sled 0.34 keeps `conf`, `db`, the
/// directory `blobs` and snapshots `snap.<n>`).
fn is_journal_file(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    matches!(name.as_ref(), "conf" | "db" | "blobs") || name.starts_with("snap.")
}

/// Deletes the journal's own files inside `dir`, keeping `dir` and anything else in it; a missing `dir` is fine.
fn clear_dir(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !is_journal_file(&entry.file_name()) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Maps a sled error to [`JournalError::Storage`], describing the operation lazily.
pub(crate) fn storage(what: impl FnOnce() -> String) -> impl FnOnce(sled::Error) -> JournalError {
    move |source| JournalError::Storage { what: what(), source }
}

/// Serialises a stored value as JSON.
pub(crate) fn encode<T: Serialize>(tree: &'static str, key: &dyn Display, value: &T) -> Result<Vec<u8>, JournalError> {
    serde_json::to_vec(value).map_err(|source| JournalError::Encode {
        tree,
        key: key.to_string(),
        source,
    })
}

/// Deserialises a stored JSON value.
pub(crate) fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &dyn Display,
    raw: &[u8],
) -> Result<T, JournalError> {
    serde_json::from_slice(raw).map_err(|source| JournalError::Corrupt {
        tree,
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CatalogEntry, ClaimKey, ClaimRecord};
    use serde_json::json;

    fn sample_key() -> ClaimKey {
        ClaimKey::new("k8s.starter.org", "KubernetesCluster", "team-a", "prod")
    }

    fn sample_record() -> ClaimRecord {
        ClaimRecord {
            local_uid: "uid-1".into(),
            local_resource_version: "42".into(),
            remote_name: "team-a-prod".into(),
            last_status: Some(json!({"ready": true})),
            updated_unix: 7,
            ..ClaimRecord::default()
        }
    }

    fn sample_entry() -> CatalogEntry {
        CatalogEntry {
            crd_name: "kubernetesclusters.k8s.starter.org".into(),
            group: "k8s.starter.org".into(),
            kind: "KubernetesCluster".into(),
            plural: "kubernetesclusters".into(),
            versions: vec!["v1alpha1".into()],
            remote_resource_version: "9".into(),
            content_hash: "abc".into(),
            crd: json!({"spec": {}}),
            withdrawn: false,
            not_replicated: None,
        }
    }

    #[test]
    fn data_persists_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        {
            let journal = Journal::open(&path).expect("open");
            journal.put_claim(&sample_key(), &sample_record()).expect("put claim");
            journal.put_catalog_entry(&sample_entry()).expect("put entry");
            journal.record_event_mirrored("ev-1", 3).expect("record");
            journal.flush().expect("flush");
        }
        let journal = Journal::open(&path).expect("reopen");
        assert_eq!(journal.claim(&sample_key()).expect("get"), Some(sample_record()));
        assert_eq!(journal.catalog().expect("catalog"), vec![sample_entry()]);
        assert!(journal.event_mirrored("ev-1", 3).expect("mirrored"));
    }

    #[test]
    fn fresh_directory_is_not_a_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("missing directory", dir.path().join("a/b")),
            ("existing empty directory", dir.path().to_path_buf()),
        ];
        for (name, path) in cases {
            let (journal, reset) = Journal::open_or_reset(&path).expect(name);
            assert!(!reset, "{name}");
            assert!(journal.claims().expect("claims").is_empty(), "{name}");
        }
    }

    #[test]
    fn open_or_reset_keeps_a_healthy_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        let (journal, reset) = Journal::open_or_reset(&path).expect("create");
        assert!(!reset, "a fresh journal is not a reset");
        journal.put_claim(&sample_key(), &sample_record()).expect("put");
        journal.flush().expect("flush");
        drop(journal);
        let (journal, reset) = Journal::open_or_reset(&path).expect("reopen");
        assert!(!reset);
        assert!(journal.claim(&sample_key()).expect("get").is_some());
    }

    /// Writes `version` (raw bytes, or nothing) as the format version of a journal
    /// that holds one claim.
    fn journal_with_version(path: &Path, version: Option<&[u8]>) {
        let journal = Journal::open(path).expect("open");
        journal.put_claim(&sample_key(), &sample_record()).expect("put");
        match version {
            Some(raw) => journal.db.insert(FORMAT_KEY, raw).map(drop),
            None => journal.db.remove(FORMAT_KEY).map(drop),
        }
        .expect("tamper");
        journal.flush().expect("flush");
    }

    #[test]
    fn wrong_format_version_is_refused_then_reset() {
        let cases: [(&str, Option<&[u8]>, &str); 3] = [
            ("newer version", Some(b"2"), "2"),
            ("garbage version", Some(b"v1?"), "v1?"),
            ("missing version with data", None, "missing"),
        ];
        for (name, version, found_expected) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("journal");
            journal_with_version(&path, version);

            match Journal::open(&path) {
                Err(JournalError::FormatVersion { found, expected, .. }) => {
                    assert_eq!(found, found_expected, "{name}");
                    assert_eq!(expected, FORMAT_VERSION, "{name}");
                }
                other => panic!("{name}: expected FormatVersion, got {other:?}"),
            }

            let (journal, reset) = Journal::open_or_reset(&path).expect("reset");
            assert!(reset, "{name}: must report the reset");
            assert!(journal.claims().expect("claims").is_empty(), "{name}");
            drop(journal);
            let (_, reset) = Journal::open_or_reset(&path).expect("reopen");
            assert!(!reset, "{name}: the recreated journal is healthy");
        }
    }

    #[test]
    fn corrupt_entry_triggers_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        {
            let journal = Journal::open(&path).expect("open");
            journal
                .claims
                .insert(crate::keys::encode_claim_key(&sample_key()), &b"{not json"[..])
                .expect("insert garbage");
            journal.flush().expect("flush");
        }
        assert!(matches!(
            Journal::open(&path).expect("open is lazy").claim(&sample_key()),
            Err(JournalError::Corrupt { tree: CLAIMS, .. })
        ));
        let (journal, reset) = Journal::open_or_reset(&path).expect("reset");
        assert!(reset);
        assert_eq!(journal.claim(&sample_key()).expect("get"), None);
    }

    #[test]
    fn corrupt_files_trigger_reset() {
        // (sled file scribbled over, bytes written); sled itself refuses a damaged
        // `conf`, and opens a damaged `db` as empty, which the version key reveals.
        let cases: [(&str, &[u8]); 3] = [("conf", &[0xA5; 4096]), ("db", &[0xA5; 4096]), ("db", b"")];
        for (file, bytes) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("journal");
            journal_with_version(&path, Some(FORMAT_VERSION.to_string().as_bytes()));
            std::fs::write(path.join(file), bytes).expect("scribble");
            std::fs::write(path.join("stray"), b"x").expect("an operator's file");
            std::fs::create_dir_all(path.join("lost+found/kept")).expect("a volume's lost+found");
            let err = Journal::open(&path).expect_err(file);
            assert!(err.calls_for_reset(), "{file}: {err:?}");
            let (journal, reset) = Journal::open_or_reset(&path).expect("reset");
            assert!(reset, "{file}");
            assert!(journal.claims().expect("claims").is_empty(), "{file}");
            assert!(
                path.join("stray").exists(),
                "{file}: a reset keeps what is not the journal's"
            );
            assert!(
                path.join("lost+found/kept").exists(),
                "{file}: a volume's lost+found stays"
            );
        }
    }

    #[test]
    fn locked_journal_is_not_wiped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        let held = Journal::open(&path).expect("open");
        held.put_claim(&sample_key(), &sample_record()).expect("put");
        held.flush().expect("flush");
        let err = Journal::open_or_reset(&path).expect_err("locked");
        assert!(!err.calls_for_reset(), "{err:?}");
        assert!(held.claim(&sample_key()).expect("get").is_some());
    }

    #[test]
    fn temporary_starts_empty() {
        let journal = Journal::temporary().expect("temporary");
        assert!(journal.claims().expect("claims").is_empty());
        assert!(journal.catalog().expect("catalog").is_empty());
        assert!(!journal.event_mirrored("x", 0).expect("events"));
    }
}
