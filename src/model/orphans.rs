//! The list of orphans: twins whose local claim went without claimsync seeing a delete, by claim key. Plain data
//! and the rule for refreshing one kind's part of it; `sync/claims/orphans.rs` scans for them and reports them.

use std::collections::BTreeMap;

/// Twins without their local claim: the claim's key (`group/Kind namespace/name`) and the twin's name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Orphans(BTreeMap<String, String>);

impl Orphans {
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn insert(&mut self, key: String, twin: String) {
        self.0.insert(key, twin);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Replaces the orphans of the kind whose keys start with `kind_prefix` by `found` (a scan of that kind) and
    /// returns those that were not known before, each to be said once.
    pub fn replace_kind(&mut self, kind_prefix: &str, found: Orphans) -> Vec<(String, String)> {
        self.0
            .retain(|key, _| !key.starts_with(kind_prefix) || found.0.contains_key(key));
        let new = found
            .0
            .iter()
            .filter(|(key, _)| !self.0.contains_key(*key))
            .map(|(key, twin)| (key.clone(), twin.clone()))
            .collect();
        self.0.extend(found.0);
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[(&str, &str)]) -> Orphans {
        Orphans(entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn a_scan_replaces_only_its_own_kind_and_says_only_what_is_new() {
        let mut known = list(&[
            ("g/A ns/a1", "claim-1"),
            ("g/A ns/a2", "claim-2"),
            ("g/B ns/b1", "claim-3"),
        ]);
        let new = known.replace_kind("g/A ", list(&[("g/A ns/a2", "claim-2"), ("g/A ns/a3", "claim-4")]));
        assert_eq!(new, [("g/A ns/a3".to_string(), "claim-4".to_string())]);
        assert_eq!(
            known,
            list(&[
                ("g/A ns/a2", "claim-2"),
                ("g/A ns/a3", "claim-4"),
                ("g/B ns/b1", "claim-3")
            ])
        );
        assert!(known.replace_kind("g/A ", Orphans::default()).is_empty());
        assert_eq!(known, list(&[("g/B ns/b1", "claim-3")]));
    }
}
