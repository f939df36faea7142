//! Custom resources: the kinds CustomResourceDefinitions add at run time.
//!
//! The [`Catalog`] is derived from the CRDs in the Store, never kept beside it: [`Custom`]
//! rebuilds it when the Store says a CRD key changed (an epoch the Store bumps), so every API
//! server sharing a store (etcd) serves the same kinds, a restart serves what was defined, and
//! a CRD's kind is served from the moment its create commits.
//!
//! The rest of the API server works with `&'static ResourceInfo` and strategies; a served
//! version of a CRD becomes one of those by being leaked once per distinct definition
//! (interned by the CRD's name and spec), so a CRD whose status changes costs nothing and
//! memory grows only with the definitions ever written.

pub mod cel;
pub mod cleanup;
pub mod schema;
pub mod strategy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use super::store;
use crate::api::resource::{self, ResourceInfo};
pub use strategy::CustomResource;

/// The group and plural of CustomResourceDefinitions themselves.
pub const GROUP: &str = "apiextensions.k8s.io";
/// Where CRDs are stored.
pub const CRD_PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// Where the objects of the CRD `crd` are stored, when `info` is CustomResourceDefinitions.
pub fn objects_prefix(info: &ResourceInfo, crd: &Value) -> Option<String> {
    if info.group != GROUP || info.plural != "customresourcedefinitions" {
        return None;
    }
    objects_prefix_of(crd)
}

/// The name of the storage version in a CRD's spec (the one with `storage: true`).
pub fn storage_version(spec: &Value) -> Option<&str> {
    spec.get("versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))?
        .get("name")?
        .as_str()
}

/// Where the objects of the CRD `crd` are stored.
pub fn objects_prefix_of(crd: &Value) -> Option<String> {
    let group = crd.pointer("/spec/group")?.as_str()?;
    let plural = crd.pointer("/spec/names/plural")?.as_str()?;
    (!group.is_empty() && !plural.is_empty()).then(|| format!("/registry/{group}/{plural}/"))
}

/// One served version of a custom resource.
#[derive(Clone, Copy)]
pub struct Served {
    /// Its row, as the built-in kinds have in `RESOURCES`.
    pub info: &'static ResourceInfo,
    /// What it does on writes and reads.
    pub strategy: &'static CustomResource,
    /// Whether this is the version objects are stored at.
    pub storage: bool,
}

/// The custom resources served now.
#[derive(Default)]
pub struct Catalog {
    served: Vec<Served>,
    /// Rows whose CRD is being deleted (it waits for finalizers): still served, but kube
    /// allows no new objects.
    terminating: Vec<&'static ResourceInfo>,
}

impl Catalog {
    /// Every served version.
    pub fn all(&self) -> &[Served] {
        &self.served
    }

    /// A version by group, version and plural (as in a URL).
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Served> {
        self.served
            .iter()
            .find(|s| s.info.group == group && s.info.version == version && s.info.plural == plural)
            .copied()
    }

    /// The storage version of a resource named by group and plural, singular, kind or short
    /// name (as a NATS request names it, without a version).
    pub fn lookup(&self, group: &str, name: &str, version: Option<&str>) -> Option<Served> {
        let matches = |s: &&Served| {
            let r = s.info;
            r.group == group
                && (r.plural == name
                    || r.singular == name
                    || r.kind == name
                    || r.short_names.contains(&name))
        };
        match version {
            Some(v) if !v.is_empty() => self
                .served
                .iter()
                .filter(matches)
                .find(|s| s.info.version == v)
                .copied(),
            _ => self
                .served
                .iter()
                .filter(matches)
                .find(|s| s.storage)
                .copied(),
        }
    }
}

/// Keeps the [`Catalog`] in step with the Store. One per API server.
pub struct Custom {
    reader: store::Reader,
    current: RwLock<(u64, Arc<Catalog>)>,
    /// Leaked rows by CRD name and spec: an unchanged definition is served by the same rows.
    interned: Mutex<HashMap<(String, String), Vec<Served>>>,
}

impl Custom {
    /// A catalog reading CRDs from `reader`.
    pub fn new(reader: store::Reader) -> Self {
        Custom {
            reader,
            current: RwLock::new((u64::MAX, Arc::new(Catalog::default()))),
            interned: Mutex::new(HashMap::new()),
        }
    }

    /// A built-in or custom resource by group, version (None: any for a built-in kind, the
    /// storage version for a custom one) and plural, singular, kind or short name.
    pub fn resolve(
        &self,
        group: &str,
        version: Option<&str>,
        name: &str,
    ) -> Option<&'static ResourceInfo> {
        if let Some(r) = resource::lookup(group, name) {
            if version.is_none_or(|v| v.is_empty() || v == r.version) {
                return Some(r);
            }
        }
        self.catalog().lookup(group, name, version).map(|s| s.info)
    }

    /// A built-in or custom resource by group, version and plural, as a URL names it.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
        resource::RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .or_else(|| self.catalog().find(group, version, plural).map(|s| s.info))
    }

    /// Every served resource: the built-in kinds, then the custom ones.
    pub fn resources(&self) -> Vec<&'static ResourceInfo> {
        let catalog = self.catalog();
        resource::RESOURCES
            .iter()
            .chain(catalog.all().iter().map(|s| s.info))
            .collect()
    }

    /// The catalog as the Store holds it now.
    pub fn catalog(&self) -> Arc<Catalog> {
        let epoch = self.reader.epoch(CRD_PREFIX);
        {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if cur.0 == epoch {
                return cur.1.clone();
            }
        }
        let mut served = Vec::new();
        let mut terminating = Vec::new();
        for kv in self.reader.values(CRD_PREFIX) {
            let Ok(crd) = crate::api::codec::msgpack_to_value(&kv.value) else {
                continue;
            };
            let rows = self.intern(&crd);
            if crd.pointer("/metadata/deletionTimestamp").is_some() {
                terminating.extend(rows.iter().map(|s| s.info));
            }
            served.extend(rows);
        }
        let catalog = Arc::new(Catalog {
            served,
            terminating,
        });
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        *cur = (epoch, catalog.clone());
        catalog
    }

    /// Whether `info` is a custom resource whose CRD is being deleted: kube refuses new
    /// objects of it (405) while the old ones stay readable.
    pub fn terminating(&self, info: &ResourceInfo) -> bool {
        strategy::of(info).is_some()
            && self
                .catalog()
                .terminating
                .iter()
                .any(|r| std::ptr::eq(*r, info))
    }

    fn intern(&self, crd: &Value) -> Vec<Served> {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
        let key = (name, spec.to_string());
        let mut interned = self.interned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = interned.get(&key) {
            return s.clone();
        }
        let served = strategy::rows(&spec);
        for s in &served {
            strategy::remember(s.info, s.strategy);
        }
        interned.insert(key, served.clone());
        served
    }
}
