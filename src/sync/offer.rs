//! Whether the control plane still offers a claim kind: its claim CRD and the XRD that owns it exist and are not
//! being deleted. Catalog knowledge that claim reconcilers consult; it reads the control plane and writes nothing.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

use crate::context::Context;
use crate::error::{Error, KubeContext, Side};
use crate::model::kind::ClaimKind;

/// Whether the control plane is taking this kind away: its claim CRD, or the XRD that owns it, is gone or being
/// deleted. Crossplane then deletes every claim of the kind itself, and recreating them would fight it.
pub async fn kind_withdrawing(ctx: &Context, kind: &ClaimKind) -> Result<bool, Error> {
    let crd_name = &kind.crd_name;
    let crds = Api::<CustomResourceDefinition>::all(ctx.remote.clone());
    let Some(crd) = crds
        .get_opt(crd_name)
        .await
        .context(Side::ControlPlane, "get CRD", crd_name)?
    else {
        return Ok(true);
    };
    if crd.metadata.deletion_timestamp.is_some() {
        return Ok(true);
    }
    let xrd = crd
        .owner_references()
        .iter()
        .find(|o| o.kind == "CompositeResourceDefinition")
        .map(|o| o.name.clone());
    let Some(xrd) = xrd else { return Ok(false) };
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.crossplane.io", "v1", "CompositeResourceDefinition"),
        "compositeresourcedefinitions",
    );
    let xrds = Api::<DynamicObject>::all_with(ctx.remote.clone(), &resource);
    let xrd = xrds.get_opt(&xrd).await.context(Side::ControlPlane, "get XRD", &xrd)?;
    Ok(xrd.is_none_or(|x| x.metadata.deletion_timestamp.is_some()))
}
