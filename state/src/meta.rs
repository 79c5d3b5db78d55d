//! Facts about the journal as a whole rather than one claim: the cluster id its records were made under, so that
//! a journal written for another identity is recognised instead of trusted.

use crate::error::JournalError;
use crate::journal::{Journal, storage};

/// Key of the cluster id in sled's default tree.
const CLUSTER_ID_KEY: &[u8] = b"claimsync.cluster_id";

impl Journal {
    /// The cluster id recorded when the journal was first used, if any.
    pub fn cluster_id(&self) -> Result<Option<String>, JournalError> {
        let raw = self
            .db
            .get(CLUSTER_ID_KEY)
            .map_err(storage(|| "reading the cluster id".to_string()))?;
        Ok(raw.map(|raw| String::from_utf8_lossy(&raw).into_owned()))
    }

    /// Records the cluster id the journal's records are made under, replacing any previous one, and flushes it:
    /// unlike the other records it guards against a mistake, so it must survive a kill -9 right after start.
    pub fn set_cluster_id(&self, cluster_id: &str) -> Result<(), JournalError> {
        self.db
            .insert(CLUSTER_ID_KEY, cluster_id.as_bytes())
            .map_err(storage(|| "writing the cluster id".to_string()))?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_id_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        {
            let journal = Journal::open(&path).expect("open");
            assert_eq!(journal.cluster_id().expect("read"), None);
            journal.set_cluster_id("c-1").expect("write");
            journal.flush().expect("flush");
        }
        let journal = Journal::open(&path).expect("reopen");
        assert_eq!(journal.cluster_id().expect("read").as_deref(), Some("c-1"));
    }
}
