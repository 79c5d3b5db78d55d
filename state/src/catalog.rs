//! Catalog entries: the claim kinds the control plane offers, as last replicated
//! locally, keyed by CRD name.

use crate::error::JournalError;
use crate::journal::{CATALOG, Journal, decode, encode, storage};
use crate::records::CatalogEntry;

impl Journal {
    /// The catalog entry of the CRD named `crd_name`, if any.
    pub fn catalog_entry(&self, crd_name: &str) -> Result<Option<CatalogEntry>, JournalError> {
        self.catalog
            .get(crd_name.as_bytes())
            .map_err(storage(|| format!("reading catalog entry {crd_name}")))?
            .map(|raw| decode(CATALOG, &crd_name, &raw))
            .transpose()
    }

    /// Stores `entry` under its CRD name, replacing any previous one.
    pub fn put_catalog_entry(&self, entry: &CatalogEntry) -> Result<(), JournalError> {
        let name = &entry.crd_name;
        let value = encode(CATALOG, name, entry)?;
        self.catalog
            .insert(name.as_bytes(), value)
            .map(drop)
            .map_err(storage(|| format!("writing catalog entry {name}")))
    }

    /// Forgets the catalog entry of `crd_name` (no error if there is none).
    pub fn remove_catalog_entry(&self, crd_name: &str) -> Result<(), JournalError> {
        self.catalog
            .remove(crd_name.as_bytes())
            .map(drop)
            .map_err(storage(|| format!("removing catalog entry {crd_name}")))
    }

    /// All catalog entries, ordered by CRD name.
    pub fn catalog(&self) -> Result<Vec<CatalogEntry>, JournalError> {
        self.catalog
            .iter()
            .map(|entry| {
                let (raw_key, raw) = entry.map_err(storage(|| "listing the catalog".to_string()))?;
                decode(CATALOG, &String::from_utf8_lossy(&raw_key), &raw)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(crd_name: &str, withdrawn: bool) -> CatalogEntry {
        let (plural, group) = crd_name.split_once('.').expect("plural.group");
        CatalogEntry {
            crd_name: crd_name.into(),
            group: group.into(),
            kind: "Kind".into(),
            plural: plural.into(),
            versions: vec!["v1alpha1".into(), "v1".into()],
            remote_resource_version: "12".into(),
            content_hash: "deadbeef".into(),
            crd: json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition"}),
            withdrawn,
            not_replicated: None,
        }
    }

    #[test]
    fn round_trip_list_and_remove() {
        let journal = Journal::temporary().expect("journal");
        let entries = [
            entry("kubernetesclusters.k8s.starter.org", false),
            entry("databases.db.starter.org", true),
            entry("buckets.storage.starter.org", false),
        ];
        for e in &entries {
            assert_eq!(journal.catalog_entry(&e.crd_name).expect("get"), None);
            journal.put_catalog_entry(e).expect("put");
            assert_eq!(journal.catalog_entry(&e.crd_name).expect("get").as_ref(), Some(e));
        }
        let names: Vec<String> = journal
            .catalog()
            .expect("list")
            .into_iter()
            .map(|e| e.crd_name)
            .collect();
        assert_eq!(
            names,
            [
                "buckets.storage.starter.org",
                "databases.db.starter.org",
                "kubernetesclusters.k8s.starter.org"
            ]
        );

        let updated = CatalogEntry {
            withdrawn: true,
            ..entries[0].clone()
        };
        journal.put_catalog_entry(&updated).expect("overwrite");
        assert_eq!(journal.catalog_entry(&updated.crd_name).expect("get"), Some(updated));

        journal.remove_catalog_entry(&entries[1].crd_name).expect("remove");
        journal
            .remove_catalog_entry("absent.example.org")
            .expect("remove absent");
        assert_eq!(journal.catalog().expect("list").len(), 2);
        assert_eq!(journal.catalog_entry(&entries[1].crd_name).expect("get"), None);
    }
}
