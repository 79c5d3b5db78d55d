//! Authorization: every request's user, verb, resource, namespace and name (or path, for discovery and OpenAPI)
//! is put to the app cluster as a SubjectAccessReview, so RBAC decides who sees which claimsyncs. Decisions are
//! cached briefly (allowed 10s, denied 2s), as the webhook authorizer does. Creates SubjectAccessReviews only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};

use super::front_proxy::User;
use crate::error::{Error, KubeContext, Side};
use crate::shim::api::resources::{GROUP, VERSION};
use crate::shim::request::route::Attributes;

const ALLOWED_TTL: Duration = Duration::from_secs(10);
const DENIED_TTL: Duration = Duration::from_secs(2);
const CACHE_LIMIT: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Denied, with the authorizer's reason (may be empty).
    Denied(String),
}

pub struct Authorizer {
    client: Client,
    cache: Mutex<HashMap<(User, Attributes), (Decision, Instant)>>,
}

/// The SubjectAccessReview that asks whether `user` may do what `attributes` say.
pub fn review(user: &User, attributes: &Attributes) -> SubjectAccessReview {
    let mut spec = SubjectAccessReviewSpec {
        user: Some(user.name.clone()),
        uid: user.uid.clone(),
        groups: Some(user.groups.clone()),
        extra: Some(user.extra.clone()).filter(|e| !e.is_empty()),
        ..SubjectAccessReviewSpec::default()
    };
    match attributes {
        Attributes::Resource {
            verb,
            resource,
            namespace,
            name,
        } => {
            spec.resource_attributes = Some(ResourceAttributes {
                group: Some(GROUP.into()),
                version: Some(VERSION.into()),
                resource: Some(resource.plural().into()),
                verb: Some(verb.to_string()),
                namespace: namespace.clone(),
                name: name.clone(),
                ..ResourceAttributes::default()
            })
        }
        Attributes::NonResource { path } => {
            spec.non_resource_attributes = Some(NonResourceAttributes {
                path: Some(path.clone()),
                verb: Some("get".into()),
            })
        }
    }
    SubjectAccessReview {
        spec,
        ..SubjectAccessReview::default()
    }
}

impl Authorizer {
    pub fn new(client: Client) -> Authorizer {
        Authorizer {
            client,
            cache: Mutex::default(),
        }
    }

    pub async fn authorize(&self, user: &User, attributes: &Attributes) -> Result<Decision, Error> {
        let key = (user.clone(), attributes.clone());
        if let Some((decision, at)) = self.cache.lock().expect("authz cache").get(&key) {
            let ttl = if *decision == Decision::Allowed {
                ALLOWED_TTL
            } else {
                DENIED_TTL
            };
            if at.elapsed() < ttl {
                return Ok(decision.clone());
            }
        }
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review(user, attributes))
            .await
            .context(Side::App, "create", "SubjectAccessReview")?;
        let status = answer.status.unwrap_or_default();
        let decision = if status.allowed && status.denied != Some(true) {
            Decision::Allowed
        } else {
            Decision::Denied(status.reason.unwrap_or_default())
        };
        let mut cache = self.cache.lock().expect("authz cache");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, (decision.clone(), Instant::now()));
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::api::resources::Resource;
    use std::collections::BTreeMap;

    #[test]
    fn reviews_carry_the_exact_request() {
        let user = User {
            name: "alice".into(),
            uid: None,
            groups: vec!["team-a".into(), "system:authenticated".into()],
            extra: BTreeMap::new(),
        };
        let attributes = Attributes::of_resource(Resource::ClaimSyncs, Some("a"), None, true, Some("db"));
        let spec = review(&user, &attributes).spec;
        let resource = spec.resource_attributes.unwrap();
        assert_eq!(
            (
                resource.group.as_deref(),
                resource.resource.as_deref(),
                resource.verb.as_deref(),
                resource.namespace.as_deref(),
                resource.name.as_deref()
            ),
            (
                Some("claimsync.dev"),
                Some("claimsyncs"),
                Some("watch"),
                Some("a"),
                Some("db")
            )
        );
        assert_eq!(spec.user.as_deref(), Some("alice"));
        assert!(spec.extra.is_none());

        let spec = review(&user, &Attributes::NonResource { path: "/apis".into() }).spec;
        assert!(spec.resource_attributes.is_none());
        assert_eq!(spec.non_resource_attributes.unwrap().path.as_deref(), Some("/apis"));
    }
}
