//! Which served objects a request sees: its resource, its namespace (none: all), and its label and field
//! selectors. Pure; lists, gets and watches all ask it.

use super::query::Query;
use super::selector::{FieldSelector, LabelSelector};
use crate::shim::api::names::names;
use crate::shim::api::resources::Resource;
use crate::shim::index::store::Served;

#[derive(Clone, Debug)]
pub struct Scope {
    pub resource: Resource,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Scope {
    pub fn new(resource: Resource, namespace: Option<&str>, query: &Query) -> Scope {
        Scope {
            resource,
            namespace: namespace.map(str::to_string),
            labels: query.labels.clone(),
            fields: query.fields.clone(),
        }
    }

    pub fn sees(&self, served: &Served) -> bool {
        let key = &served.key;
        key.resource == self.resource
            && self.namespace.as_ref().is_none_or(|ns| *ns == key.namespace)
            && self.labels.matches(&served.labels)
            && self
                .fields
                .matches(|name| names(name, &served.candidate()), &key.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::index::store::ObjectKey;
    use crate::shim::request::query::parse;
    use serde_json::json;

    fn served(namespace: &str, name: &str, kind: &str) -> Served {
        let content = json!({"metadata": {"labels": {"claimsync.dev/kind": kind}}});
        Served {
            key: ObjectKey {
                resource: Resource::ClaimSyncs,
                namespace: namespace.into(),
                name: name.into(),
                group: "g.org".into(),
                kind: kind.into(),
            },
            rv: 1,
            labels: crate::shim::api::objects::labels_of(&content),
            content,
        }
    }

    #[test]
    fn scopes_filter_by_namespace_labels_and_names() {
        let objects = [
            served("a", "db", "Db"),
            served("a", "db", "Cluster"),
            served("b", "web", "Cluster"),
        ];
        // (namespace, query, indexes seen)
        let cases: [(Option<&str>, &str, &[usize]); 6] = [
            (None, "", &[0, 1, 2]),
            (Some("a"), "", &[0, 1]),
            (None, "labelSelector=claimsync.dev%2Fkind%3DCluster", &[1, 2]),
            (Some("a"), "fieldSelector=metadata.name%3Ddb", &[0, 1]),
            (Some("a"), "fieldSelector=metadata.name%3Ddb.db.g.org", &[0]),
            (None, "fieldSelector=metadata.namespace%3Db", &[2]),
        ];
        for (namespace, query, want) in cases {
            let scope = Scope::new(Resource::ClaimSyncs, namespace, &parse(Some(query)).unwrap());
            let seen: Vec<usize> = (0..objects.len()).filter(|&i| scope.sees(&objects[i])).collect();
            assert_eq!(seen, want, "{namespace:?} {query}");
        }
        let kinds = Scope::new(Resource::ClaimKinds, None, &parse(None).unwrap());
        assert!(!kinds.sees(&objects[0]));
    }
}
