//! How a claimsync is named when two claim kinds share a name in one namespace: the plain name (the claim's) when
//! it is unambiguous, and the qualified name `<name>.<kind-lowercase>.<group>` that always resolves to one.
//! Pure functions; the index supplies the candidates.

/// `<name>.<kind-lowercase>.<group>`, e.g. `db.postgresqlinstance.db.starter.org`.
pub fn qualified_name(name: &str, kind: &str, group: &str) -> String {
    format!("{name}.{}.{group}", kind.to_lowercase())
}

/// A claimsync of one namespace, as far as naming goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub group: &'a str,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The index of the one candidate the name means.
    One(usize),
    NotFound,
    /// The plain name of several claims of different kinds: their qualified names, sorted.
    Ambiguous(Vec<String>),
}

/// Which candidate (all of one namespace) `requested` names: a qualified name first (a claim of that kind and
/// name always exists at most once), else a plain name if exactly one claim bears it.
pub fn resolve(requested: &str, candidates: &[Candidate<'_>]) -> Resolved {
    let qualified = |c: &Candidate<'_>| qualified_name(c.name, c.kind, c.group);
    if let Some(i) = candidates.iter().position(|c| qualified(c) == requested) {
        return Resolved::One(i);
    }
    let plain: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].name == requested)
        .collect();
    match plain.as_slice() {
        [] => Resolved::NotFound,
        [one] => Resolved::One(*one),
        many => {
            let mut names: Vec<String> = many.iter().map(|&i| qualified(&candidates[i])).collect();
            names.sort();
            Resolved::Ambiguous(names)
        }
    }
}

/// Whether `requested` (from `metadata.name=` in a field selector) names this candidate, plainly or qualified.
pub fn names(requested: &str, candidate: &Candidate<'_>) -> bool {
    candidate.name == requested || qualified_name(candidate.name, candidate.kind, candidate.group) == requested
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c<'a>(name: &'a str, kind: &'a str, group: &'a str) -> Candidate<'a> {
        Candidate { name, kind, group }
    }

    #[test]
    fn resolves_plain_and_qualified_names() {
        let shared = [
            c("db", "KubernetesCluster", "k8s.starter.org"),
            c("db", "PostgreSQLInstance", "db.starter.org"),
            c("web", "KubernetesCluster", "k8s.starter.org"),
            // A claim whose plain name looks like another's qualified name.
            c(
                "web.kubernetescluster.k8s.starter.org",
                "PostgreSQLInstance",
                "db.starter.org",
            ),
        ];
        let cases = [
            ("web", Resolved::One(2)),
            ("db.kubernetescluster.k8s.starter.org", Resolved::One(0)),
            ("db.postgresqlinstance.db.starter.org", Resolved::One(1)),
            (
                "db",
                Resolved::Ambiguous(vec![
                    "db.kubernetescluster.k8s.starter.org".into(),
                    "db.postgresqlinstance.db.starter.org".into(),
                ]),
            ),
            // The qualified reading wins; the odd claim is still reachable by its own qualified name.
            ("web.kubernetescluster.k8s.starter.org", Resolved::One(2)),
            (
                "web.kubernetescluster.k8s.starter.org.postgresqlinstance.db.starter.org",
                Resolved::One(3),
            ),
            ("db.KubernetesCluster.k8s.starter.org", Resolved::NotFound),
            ("nothing", Resolved::NotFound),
        ];
        for (requested, want) in cases {
            assert_eq!(resolve(requested, &shared), want, "{requested}");
        }
        assert_eq!(resolve("db", &[]), Resolved::NotFound);
    }

    #[test]
    fn field_selector_names_match_either_form() {
        let db = c("db", "PostgreSQLInstance", "db.starter.org");
        assert!(names("db", &db));
        assert!(names("db.postgresqlinstance.db.starter.org", &db));
        assert!(!names("db.kubernetescluster.k8s.starter.org", &db));
    }
}
