//! Label and field selectors as the Kubernetes API accepts them (`-l`, `--field-selector`, and the
//! `metadata.name=` that `kubectl get -w NAME` sends): parsing and matching. Pure functions.

use std::collections::BTreeMap;
use std::num::ParseIntError;

/// A selector the API would refuse; shown to the client in a 400 with its causes.
#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    #[error("label selector {selector:?}")]
    Label {
        selector: String,
        #[source]
        source: RequirementError,
    },
    #[error("field selector {selector:?}: {term:?} is not <field>=<value>")]
    NotATerm { selector: String, term: String },
    #[error("field label not supported: {field} (only metadata.name and metadata.namespace)")]
    UnsupportedField { field: String },
}

/// What is wrong with one requirement of a label selector.
#[derive(Debug, thiserror::Error)]
pub enum RequirementError {
    #[error("{requirement:?}: unbalanced parentheses")]
    Unbalanced { requirement: String },
    #[error("{requirement:?}: want `<key> in (...)` or `<key> notin (...)`")]
    NotASet { requirement: String },
    #[error("{requirement:?}: {value:?} is not an integer")]
    NotAnInteger {
        requirement: String,
        value: String,
        #[source]
        source: ParseIntError,
    },
    #[error("{key:?} is not a valid label key")]
    InvalidKey { key: String },
    #[error("{value:?} is not a valid label value")]
    InvalidValue { value: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Exists,
    DoesNotExist,
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(requirement(part).map_err(|source| SelectorError::Label {
                selector: text.to_string(),
                source,
            })?);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.get(&r.key);
            match &r.op {
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
                Op::In(values) => value.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Op::Gt(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
                Op::Lt(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
            }
        })
    }
}

/// Splits at commas outside parentheses: `a in (x,y),b` is two requirements.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, ch) in text.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn requirement(part: &str) -> Result<Requirement, RequirementError> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement {
            key: checked_key(key.trim())?,
            op: Op::DoesNotExist,
        });
    }
    if let Some(open) = part.find('(') {
        let close = part
            .rfind(')')
            .filter(|&c| c > open && part[c + 1..].trim().is_empty())
            .ok_or_else(|| RequirementError::Unbalanced {
                requirement: part.to_string(),
            })?;
        let words: Vec<&str> = part[..open].split_whitespace().collect();
        let values: Vec<String> = part[open + 1..close]
            .split(',')
            .map(|v| checked_value(v.trim()))
            .collect::<Result<_, _>>()?;
        return match words.as_slice() {
            [key, "in"] => Ok(Requirement {
                key: checked_key(key)?,
                op: Op::In(values),
            }),
            [key, "notin"] => Ok(Requirement {
                key: checked_key(key)?,
                op: Op::NotIn(values),
            }),
            _ => Err(RequirementError::NotASet {
                requirement: part.to_string(),
            }),
        };
    }
    for (token, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = part.split_once(token) {
            let values = vec![checked_value(value.trim())?];
            let op = if negated { Op::NotIn(values) } else { Op::In(values) };
            return Ok(Requirement {
                key: checked_key(key.trim())?,
                op,
            });
        }
    }
    for (token, greater) in [('>', true), ('<', false)] {
        if let Some((key, value)) = part.split_once(token) {
            let n = value
                .trim()
                .parse::<i64>()
                .map_err(|source| RequirementError::NotAnInteger {
                    requirement: part.to_string(),
                    value: value.to_string(),
                    source,
                })?;
            let op = if greater { Op::Gt(n) } else { Op::Lt(n) };
            return Ok(Requirement {
                key: checked_key(key.trim())?,
                op,
            });
        }
    }
    Ok(Requirement {
        key: checked_key(part)?,
        op: Op::Exists,
    })
}

fn checked_key(key: &str) -> Result<String, RequirementError> {
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_string())
    } else {
        Err(RequirementError::InvalidKey { key: key.to_string() })
    }
}

fn checked_value(value: &str) -> Result<String, RequirementError> {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(value.to_string())
    } else {
        Err(RequirementError::InvalidValue {
            value: value.to_string(),
        })
    }
}

/// A field selector over the two fields these resources support: `metadata.name` and `metadata.namespace`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (field, value, equal): `metadata.name!=x` is ("metadata.name", "x", false).
    terms: Vec<(Field, String, bool)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Name,
    Namespace,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(SelectorError::NotATerm {
                    selector: text.to_string(),
                    term: part.to_string(),
                });
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => {
                    return Err(SelectorError::UnsupportedField {
                        field: other.to_string(),
                    });
                }
            };
            terms.push((field, value.trim().to_string(), equal));
        }
        Ok(FieldSelector { terms })
    }

    /// The name a selector asks for with `metadata.name=<name>`, if it does (authorization is then for that name).
    pub fn name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|(field, _, equal)| *field == Field::Name && *equal)
            .map(|(_, value, _)| value.as_str())
    }

    /// Whether an object matches, given how it answers to a name (plain or qualified) and its namespace.
    pub fn matches(&self, is_named: impl Fn(&str) -> bool, namespace: &str) -> bool {
        self.terms.iter().all(|(field, value, equal)| {
            let hit = match field {
                Field::Name => is_named(value),
                Field::Namespace => namespace == value,
            };
            hit == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selectors_match_like_the_api_server() {
        let object = labels(&[
            ("claimsync.dev/kind", "KubernetesCluster"),
            ("claimsync.dev/phase", "Synced"),
            ("tier", "3"),
        ]);
        let cases = [
            ("", true),
            ("claimsync.dev/kind=KubernetesCluster", true),
            ("claimsync.dev/kind==KubernetesCluster", true),
            ("claimsync.dev/kind=PostgreSQLInstance", false),
            ("claimsync.dev/kind!=PostgreSQLInstance", true),
            ("absent!=x", true),
            ("claimsync.dev/phase in (Synced, Pending)", true),
            ("claimsync.dev/phase in (Conflict,Error),tier", false),
            ("claimsync.dev/phase notin (Conflict)", true),
            ("absent notin (x)", true),
            ("tier", true),
            ("!tier", false),
            ("!absent", true),
            ("tier>2", true),
            ("tier<3", false),
            ("claimsync.dev/kind=KubernetesCluster, claimsync.dev/phase=Synced", true),
            (
                "claimsync.dev/kind=KubernetesCluster,claimsync.dev/phase=Pending",
                false,
            ),
        ];
        for (text, want) in cases {
            let selector = LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selector.matches(&object), want, "{text}");
        }
    }

    #[test]
    fn malformed_label_selectors_are_refused() {
        for text in ["a in (x", "a in x)", "a within (x)", "a=b c", "tier>x", "=x", "a=(b)"] {
            assert!(LabelSelector::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn field_selectors_on_name_and_namespace() {
        let is_named = |n: &str| n == "db" || n == "db.postgresqlinstance.db.starter.org";
        let cases = [
            ("", true, None),
            ("metadata.name=db", true, Some("db")),
            (
                "metadata.name==db.postgresqlinstance.db.starter.org",
                true,
                Some("db.postgresqlinstance.db.starter.org"),
            ),
            ("metadata.name=web", false, Some("web")),
            ("metadata.name!=web", true, None),
            ("metadata.name=db,metadata.namespace=team-a", true, Some("db")),
            ("metadata.namespace!=team-a", false, None),
        ];
        for (text, want, name) in cases {
            let selector = FieldSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selector.matches(is_named, "team-a"), want, "{text}");
            assert_eq!(selector.name(), name, "{text}");
        }
        let refused = FieldSelector::parse("status.phase=Synced").unwrap_err().to_string();
        assert!(refused.contains("not supported"), "{refused}");
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
