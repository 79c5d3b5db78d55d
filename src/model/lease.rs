//! Leader election over a Lease, the decision part: whether this replica holds the lease, may take it, or must
//! wait. As client-go does, expiry is judged by how long the lease has gone unchanged as this replica observed it
//! on its own clock, never by comparing timestamps written by another machine. Pure.

/// What this replica last saw of the lease: its holder and its renew time (as written, compared for change only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub holder: Option<String>,
    pub renewed: Option<String>,
}

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// There is no lease yet: create it, held by this replica.
    Create,
    /// This replica holds it: renew it.
    Renew,
    /// It is free (no holder) or its holder stopped renewing for a whole lease duration: take it over.
    TakeOver,
    /// Another replica holds it and renews it: wait.
    Wait,
}

/// Decides the next step. `unchanged_for_ms` is how long the lease has looked exactly like `lease` to this replica.
pub fn next(lease: Option<&Seen>, me: &str, unchanged_for_ms: u64, duration_ms: u64) -> Step {
    let Some(lease) = lease else { return Step::Create };
    match lease.holder.as_deref() {
        Some(holder) if holder == me => Step::Renew,
        None | Some("") => Step::TakeOver,
        Some(_) if unchanged_for_ms >= duration_ms => Step::TakeOver,
        Some(_) => Step::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(holder: Option<&str>) -> Seen {
        Seen {
            holder: holder.map(str::to_string),
            renewed: Some("t".into()),
        }
    }

    #[test]
    fn a_lease_goes_to_whoever_finds_it_free_or_expired() {
        let cases = [
            (None, 0, Step::Create),
            (Some(seen(Some("me"))), 99_000, Step::Renew),
            (Some(seen(None)), 0, Step::TakeOver),
            (Some(seen(Some(""))), 0, Step::TakeOver),
            (Some(seen(Some("other"))), 9_999, Step::Wait),
            (Some(seen(Some("other"))), 10_000, Step::TakeOver),
        ];
        for (lease, unchanged, want) in cases {
            assert_eq!(
                next(lease.as_ref(), "me", unchanged, 10_000),
                want,
                "{lease:?} {unchanged}"
            );
        }
    }
}
