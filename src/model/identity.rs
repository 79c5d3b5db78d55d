//! The cluster id every twin is named after, and when it may not change: the id recorded in the app cluster (and
//! in the journal) wins over a new `--cluster-id` or a new `kube-system` uid, because a new id would name every
//! twin anew and so duplicate all infrastructure. Pure decision; sync/identity.rs reads and writes the records.

/// Where the effective cluster id came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdSource {
    /// `--cluster-id`.
    Flag,
    /// The uid of the app cluster's `kube-system` namespace.
    KubeSystemUid,
}

impl IdSource {
    pub fn describe(self) -> &'static str {
        match self {
            IdSource::Flag => "--cluster-id",
            IdSource::KubeSystemUid => "the uid of the app cluster's kube-system namespace",
        }
    }
}

/// What start-up does with the cluster id.
#[derive(Debug, PartialEq, Eq)]
pub enum Pinning {
    /// The records agree with the effective id (or there are none yet): use it, and record it where missing.
    Use {
        record_in_cluster: bool,
        record_in_journal: bool,
    },
    /// The effective id differs from a record: refuse to start.
    Refuse {
        recorded: String,
        recorded_in: &'static str,
    },
}

/// Decides whether `effective` may be used, given the id recorded in the app cluster and in the journal.
pub fn pin(in_cluster: Option<&str>, in_journal: Option<&str>, effective: &str) -> Pinning {
    if let Some(recorded) = in_cluster.filter(|r| *r != effective) {
        return Pinning::Refuse {
            recorded: recorded.to_string(),
            recorded_in: "the app cluster",
        };
    }
    // Without a record in the cluster (deleted, or a rebuilt cluster), a journal made under another id still says
    // that this app cluster's claims were replicated under that id.
    if in_cluster.is_none()
        && let Some(recorded) = in_journal.filter(|r| *r != effective)
    {
        return Pinning::Refuse {
            recorded: recorded.to_string(),
            recorded_in: "the journal",
        };
    }
    Pinning::Use {
        record_in_cluster: in_cluster.is_none(),
        record_in_journal: in_journal != Some(effective),
    }
}

/// What start-up does with the claim namespace, given the one recorded in the identity ConfigMap: `Ok(true)` to
/// record it (none yet: a new install, or one from before the namespace was pinned), `Ok(false)` to go on, or the
/// recorded one, which `effective` must not replace (every twin lives there; another namespace would give every
/// claim a second twin, a second copy of its infrastructure).
pub fn pin_claim_namespace(recorded: Option<&str>, effective: &str) -> Result<bool, String> {
    match recorded {
        None => Ok(true),
        Some(recorded) if recorded == effective => Ok(false),
        Some(recorded) => Err(recorded.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_namespace_is_recorded_once_and_then_held() {
        assert_eq!(pin_claim_namespace(None, "app-claims"), Ok(true));
        assert_eq!(pin_claim_namespace(Some("app-claims"), "app-claims"), Ok(false));
        assert_eq!(
            pin_claim_namespace(Some("app-claims"), "other-claims"),
            Err("app-claims".to_string())
        );
    }

    #[test]
    fn a_recorded_id_is_never_silently_replaced() {
        let use_ = |cluster, journal| Pinning::Use {
            record_in_cluster: cluster,
            record_in_journal: journal,
        };
        let refuse = |recorded: &str, recorded_in| Pinning::Refuse {
            recorded: recorded.into(),
            recorded_in,
        };
        let cases = [
            (None, None, use_(true, true)),
            (Some("a"), Some("a"), use_(false, false)),
            (Some("a"), None, use_(false, true)),
            (None, Some("a"), use_(true, false)),
            (Some("b"), Some("a"), refuse("b", "the app cluster")),
            (Some("b"), None, refuse("b", "the app cluster")),
            (None, Some("b"), refuse("b", "the journal")),
            // The cluster's record wins over a journal of another id (e.g. a journal copied from elsewhere).
            (Some("a"), Some("b"), use_(false, true)),
        ];
        for (in_cluster, in_journal, want) in cases {
            assert_eq!(pin(in_cluster, in_journal, "a"), want, "{in_cluster:?} {in_journal:?}");
        }
    }
}
