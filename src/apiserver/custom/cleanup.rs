//! Deleting a CRD, as kube-apiextensions-apiserver's finalizer controller does it: the delete
//! adds the `customresourcecleanup.apiextensions.k8s.io` finalizer (`Strategy::
//! delete_finalizer`) and marks the CRD `Terminating`; this loop, run by every API server,
//! then deletes each of the CRD's objects as a client's DELETE would (their own finalizers
//! honoured, so the CRD waits for them), reports progress in the `Terminating` condition, and
//! once no object is left removes its finalizer, which lets the CRD go.
//!
//! Every API server sharing a store runs it: each step is a normal write, a second server's
//! copy meets 404s and conflicts and tries again on its next pass.

use std::time::Duration;

use serde_json::{json, Value};

use super::CRD_PREFIX;
use crate::api::meta;
use crate::api::wire::{PatchType, Request};
use crate::apiserver::registry::{decode, Registry};

/// The finalizer a CRD carries while its objects are deleted.
pub const FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// How often a pass runs while a CRD waits for its objects to go.
const PASS: Duration = Duration::from_millis(250);

/// The field manager of the loop's writes (kube's controller writes as the API server).
const MANAGER: &str = "kube-apiserver";

/// Runs until dropped (the API server's lifetime).
pub async fn run(registry: Registry) {
    let mut seen_epoch = None;
    let mut pending = false;
    loop {
        tokio::time::sleep(PASS).await;
        let epoch = registry.reader().epoch(CRD_PREFIX);
        if !pending && seen_epoch == Some(epoch) {
            continue;
        }
        seen_epoch = Some(epoch);
        pending = pass(&registry).await;
    }
}

/// One pass over the CRDs being deleted; true while any still waits.
async fn pass(registry: &Registry) -> bool {
    let mut pending = false;
    for kv in registry.reader().values(CRD_PREFIX) {
        let Ok(crd) = decode(&kv.value) else {
            continue;
        };
        let has_finalizer = crd
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
        if crd.pointer("/metadata/deletionTimestamp").is_none() || !has_finalizer {
            continue;
        }
        pending = true;
        finish(registry, &crd).await;
    }
    pending
}

/// Deletes what is left of one CRD's objects; when none is, lets the CRD go.
async fn finish(registry: &Registry, crd: &Value) {
    let Some(prefix) = super::objects_prefix_of(crd) else {
        return;
    };
    let (group, plural) = (
        crd.pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or(""),
        crd.pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let objects = registry.reader().values(&prefix);
    for kv in &objects {
        let Ok(obj) = decode(&kv.value) else {
            continue;
        };
        if obj.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let ns = meta::namespace(&obj);
        let req = Request {
            group: group.into(),
            resource: plural.into(),
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
            name: Some(meta::name(&obj).to_string()),
            client: MANAGER.into(),
            ..Default::default()
        };
        if let Err(e) = registry.delete(&req).await {
            tracing::debug!(crd = %meta::name(crd), error = %e.message, "deleting a custom object");
        }
    }
    let left = registry.reader().values(&prefix).len();
    let name = meta::name(crd);
    let (status, reason, message) = if left == 0 {
        (
            "False",
            "InstanceDeletionCompleted",
            "removed all instances".to_string(),
        )
    } else {
        (
            "True",
            "InstanceDeletionCheck",
            format!("could not confirm zero CustomResources remaining: remaining is {left}"),
        )
    };
    let mut with_status = crd.clone();
    crate::apiserver::kinds::custom_resource_definition::set_condition(
        &mut with_status,
        "Terminating",
        status,
        reason,
        &message,
    );
    if with_status.get("status") != crd.get("status") {
        let patch = json!({"metadata": {"resourceVersion": meta::resource_version(crd)},
            "status": {"conditions": with_status["status"]["conditions"]}});
        let req = crd_request(name, Some("status"), patch);
        if registry.patch(&req).await.is_err() {
            return;
        }
    }
    if left > 0 {
        return;
    }
    // The finalizer goes last; the CRD with it, if no other finalizer waits.
    let Some(current) = registry
        .reader()
        .get(&format!("{CRD_PREFIX}{name}"))
        .and_then(|kv| decode(&kv.value).ok())
    else {
        return;
    };
    let rest: Vec<Value> = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter(|x| *x != FINALIZER).cloned().collect())
        .unwrap_or_default();
    let patch = json!({"metadata": {"resourceVersion": meta::resource_version(&current),
        "finalizers": rest}});
    match registry.patch(&crd_request(name, None, patch)).await {
        Ok(_) => tracing::info!(crd = %name, "custom objects deleted; CRD finalized"),
        Err(e) => tracing::debug!(crd = %name, error = %e.message, "finalizing a CRD"),
    }
}

fn crd_request(name: &str, subresource: Option<&str>, patch: Value) -> Request {
    Request {
        group: super::GROUP.into(),
        resource: "customresourcedefinitions".into(),
        name: Some(name.into()),
        subresource: subresource.map(String::from),
        body: Some(patch),
        patch_type: Some(PatchType::Merge),
        client: MANAGER.into(),
        ..Default::default()
    }
}
