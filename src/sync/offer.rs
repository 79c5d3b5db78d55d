//! Whether the control plane still offers a claim kind: its claim CRD and the XRD that owns it exist and are not
//! being deleted. Catalog knowledge that claim reconcilers consult; it reads caches (or the control plane) only.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

use crate::error::{Error, KubeContext, Side};
use crate::model::kind::ClaimKind;
use crate::sync::caches::{CACHE_WAIT, xrd_resource};
use crate::sync::context::Context;

/// Whether the control plane is taking this kind away: its claim CRD, or the XRD that owns it, is gone or being
/// deleted. Crossplane then deletes every claim of the kind itself, and recreating them would fight it. Read from
/// the watch caches once they are filled, from the API server before.
pub async fn kind_withdrawing(ctx: &Context, kind: &ClaimKind) -> Result<bool, Error> {
    let crd_name = &kind.crd_name;
    let caches = &ctx.caches;
    let crd = if caches.crds.ready_within(CACHE_WAIT).await {
        caches.crds.store.get(&ObjectRef::new(crd_name)).map(|c| (*c).clone())
    } else {
        Api::<PartialObjectMeta<CustomResourceDefinition>>::all(ctx.remote.clone())
            .get_opt(crd_name)
            .await
            .context(Side::ControlPlane, "get CRD", crd_name)?
    };
    let Some(crd) = crd else { return Ok(true) };
    if crd.metadata.deletion_timestamp.is_some() {
        return Ok(true);
    }
    let xrd = crd
        .owner_references()
        .iter()
        .find(|o| o.kind == "CompositeResourceDefinition")
        .map(|o| o.name.clone());
    let Some(xrd) = xrd else { return Ok(false) };
    let resource = xrd_resource();
    let xrd = if caches.xrds.ready_within(CACHE_WAIT).await {
        caches
            .xrds
            .store
            .get(&ObjectRef::new_with(&xrd, resource))
            .map(|x| (*x).clone())
    } else {
        Api::<PartialObjectMeta<DynamicObject>>::all_with(ctx.remote.clone(), &resource)
            .get_opt(&xrd)
            .await
            .context(Side::ControlPlane, "get XRD", &xrd)?
    };
    Ok(xrd.is_none_or(|x| x.metadata.deletion_timestamp.is_some()))
}
