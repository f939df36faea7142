//! Discovery documents: `/version`, `/api`, `/apis` and the per-group-version resource lists,
//! built from the resource table so a new kind shows up everywhere at once.

use serde_json::{json, Value};

use crate::api::resource::ResourceInfo;

/// The Kubernetes minor version Skiff answers as (the kubectl dispatcher picks by it).
pub const KUBE_MINOR: &str = "33";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0"),
        "gitCommit": concat!("skiff-", env!("CARGO_PKG_VERSION")),
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The API groups other than core, each with its versions, preferred first.
fn groups(rows: &[&ResourceInfo]) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in rows.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) if !vs.contains(&r.version) => vs.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    for (_, vs) in &mut out {
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first, and
/// versions of another form last, in name order.
fn version_priority(v: &str) -> (u8, u64, u64, std::cmp::Reverse<String>) {
    let parse = |s: &str| -> Option<(u8, u64, u64)> {
        let rest = s.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: u64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((3, major, 0));
        }
        for (word, rank) in [("beta", 2), ("alpha", 1)] {
            if let Some(n) = tail.strip_prefix(word) {
                return Some((rank, major, n.parse().ok()?));
            }
        }
        None
    };
    match parse(v) {
        Some((rank, major, minor)) => (rank, major, minor, std::cmp::Reverse(String::new())),
        None => (0, 0, 0, std::cmp::Reverse(v.to_string())),
    }
}

fn group_versions(group: &str, versions: &[&str]) -> (Vec<Value>, Value) {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = gvs.first().cloned().unwrap_or(Value::Null);
    (gvs, preferred)
}

/// `/api`: the core group's versions.
pub fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

/// `/apis`: every named group.
pub fn api_group_list(rows: &[&ResourceInfo]) -> Value {
    let groups: Vec<Value> = groups(rows)
        .into_iter()
        .map(|(g, vs)| {
            let (versions, preferred) = group_versions(g, &vs);
            json!({"name": g, "versions": versions, "preferredVersion": preferred})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`: one group.
pub fn api_group(rows: &[&ResourceInfo], group: &str) -> Option<Value> {
    groups(rows).into_iter().find(|(g, _)| *g == group).map(|(g, vs)| {
        let (versions, preferred) = group_versions(g, &vs);
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": versions, "preferredVersion": preferred})
    })
}

/// Every served resource takes every verb (subresources list their own).
fn verbs(_: &ResourceInfo) -> Vec<&'static str> {
    vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]
}

fn row(r: &ResourceInfo) -> Value {
    let mut v = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": verbs(r),
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    v
}

fn sub(r: &ResourceInfo, name: &str, kind: &str, verbs: &[&str]) -> Value {
    json!({"name": format!("{}/{name}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs})
}

/// `/api/v1` or `/apis/<group>/v1`: the APIResourceList of one group version.
pub fn resource_list(rows: &[&ResourceInfo], group: &str, version: &str) -> Option<Value> {
    let rows: Vec<&ResourceInfo> = rows
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .copied()
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in rows {
        resources.push(row(r));
        if r.has_status {
            resources.push(sub(r, "status", r.kind, &["get", "patch", "update"]));
        }
        if r.has_scale {
            let mut s = sub(r, "scale", "Scale", &["get", "patch", "update"]);
            s["group"] = json!("autoscaling");
            s["version"] = json!("v1");
            resources.push(s);
        }
        for s in r.subresources {
            let mut e = sub(r, s.name, s.kind, s.verbs);
            if (s.group, s.version) != (r.group, r.version) {
                e["group"] = json!(s.group);
                e["version"] = json!(s.version);
            }
            resources.push(e);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The media type of aggregated discovery, as kubectl asks for it and as the answer must say.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an Accept header asks for aggregated discovery (v2).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        p.contains("g=apidiscovery.k8s.io")
            && p.contains("v=v2")
            && p.contains("as=APIGroupDiscoveryList")
    })
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let kind = |group: &str, version: &str, kind: &str| json!({"group": group, "version": version, "kind": kind});
    let mut subs = Vec::new();
    if r.has_status {
        subs.push(json!({"subresource": "status", "responseKind": kind(r.group, r.version, r.kind), "verbs": ["get", "patch", "update"]}));
    }
    if r.has_scale {
        subs.push(json!({"subresource": "scale", "responseKind": kind("autoscaling", "v1", "Scale"), "verbs": ["get", "patch", "update"]}));
    }
    for s in r.subresources {
        subs.push(json!({"subresource": s.name, "responseKind": kind(s.group, s.version, s.kind), "verbs": s.verbs}));
    }
    let mut v = json!({
        "resource": r.plural,
        "responseKind": kind(r.group, r.version, r.kind),
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": verbs(r),
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !subs.is_empty() {
        v["subresources"] = json!(subs);
    }
    v
}

fn aggregated_group(rows: &[&ResourceInfo], group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = rows
                .iter()
                .filter(|r| r.group == group && r.version == *v)
                .map(|r| aggregated_resource(r))
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let metadata = if group.is_empty() {
        json!({"creationTimestamp": null})
    } else {
        json!({"name": group, "creationTimestamp": null})
    };
    json!({"metadata": metadata, "versions": versions})
}

/// `/api` (core = true) or `/apis` as an aggregated APIGroupDiscoveryList.
pub fn aggregated(rows: &[&ResourceInfo], core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(rows, "", &["v1"])]
    } else {
        groups(rows)
            .into_iter()
            .map(|(g, vs)| aggregated_group(rows, g, &vs))
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resource::RESOURCES;

    #[test]
    fn core_list_has_pods_and_eviction() {
        let rows: Vec<&ResourceInfo> = RESOURCES.iter().collect();
        let v = resource_list(&rows, "", "v1").unwrap();
        let names: Vec<&str> = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods") && names.contains(&"pods/eviction"));
        let apps = resource_list(&rows, "apps", "v1").unwrap();
        assert!(apps.to_string().contains("deployments/scale"));
        assert!(resource_list(&rows, "nope", "v1").is_none());
        let list = api_group_list(&rows);
        let groups: Vec<&str> = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            groups,
            [
                "apiextensions.k8s.io",
                "apps",
                "coordination.k8s.io",
                "events.k8s.io",
                "rbac.authorization.k8s.io"
            ]
        );
        let mut vs = vec!["v1alpha1", "v2", "v1beta2", "v1", "v1beta1", "foo"];
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(vs, ["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }
}
