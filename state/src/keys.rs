//! Encoding of [`ClaimKey`]s into sled keys: each part is escaped and terminated so
//! distinct keys never collide, (group, kind) is an exact prefix, and byte order = `Ord`.

use crate::error::JournalError;
use crate::records::ClaimKey;

/// Starts every two-byte marker. Kubernetes names never contain it.
const MARK: u8 = 0x00;
/// After [`MARK`]: the part ends here. Sorts below any byte a part can continue with.
const END: u8 = 0x01;
/// After [`MARK`]: a literal `0x00` of the part. `0xFF` never occurs in UTF-8.
const ESCAPED: u8 = 0xFF;

/// Appends one escaped, terminated part.
fn push_part(out: &mut Vec<u8>, part: &str) {
    for &b in part.as_bytes() {
        out.push(b);
        if b == MARK {
            out.push(ESCAPED);
        }
    }
    out.extend([MARK, END]);
}

/// Sled key of a claim: each of group, kind, namespace, name followed by `00 01`,
/// with a `00` inside a part written as `00 FF`.
///
/// The encoding is self-delimiting, so it is injective and the encoded (group, kind)
/// is a prefix of exactly that kind's keys; `00 01 < 00 FF < 01..` keeps byte order
/// equal to [`ClaimKey`]'s `Ord`.
pub(crate) fn encode_claim_key(key: &ClaimKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.group.len() + key.kind.len() + key.namespace.len() + key.name.len() + 8);
    for part in [&key.group, &key.kind, &key.namespace, &key.name] {
        push_part(&mut out, part);
    }
    out
}

/// Prefix shared by exactly the claims of one (group, kind).
pub(crate) fn kind_prefix(group: &str, kind: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(group.len() + kind.len() + 4);
    push_part(&mut out, group);
    push_part(&mut out, kind);
    out
}

/// Inverse of [`encode_claim_key`].
pub(crate) fn decode_claim_key(tree: &'static str, raw: &[u8]) -> Result<ClaimKey, JournalError> {
    let bad = |reason| JournalError::CorruptKey {
        tree,
        key: hex::encode(raw),
        reason,
    };
    let mut parts: Vec<String> = Vec::with_capacity(4);
    let mut current = Vec::new();
    let mut bytes = raw.iter().copied().peekable();
    let mut ended = true;
    while let Some(b) = bytes.next() {
        ended = false;
        if b != MARK {
            current.push(b);
            continue;
        }
        match bytes.next() {
            Some(ESCAPED) => current.push(MARK),
            Some(END) => {
                let part = String::from_utf8(std::mem::take(&mut current)).map_err(|_| bad("part is not UTF-8"))?;
                parts.push(part);
                ended = true;
            }
            _ => return Err(bad("0x00 not followed by 0x01 or 0xFF")),
        }
    }
    if !ended {
        return Err(bad("unterminated part"));
    }
    let [group, kind, namespace, name]: [String; 4] =
        parts.try_into().map_err(|_| bad("expected exactly four parts"))?;
    Ok(ClaimKey {
        group,
        kind,
        namespace,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tricky_keys() -> Vec<ClaimKey> {
        let k = ClaimKey::new;
        vec![
            k("a.b", "X", "ns", "n"),
            k("a", "b.X", "ns", "n"),
            k("a", "b", "X", "n"),
            k("a.b.X", "", "ns", "n"),
            k("", "a.b", "X/ns", "n"),
            k("", "", "", ""),
            k("a", "", "", ""),
            k("", "a", "", ""),
            k("a\0b", "X", "ns", "n"),
            k("a", "b\0X", "ns", "n"),
            k("a\0", "bX", "ns", "n"),
            k("a", "\0bX", "ns", "n"),
            k("a\0\u{ff}", "X", "ns", "n"),
            k("a\u{1}", "X", "ns", "n"),
            k("a", "\u{1}X", "ns", "n"),
            k("a", "b", "\0", "n"),
            k("k8s.starter.org", "KubernetesCluster", "team-a", "prod"),
            k("k8s.starter.org", "KubernetesClusterX", "team-a", "prod"),
            k("k8s.starter.org", "KubernetesCluster", "team-a", "prod-2"),
            k("k8s.starter.org", "KubernetesCluster", "team-a-prod", ""),
            k("ünïcödé.io", "Kïnd", "ns", "名前"),
        ]
    }

    #[test]
    fn encodes_as_documented() {
        let key = ClaimKey::new("a.b", "X\0", "ns", "");
        assert_eq!(encode_claim_key(&key), b"a.b\0\x01X\0\xff\0\x01ns\0\x01\0\x01".to_vec());
        assert_eq!(kind_prefix("a.b", "X"), b"a.b\0\x01X\0\x01".to_vec());
    }

    #[test]
    fn round_trip_and_no_collisions() {
        let keys = tricky_keys();
        for key in &keys {
            let raw = encode_claim_key(key);
            assert_eq!(&decode_claim_key("claims", &raw).expect("decodes"), key);
        }
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(encode_claim_key(a), encode_claim_key(b), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn byte_order_matches_key_order() {
        let mut by_ord = tricky_keys();
        by_ord.sort();
        let mut by_bytes = tricky_keys();
        by_bytes.sort_by_key(encode_claim_key);
        assert_eq!(by_ord, by_bytes);
    }

    #[test]
    fn kind_prefix_matches_only_that_kind() {
        let keys = tricky_keys();
        for probe in &keys {
            let prefix = kind_prefix(&probe.group, &probe.kind);
            for key in &keys {
                let same_kind = key.group == probe.group && key.kind == probe.kind;
                assert_eq!(
                    encode_claim_key(key).starts_with(&prefix),
                    same_kind,
                    "prefix of {probe:?} vs {key:?}"
                );
            }
        }
    }

    #[test]
    fn malformed_keys_are_rejected() {
        let cases: [&[u8]; 8] = [
            b"",
            b"a\0\x01b\0\x01c\0\x01",
            b"a\0\x01b\0\x01c\0\x01d\0\x01e\0\x01",
            b"a\0\x01b\0\x01c\0\x01d",
            b"a\0\x01b\0\x01c\0\x01d\0",
            b"a\0\x01b\0\x01c\0\x01\xc3\0\x01",
            b"a\0\x02b\0\x01c\0\x01d\0\x01",
            b"a\0b\0c\0d\0",
        ];
        for raw in cases {
            assert!(
                matches!(decode_claim_key("claims", raw), Err(JournalError::CorruptKey { .. })),
                "{raw:?}"
            );
        }
    }
}
