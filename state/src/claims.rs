//! Claim records: what was last synced for each replicated claim, keyed by
//! [`ClaimKey`] (see `keys.rs` for the encoding that makes per-kind scans exact).

use std::sync::atomic::Ordering;

use crate::error::JournalError;
use crate::journal::{CLAIMS, Journal, decode, encode, storage};
use crate::keys::{decode_claim_key, encode_claim_key, kind_prefix};
use crate::records::{ClaimKey, ClaimRecord};

impl Journal {
    /// The record of `key`, if any.
    pub fn claim(&self, key: &ClaimKey) -> Result<Option<ClaimRecord>, JournalError> {
        self.claims
            .get(encode_claim_key(key))
            .map_err(storage(|| format!("reading claim {key}")))?
            .map(|raw| decode(CLAIMS, key, &raw))
            .transpose()
    }

    /// Stores `rec` as the record of `key`, replacing any previous one.
    pub fn put_claim(&self, key: &ClaimKey, rec: &ClaimRecord) -> Result<(), JournalError> {
        let value = encode(CLAIMS, key, rec)?;
        self.claim_writes.fetch_add(1, Ordering::Relaxed);
        self.claims
            .insert(encode_claim_key(key), value)
            .map(drop)
            .map_err(storage(|| format!("writing claim {key}")))
    }

    /// Atomically replaces the record of `key` by `f(current)`; `None` removes it. A result equal to the current
    /// record writes nothing.
    ///
    /// Runs as a compare-and-swap loop, so `f` may be called more than once under
    /// contention and must be free of side effects. Returns what was stored.
    pub fn update_claim(
        &self,
        key: &ClaimKey,
        mut f: impl FnMut(Option<ClaimRecord>) -> Option<ClaimRecord>,
    ) -> Result<Option<ClaimRecord>, JournalError> {
        let raw_key = encode_claim_key(key);
        loop {
            let old = self
                .claims
                .get(&raw_key)
                .map_err(storage(|| format!("reading claim {key}")))?;
            let current = old.as_ref().map(|raw| decode(CLAIMS, key, raw)).transpose()?;
            let next = f(current.clone());
            if next == current {
                return Ok(next);
            }
            let new = next.as_ref().map(|rec| encode(CLAIMS, key, rec)).transpose()?;
            let swapped = self
                .claims
                .compare_and_swap(&raw_key, old, new)
                .map_err(storage(|| format!("updating claim {key}")))?;
            if swapped.is_ok() {
                self.claim_writes.fetch_add(1, Ordering::Relaxed);
                return Ok(next);
            }
        }
    }

    /// Forgets the record of `key` (no error if there is none).
    pub fn remove_claim(&self, key: &ClaimKey) -> Result<(), JournalError> {
        self.claim_writes.fetch_add(1, Ordering::Relaxed);
        self.claims
            .remove(encode_claim_key(key))
            .map(drop)
            .map_err(storage(|| format!("removing claim {key}")))
    }

    /// All claim records, ordered by key.
    pub fn claims(&self) -> Result<Vec<(ClaimKey, ClaimRecord)>, JournalError> {
        collect(self.claims.iter(), || "listing claims".to_string())
    }

    /// The claim records of one (group, kind), ordered by key.
    pub fn claims_of_kind(&self, group: &str, kind: &str) -> Result<Vec<(ClaimKey, ClaimRecord)>, JournalError> {
        collect(self.claims.scan_prefix(kind_prefix(group, kind)), || {
            format!("listing claims of {group}/{kind}")
        })
    }
}

/// Decodes the entries of a claims-tree iterator.
fn collect(iter: sled::Iter, what: impl Fn() -> String) -> Result<Vec<(ClaimKey, ClaimRecord)>, JournalError> {
    iter.map(|entry| {
        let (raw_key, raw) = entry.map_err(storage(&what))?;
        let key = decode_claim_key(CLAIMS, &raw_key)?;
        let rec = decode(CLAIMS, &key, &raw)?;
        Ok((key, rec))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(group: &str, kind: &str, namespace: &str, name: &str) -> ClaimKey {
        ClaimKey::new(group, kind, namespace, name)
    }

    fn record(n: u64) -> ClaimRecord {
        ClaimRecord {
            local_uid: format!("uid-{n}"),
            local_resource_version: n.to_string(),
            updated_unix: n,
            ..ClaimRecord::default()
        }
    }

    #[test]
    fn round_trips_records() {
        let journal = Journal::temporary().expect("journal");
        let full = ClaimRecord {
            local_uid: "6f1c".into(),
            local_resource_version: "1001".into(),
            remote_name: "team-a-prod-6f1c".into(),
            remote_uid: Some("9a9a".into()),
            remote_resource_version: Some("77".into()),
            spec_hash_up: Some("s".into()),
            last_intent: Some(json!({"spec": {"size": 1}})),
            status_hash_down: Some("t".into()),
            secret_hash_down: Some("u".into()),
            secret_name_down: Some("db-conn".into()),
            last_status: Some(json!({"conditions": [{"type": "Ready", "status": "True"}]})),
            pending_patch: Some(json!([{"op": "replace", "path": "/spec/parameters/size", "value": 3}])),
            last_error: Some("control plane: unreachable".into()),
            updated_unix: 1_700_000_000,
        };
        let cases = [
            (key("k8s.starter.org", "KubernetesCluster", "a", "b"), full),
            (key("", "Pod", "ns", "p"), ClaimRecord::default()),
            (key("x.io", "K", "ns\0", "n"), record(3)),
        ];
        for (k, rec) in &cases {
            assert_eq!(journal.claim(k).expect("get"), None, "{k}");
            journal.put_claim(k, rec).expect("put");
            assert_eq!(journal.claim(k).expect("get").as_ref(), Some(rec), "{k}");
        }
        let mut expected: Vec<_> = cases.to_vec();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(journal.claims().expect("all"), expected);
    }

    #[test]
    fn tolerates_missing_fields_in_stored_records() {
        let journal = Journal::temporary().expect("journal");
        let k = key("g", "K", "ns", "n");
        journal
            .claims
            .insert(encode_claim_key(&k), &br#"{"local_uid":"u"}"#[..])
            .expect("insert");
        let rec = journal.claim(&k).expect("get").expect("present");
        assert_eq!(rec.local_uid, "u");
        assert_eq!(rec.remote_uid, None);
    }

    #[test]
    fn prefix_scan_by_kind_does_not_leak() {
        let journal = Journal::temporary().expect("journal");
        let keys = [
            key("a.b", "X", "ns", "1"),
            key("a", "b.X", "ns", "2"),
            key("a", "b", "X", "3"),
            key("a.b", "XY", "ns", "4"),
            key("a.b", "", "X", "5"),
            key("a.bX", "", "ns", "6"),
            key("a.b", "X", "ns", "7"),
            key("a\0b", "X", "ns", "8"),
            key("a", "b\0X", "ns", "9"),
        ];
        for (i, k) in keys.iter().enumerate() {
            journal.put_claim(k, &record(i as u64)).expect("put");
        }
        let cases: [(&str, &str, &[&str]); 7] = [
            ("a.b", "X", &["1", "7"]),
            ("a", "b.X", &["2"]),
            ("a", "b", &["3"]),
            ("a.b", "", &["5"]),
            ("a", "b\0X", &["9"]),
            ("a", "", &[]),
            ("", "X", &[]),
        ];
        for (group, kind, names) in cases {
            let found: Vec<String> = journal
                .claims_of_kind(group, kind)
                .expect("scan")
                .into_iter()
                .map(|(k, _)| {
                    assert_eq!((k.group.as_str(), k.kind.as_str()), (group, kind));
                    k.name
                })
                .collect();
            assert_eq!(found, names, "{group:?}/{kind:?}");
        }
    }

    #[test]
    fn update_claim_semantics() {
        let journal = Journal::temporary().expect("journal");
        let k = key("g", "K", "ns", "n");

        let stored = journal
            .update_claim(&k, |cur| {
                assert_eq!(cur, None);
                None
            })
            .expect("noop on absent");
        assert_eq!(stored, None);
        assert_eq!(journal.claim(&k).expect("get"), None);

        let stored = journal
            .update_claim(&k, |cur| {
                assert_eq!(cur, None);
                Some(record(1))
            })
            .expect("insert");
        assert_eq!(stored, Some(record(1)));

        let stored = journal
            .update_claim(&k, |cur| {
                let mut rec = cur.expect("present");
                rec.remote_uid = Some("r".into());
                Some(rec)
            })
            .expect("modify");
        let expected = ClaimRecord {
            remote_uid: Some("r".into()),
            ..record(1)
        };
        assert_eq!(stored.as_ref(), Some(&expected));
        assert_eq!(journal.claim(&k).expect("get"), Some(expected.clone()));

        let writes = journal.claim_writes();
        let stored = journal.update_claim(&k, |cur| cur).expect("unchanged");
        assert_eq!(stored, Some(expected));
        assert_eq!(journal.claim_writes(), writes, "an unchanged record is not written");

        let stored = journal.update_claim(&k, |_| None).expect("remove");
        assert_eq!(stored, None);
        assert_eq!(journal.claim(&k).expect("get"), None);
    }

    #[test]
    fn update_claim_is_atomic_under_contention() {
        let journal = Journal::temporary().expect("journal");
        let k = key("g", "K", "ns", "counter");
        let (threads, rounds) = (4, 200);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..rounds {
                        journal
                            .update_claim(&k, |cur| {
                                let mut rec = cur.unwrap_or_default();
                                rec.updated_unix += 1;
                                Some(rec)
                            })
                            .expect("update");
                    }
                });
            }
        });
        let rec = journal.claim(&k).expect("get").expect("present");
        assert_eq!(rec.updated_unix, threads * rounds);
    }

    #[test]
    fn update_claim_reports_corruption() {
        let journal = Journal::temporary().expect("journal");
        let k = key("g", "K", "ns", "n");
        journal
            .claims
            .insert(encode_claim_key(&k), &b"\"not a record\""[..])
            .expect("insert");
        let err = journal.update_claim(&k, |_| Some(record(1))).expect_err("corrupt");
        assert!(matches!(err, JournalError::Corrupt { tree: CLAIMS, .. }));
        assert!(err.to_string().contains("ns/n"), "{err}");
    }

    #[test]
    fn remove_claim_forgets_only_that_claim() {
        let journal = Journal::temporary().expect("journal");
        let (a, b) = (key("g", "K", "ns", "a"), key("g", "K", "ns", "b"));
        journal.put_claim(&a, &record(1)).expect("put");
        journal.put_claim(&b, &record(2)).expect("put");
        journal.remove_claim(&a).expect("remove");
        journal.remove_claim(&a).expect("remove twice is fine");
        assert_eq!(journal.claim(&a).expect("get"), None);
        assert_eq!(journal.claims().expect("all"), vec![(b, record(2))]);
    }
}
