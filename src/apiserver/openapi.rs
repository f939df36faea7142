//! OpenAPI v3 publishing and server-side strict field validation.
//!
//! This module owns everything Skiff says about the *shape* of its API
//! objects: the `GET /openapi/v3` index, the per-group-version OpenAPI 3.0
//! documents behind it (paths with Kubernetes' vendor extensions, plus
//! `components.schemas`), and the unknown-field check behind
//! `?fieldValidation=Strict`. The schemas are not hand-written: they are
//! generated once from the `k8s-openapi` types through their `schemars`
//! implementations (OpenAPI 3.0 settings, definitions under
//! `#/components/schemas/`, Kubernetes' dotted names such as
//! `io.k8s.api.core.v1.Pod`), then completed with what Kubernetes adds on top:
//! `x-kubernetes-group-version-kind` on every top-level kind and the `…List`
//! kinds. `kubectl explain` finds a kind's schema through that extension (first
//! on an operation of the resource's path, then on a schema) and follows
//! `$ref`/`allOf`; `kubectl create/apply --validate=strict` hands validation to
//! the server when the PATCH operation of the kind declares the
//! `fieldValidation` query parameter. [`unknown_fields`] walks the very same
//! schemas, so what the documents promise and what the server enforces agree.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, policy, rbac,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// The kinds served: (group, version, kind, plural, namespaced). Passed in by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// API group; `""` for the core group.
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// Kind, e.g. `Pod`.
    pub kind: &'static str,
    /// Resource (URL path segment), e.g. `pods`.
    pub plural: &'static str,
    /// Whether objects live under `/namespaces/{namespace}/`.
    pub namespaced: bool,
    /// A custom resource's schema (its CRD's `openAPIV3Schema`); None for a built-in kind,
    /// whose schema comes from `k8s-openapi`.
    pub schema: Option<&'static Value>,
    /// Whether a custom resource has a `scale` subresource.
    pub scale: bool,
}

/// Where schemas live in a document, as used in every `$ref`.
const REF_PREFIX: &str = "#/components/schemas/";
/// The extension naming the group/version/kind of a schema or an operation.
const GVK_EXT: &str = "x-kubernetes-group-version-kind";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const CORE_EVENT: &str = "io.k8s.api.core.v1.Event";
/// Request content types advertised on PATCH. `application/strategic-merge-patch+json`
/// is deliberately left out: when it is listed, `kubectl apply` computes its strategic merge
/// patch from these schemas, whose patch extensions (`x-kubernetes-patch-merge-key`/
/// `-strategy`, added from `patch::Schema` for the served kinds' types) do not cover every
/// type k8s-openapi generates. Without it kubectl uses its compiled-in Go types, which know
/// every merge key, and still sends a strategic merge patch.
const PATCH_CONTENT_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];
/// Bound on `$ref`/`allOf` indirections followed while resolving one schema.
const MAX_INDIRECTIONS: usize = 64;
/// Bound on object nesting walked by [`unknown_fields`].
const MAX_DEPTH: usize = 128;

/// One kind Skiff knows a schema for.
struct KnownKind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    /// Whether the kind has a `/scale` subresource (`autoscaling/v1` `Scale`).
    scale: bool,
    /// Adds the kind's schema (and everything it references) to the generator
    /// and returns the `$ref` to it.
    schema: fn(&mut SchemaGenerator) -> Schema,
}

fn known<T: k8s_openapi::Resource + JsonSchema>(scale: bool) -> KnownKind {
    fn sub<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
        generator.subschema_for::<T>()
    }
    KnownKind {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        scale,
        schema: sub::<T>,
    }
}

/// Every kind a schema can be published for. Only those also passed in
/// [`Served`] appear in the documents.
fn known_kinds() -> Vec<KnownKind> {
    vec![
        known::<core::v1::Pod>(false),
        known::<core::v1::Node>(false),
        known::<core::v1::Namespace>(false),
        known::<core::v1::Event>(false),
        known::<events::v1::Event>(false),
        known::<core::v1::ConfigMap>(false),
        known::<core::v1::Secret>(false),
        known::<core::v1::Service>(false),
        known::<core::v1::ServiceAccount>(false),
        known::<core::v1::Endpoints>(false),
        known::<core::v1::PersistentVolume>(false),
        known::<core::v1::PersistentVolumeClaim>(false),
        known::<core::v1::ReplicationController>(true),
        known::<core::v1::ResourceQuota>(false),
        known::<core::v1::LimitRange>(false),
        known::<core::v1::PodTemplate>(false),
        known::<apps::v1::Deployment>(true),
        known::<apps::v1::ReplicaSet>(true),
        known::<apps::v1::StatefulSet>(true),
        known::<apps::v1::DaemonSet>(false),
        known::<apps::v1::ControllerRevision>(false),
        known::<coordination::v1::Lease>(false),
        known::<batch::v1::Job>(false),
        known::<batch::v1::CronJob>(false),
        known::<discovery::v1::EndpointSlice>(false),
        known::<policy::v1::PodDisruptionBudget>(false),
        known::<rbac::v1::Role>(false),
        known::<rbac::v1::RoleBinding>(false),
        known::<rbac::v1::ClusterRole>(false),
        known::<rbac::v1::ClusterRoleBinding>(false),
        known::<autoscaling::v1::HorizontalPodAutoscaler>(false),
        known::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(false),
    ]
}

/// The generated schemas, shared by every document and by [`unknown_fields`].
struct Catalog {
    /// All definitions, keyed by Kubernetes' dotted names.
    schemas: Map<String, Value>,
    /// (group, version, kind) → (schema name, list schema name, has scale).
    kinds: BTreeMap<(String, String, String), KindNames>,
}

#[derive(Clone)]
struct KindNames {
    schema: String,
    list: String,
    scale: bool,
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(build_catalog)
}

/// The definition name a `$ref` points at, if it points into `components.schemas`.
fn ref_name(reference: &str) -> Option<&str> {
    reference.strip_prefix(REF_PREFIX)
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "version": version, "kind": kind })
}

fn build_catalog() -> Catalog {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut named = Vec::new();
    for known in known_kinds() {
        let reference = (known.schema)(&mut generator);
        let name = reference
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(ref_name)
            .map(str::to_owned);
        if let Some(name) = name {
            named.push((known, name));
        }
    }
    let list_meta = generator.subschema_for::<meta::ListMeta>();
    // Shared by every group version: errors, delete bodies, patch bodies, scale.
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Patch>();
    generator.subschema_for::<autoscaling::v1::Scale>();
    let mut schemas = generator.take_definitions(true);
    // k8s-openapi declares `metadata` required wherever its Rust field is not
    // an `Option`; Kubernetes itself only requires it on core/v1 Event.
    for (name, schema) in schemas.iter_mut() {
        if name == CORE_EVENT {
            continue;
        }
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            required.retain(|field| field != "metadata");
        }
        if let Value::Object(map) = schema {
            if map.get("required") == Some(&json!([])) {
                map.remove("required");
            }
        }
    }

    // List semantics for server-side apply and strategic merge, from the same patch metadata
    // the server merges with.
    for (definition, schema) in super::patch::Schema::openapi_definitions() {
        let Some(props) = schemas
            .get_mut(*definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for (field, prop) in props.iter_mut() {
            if prop.get("type").and_then(Value::as_str) != Some("array") {
                continue;
            }
            if let Some(p) = prop.as_object_mut() {
                p.extend(schema.list_extensions(field));
            }
        }
    }

    let mut kinds = BTreeMap::new();
    for (known, name) in named {
        let list = format!("{name}List");
        let list_schema = list_schema(&known, &name, list_meta.as_value());
        schemas.insert(list.clone(), list_schema);
        if let Some(Value::Object(schema)) = schemas.get_mut(&name) {
            schema.insert(
                GVK_EXT.to_owned(),
                json!([gvk(known.group, known.version, known.kind)]),
            );
        }
        kinds.insert(
            (
                known.group.to_owned(),
                known.version.to_owned(),
                known.kind.to_owned(),
            ),
            KindNames {
                schema: name,
                list,
                scale: known.scale,
            },
        );
    }
    for (name, gvks) in [
        (STATUS, json!([gvk("", "v1", "Status")])),
        (SCALE, json!([gvk("autoscaling", "v1", "Scale")])),
    ] {
        if let Some(Value::Object(schema)) = schemas.get_mut(name) {
            schema.insert(GVK_EXT.to_owned(), gvks);
        }
    }
    Catalog { schemas, kinds }
}

/// The `<Kind>List` schema, shaped like Kubernetes' own list types.
fn list_schema(known: &KnownKind, item: &str, list_meta: &Value) -> Value {
    let kind = known.kind;
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": schema_ref(item),
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "allOf": [list_meta],
            },
        },
        GVK_EXT: [gvk(known.group, known.version, &format!("{kind}List"))],
    })
}

/// The document key of a group version: `api/v1` or `apis/<group>/<version>`.
fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: `{"paths": {"api/v1": {"serverRelativeURL":
/// "/openapi/v3/api/v1?hash=<HASH>"}, "apis/apps/v1": {...}, ...}}`, one entry
/// per group version in `served`. The hash is a hex hash of the document's
/// bytes, so it changes whenever the document does (kubectl caches by URL).
pub fn index(served: &[Served]) -> Value {
    let versions: BTreeSet<(&str, &str)> = served.iter().map(|s| (s.group, s.version)).collect();
    let mut paths = Map::new();
    for (group, version) in versions {
        let Some(doc) = document(served, group, version) else {
            continue;
        };
        let key = gv_key(group, version);
        let url = format!("/openapi/v3/{key}?hash={}", document_hash(&doc));
        paths.insert(key, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// A hex hash of the document's JSON bytes.
fn document_hash(doc: &Value) -> String {
    let mut hasher = DefaultHasher::new();
    doc.to_string().hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`: the OpenAPI
/// 3.0 document of one group version — operations for every served kind (each
/// with `x-kubernetes-group-version-kind`, `x-kubernetes-action`, `$ref`
/// request/response schemas and, on writes, `dryRun`, `fieldManager` and
/// `fieldValidation`) and `components.schemas` holding the kinds' schemas and
/// everything they reference. `None` for a group version not in `served`. The
/// result only depends on `served`, so the caller can build it once and cache it.
pub fn document(served: &[Served], group: &str, version: &str) -> Option<Value> {
    let in_gv: Vec<&Served> = served
        .iter()
        .filter(|s| s.group == group && s.version == version)
        .collect();
    if in_gv.is_empty() {
        return None;
    }
    let catalog = catalog();
    let mut paths = Map::new();
    let mut roots: BTreeSet<String> = [STATUS, DELETE_OPTIONS, PATCH]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut custom = Map::new();
    for s in in_gv {
        let key = (s.group.to_owned(), s.version.to_owned(), s.kind.to_owned());
        let custom_names;
        let names = match (catalog.kinds.get(&key), s.schema) {
            (Some(names), _) => names,
            (None, Some(schema)) => {
                custom_names = custom_schemas(s, schema, &mut custom);
                roots.insert(OBJECT_META.to_owned());
                roots.insert(LIST_META.to_owned());
                &custom_names
            }
            (None, None) => continue,
        };
        roots.insert(names.schema.clone());
        roots.insert(names.list.clone());
        if names.scale && s.namespaced {
            roots.insert(SCALE.to_owned());
        }
        add_paths(&mut paths, s, names);
    }

    let mut schemas = closure(&catalog.schemas, roots);
    schemas.extend(custom);
    // Like Kubernetes, DeleteOptions is registered in every group version.
    if let Some(Value::Object(delete_options)) = schemas.get_mut(DELETE_OPTIONS) {
        let versions: BTreeSet<(&str, &str)> =
            served.iter().map(|s| (s.group, s.version)).collect();
        let gvks: Vec<Value> = versions
            .into_iter()
            .map(|(g, v)| gvk(g, v, "DeleteOptions"))
            .collect();
        delete_options.insert(GVK_EXT.to_owned(), Value::Array(gvks));
    }

    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Skiff", "version": "unversioned" },
        "paths": paths,
        "components": { "schemas": schemas },
    }))
}

/// Adds a custom resource's schema and its list's to `out`, named as kube names them
/// (`com.example.v1.Widget` for group `example.com`), with `metadata` as ObjectMeta.
fn custom_schemas(s: &Served, schema: &Value, out: &mut Map<String, Value>) -> KindNames {
    let reversed: Vec<&str> = s.group.split('.').rev().collect();
    let name = format!("{}.{}.{}", reversed.join("."), s.version, s.kind);
    let mut schema = schema.clone();
    if let Some(m) = schema.as_object_mut() {
        let props = m
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut props = props;
        props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        props.insert("metadata".into(), json!({"allOf": [schema_ref(OBJECT_META)], "description": "Standard object's metadata."}));
        m.insert("properties".into(), Value::Object(props));
        m.insert(GVK_EXT.to_owned(), json!([gvk(s.group, s.version, s.kind)]));
    }
    let list = format!("{name}List");
    let list_kind = format!("{}List", s.kind);
    out.insert(name.clone(), schema);
    out.insert(
        list.clone(),
        json!({
            "description": format!("{list_kind} is a list of {}", s.kind),
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "items": {"type": "array", "items": schema_ref(&name)},
                "kind": {"type": "string"},
                "metadata": {"allOf": [schema_ref(LIST_META)]},
            },
            GVK_EXT: [gvk(s.group, s.version, &list_kind)],
        }),
    );
    KindNames {
        schema: name,
        list,
        scale: s.scale,
    }
}

/// The named schemas `roots` and every schema they reach through `$ref`s.
fn closure(all: &Map<String, Value>, roots: BTreeSet<String>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut pending: Vec<String> = roots.into_iter().collect();
    while let Some(name) = pending.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(schema) = all.get(&name) else {
            continue;
        };
        collect_refs(schema, &mut |r| {
            if let Some(target) = ref_name(r) {
                if !out.contains_key(target) {
                    pending.push(target.to_owned());
                }
            }
        });
        out.insert(name, schema.clone());
    }
    out
}

/// Calls `found` with every `$ref` string anywhere inside `value`.
fn collect_refs(value: &Value, found: &mut dyn FnMut(&str)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(r)) => found(r),
                    _ => collect_refs(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|child| collect_refs(child, found)),
        _ => {}
    }
}

/// `apps` → `Apps`, `v1` → `V1`: pieces of Kubernetes-style operation ids.
fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The short group name used in tags and operation ids (`core`, `apps`, `coordination`).
fn group_short(group: &str) -> &str {
    if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    }
}

fn query_param(name: &str, description: &str, kind: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": { "type": kind, "uniqueItems": true },
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn pretty_param() -> Value {
    query_param(
        "pretty",
        "If 'true', then the output is pretty printed.",
        "string",
    )
}

/// `dryRun`, `fieldManager` and `fieldValidation`: the parameters of every write.
fn write_params() -> Vec<Value> {
    vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
            "string",
        ),
        query_param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters.",
            "string",
        ),
        query_param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: unknown fields are silently dropped from the object. - Warn: unknown fields are dropped and a warning is returned for each of them. - Strict: the request fails with a BadRequest error if any unknown field is present.",
            "string",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        query_param("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type \"BOOKMARK\".", "boolean"),
        query_param("continue", "The continue option should be set when retrieving more results from the server. Its value is the continue token of the previous list response.", "string"),
        query_param("fieldSelector", "A selector to restrict the list of returned objects by their fields. Defaults to everything.", "string"),
        query_param("labelSelector", "A selector to restrict the list of returned objects by their labels. Defaults to everything.", "string"),
        query_param("limit", "limit is a maximum number of responses to return for a list call. If more items exist, the server sets the `continue` field on the list metadata.", "integer"),
        query_param("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from.", "string"),
        query_param("resourceVersionMatch", "resourceVersionMatch determines how resourceVersion is applied to list calls.", "string"),
        query_param("sendInitialEvents", "`sendInitialEvents=true` may be set together with `watch=true`; the watch stream then begins with synthetic events for the current state of all objects.", "boolean"),
        query_param("timeoutSeconds", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.", "integer"),
        query_param("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.", "boolean"),
    ]
}

fn json_content(name: &str) -> Value {
    json!({ "application/json": { "schema": schema_ref(name) } })
}

fn responses(codes: &[(&str, &str)], name: &str) -> Value {
    let mut out = Map::new();
    for (code, description) in codes {
        out.insert(
            (*code).to_owned(),
            json!({ "description": description, "content": json_content(name) }),
        );
    }
    out.insert("401".to_owned(), json!({ "description": "Unauthorized" }));
    Value::Object(out)
}

/// What one operation is about, for [`operation`].
struct Op<'a> {
    /// `x-kubernetes-action`: list, post, get, put, patch or delete.
    action: &'a str,
    id: String,
    description: String,
    gvk: Value,
    tag: &'a str,
    params: Vec<Value>,
    request: Option<Value>,
    responses: Value,
}

fn operation(op: Op<'_>) -> Value {
    let mut out = json!({
        "tags": [op.tag],
        "description": op.description,
        "operationId": op.id,
        "responses": op.responses,
        "x-kubernetes-action": op.action,
        GVK_EXT: op.gvk,
    });
    if let Value::Object(map) = &mut out {
        if !op.params.is_empty() {
            map.insert("parameters".to_owned(), Value::Array(op.params));
        }
        if let Some(request) = op.request {
            map.insert("requestBody".to_owned(), request);
        }
    }
    out
}

fn body(name: &str) -> Value {
    json!({ "content": { "*/*": { "schema": schema_ref(name) } }, "required": true })
}

fn patch_body() -> Value {
    let content: Map<String, Value> = PATCH_CONTENT_TYPES
        .iter()
        .map(|t| ((*t).to_owned(), json!({ "schema": schema_ref(PATCH) })))
        .collect();
    json!({ "content": content, "required": true })
}

/// Adds the collection, item (and `/scale`) paths of one served kind.
fn add_paths(paths: &mut Map<String, Value>, s: &Served, names: &KindNames) {
    let prefix = if s.group.is_empty() {
        format!("/api/{}", s.version)
    } else {
        format!("/apis/{}/{}", s.group, s.version)
    };
    let tag = format!("{}_{}", group_short(s.group), s.version);
    let id_gv = format!(
        "{}{}",
        upper_first(group_short(s.group)),
        upper_first(s.version)
    );
    let scope = if s.namespaced { "Namespaced" } else { "" };
    let kind = s.kind;
    let this_gvk = gvk(s.group, s.version, kind);
    let ns_param = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    );
    let name_param = path_param("name", &format!("name of the {kind}"));
    let (collection, mut collection_params) = if s.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", s.plural),
            vec![ns_param.clone()],
        )
    } else {
        (format!("{prefix}/{}", s.plural), Vec::new())
    };
    collection_params.push(pretty_param());
    let mut item_params = vec![name_param.clone()];
    if s.namespaced {
        item_params.push(ns_param.clone());
    }
    item_params.push(pretty_param());

    let op = |action: &'static str, verb: &str, suffix: &str, description: String| Op {
        action,
        id: format!("{verb}{id_gv}{scope}{kind}{suffix}"),
        description,
        gvk: this_gvk.clone(),
        tag: &tag,
        params: Vec::new(),
        request: None,
        responses: Value::Null,
    };

    let list = operation(Op {
        params: list_params(),
        responses: responses(&[("200", "OK")], &names.list),
        ..op(
            "list",
            "list",
            "",
            format!("list or watch objects of kind {kind}"),
        )
    });
    let create = operation(Op {
        params: write_params(),
        request: Some(body(&names.schema)),
        responses: responses(
            &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
            &names.schema,
        ),
        ..op("post", "create", "", format!("create a {kind}"))
    });
    paths.insert(
        collection.clone(),
        json!({ "get": list, "post": create, "parameters": collection_params }),
    );

    let item = format!("{collection}/{{name}}");
    let mut patch_params = write_params();
    patch_params.push(query_param(
        "force",
        "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
        "boolean",
    ));
    let get = operation(Op {
        responses: responses(&[("200", "OK")], &names.schema),
        ..op("get", "read", "", format!("read the specified {kind}"))
    });
    let put = operation(Op {
        params: write_params(),
        request: Some(body(&names.schema)),
        responses: responses(&[("200", "OK"), ("201", "Created")], &names.schema),
        ..op(
            "put",
            "replace",
            "",
            format!("replace the specified {kind}"),
        )
    });
    let patch = operation(Op {
        params: patch_params.clone(),
        request: Some(patch_body()),
        responses: responses(&[("200", "OK"), ("201", "Created")], &names.schema),
        ..op(
            "patch",
            "patch",
            "",
            format!("partially update the specified {kind}"),
        )
    });
    let delete = operation(Op {
        params: vec![
            query_param("dryRun", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed", "string"),
            query_param("gracePeriodSeconds", "The duration in seconds before the object should be deleted.", "integer"),
            query_param("propagationPolicy", "Whether and how garbage collection will be performed. Acceptable values are: 'Orphan', 'Background', 'Foreground'.", "string"),
        ],
        request: Some(json!({ "content": { "*/*": { "schema": schema_ref(DELETE_OPTIONS) } } })),
        responses: responses(&[("200", "OK"), ("202", "Accepted")], STATUS),
        ..op("delete", "delete", "", format!("delete a {kind}"))
    });
    paths.insert(
        item.clone(),
        json!({ "get": get, "put": put, "patch": patch, "delete": delete, "parameters": item_params }),
    );

    if s.namespaced {
        let all = operation(Op {
            id: format!("list{id_gv}{kind}ForAllNamespaces"),
            params: list_params(),
            responses: responses(&[("200", "OK")], &names.list),
            ..op(
                "list",
                "list",
                "",
                format!("list or watch objects of kind {kind}"),
            )
        });
        paths.insert(
            format!("{prefix}/{}", s.plural),
            json!({ "get": all, "parameters": [pretty_param()] }),
        );
    }

    if names.scale && s.namespaced {
        let scale_gvk = gvk("autoscaling", "v1", "Scale");
        let scale_op = |action: &'static str, verb: &str, description: String| Op {
            gvk: scale_gvk.clone(),
            ..op(action, verb, "Scale", description)
        };
        let get = operation(Op {
            responses: responses(&[("200", "OK")], SCALE),
            ..scale_op("get", "read", format!("read scale of the specified {kind}"))
        });
        let put = operation(Op {
            params: write_params(),
            request: Some(body(SCALE)),
            responses: responses(&[("200", "OK"), ("201", "Created")], SCALE),
            ..scale_op(
                "put",
                "replace",
                format!("replace scale of the specified {kind}"),
            )
        });
        let patch = operation(Op {
            params: patch_params,
            request: Some(patch_body()),
            responses: responses(&[("200", "OK"), ("201", "Created")], SCALE),
            ..scale_op(
                "patch",
                "patch",
                format!("partially update scale of the specified {kind}"),
            )
        });
        paths.insert(
            format!("{item}/scale"),
            json!({ "get": get, "put": put, "patch": patch, "parameters": item_params }),
        );
    }
}

/// Server-side strict field validation: the JSON paths (kubectl style, e.g.
/// `.spec.containers[0].imagee`, `.metadata.labelz`) of fields in `obj` that the
/// schema of `kind` in `api_version` does not declare, in document order. Empty
/// when all are known, and for a kind without a published schema. Maps
/// (`additionalProperties`) accept any key and check the values; free-form
/// values (IntOrString, Quantity, RawExtension, FieldsV1, preserve-unknown-fields)
/// are never reported.
pub fn unknown_fields(kind: &str, api_version: &str, obj: &Value) -> Vec<String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let catalog = catalog();
    let name = match catalog
        .kinds
        .get(&(group.to_owned(), version.to_owned(), kind.to_owned()))
    {
        Some(names) => names.schema.clone(),
        None => {
            let Some(names) = kind.strip_suffix("List").and_then(|item| {
                catalog
                    .kinds
                    .get(&(group.to_owned(), version.to_owned(), item.to_owned()))
            }) else {
                return Vec::new();
            };
            names.list.clone()
        }
    };
    let mut out = Vec::new();
    let mut path = String::new();
    let root = schema_ref(&name);
    walk(&catalog.schemas, &root, obj, &mut path, &mut out, 0);
    out
}

/// A schema with its `$ref`s and `allOf`s flattened, as far as field
/// validation cares.
#[derive(Default)]
struct Shape<'a> {
    properties: Vec<&'a Map<String, Value>>,
    additional: Option<&'a Value>,
    items: Option<&'a Value>,
    /// Anything goes (preserve-unknown-fields, int-or-string, `true`).
    free_form: bool,
}

fn flatten<'a>(
    defs: &'a Map<String, Value>,
    schema: &'a Value,
    shape: &mut Shape<'a>,
    budget: &mut usize,
) {
    if *budget == 0 {
        return;
    }
    *budget -= 1;
    let map = match schema {
        Value::Object(map) => map,
        Value::Bool(true) => {
            shape.free_form = true;
            return;
        }
        _ => return,
    };
    if let Some(target) = map.get("$ref").and_then(Value::as_str).and_then(ref_name) {
        if let Some(resolved) = defs.get(target) {
            flatten(defs, resolved, shape, budget);
        }
    }
    for flag in [
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
    ] {
        if map.get(flag) == Some(&Value::Bool(true)) {
            shape.free_form = true;
        }
    }
    if let Some(Value::Object(properties)) = map.get("properties") {
        shape.properties.push(properties);
    }
    if shape.additional.is_none() {
        shape.additional = map.get("additionalProperties");
    }
    if shape.items.is_none() {
        shape.items = map.get("items");
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(parts)) = map.get(combinator) {
            for part in parts {
                flatten(defs, part, shape, budget);
            }
        }
    }
}

fn walk(
    defs: &Map<String, Value>,
    schema: &Value,
    value: &Value,
    path: &mut String,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let mut shape = Shape::default();
    let mut budget = MAX_INDIRECTIONS;
    flatten(defs, schema, &mut shape, &mut budget);
    if shape.free_form {
        return;
    }
    match value {
        Value::Object(fields) => {
            let additional = match shape.additional {
                Some(Value::Bool(true)) => AdditionalFields::Any,
                Some(Value::Bool(false)) => AdditionalFields::None,
                Some(schema @ Value::Object(_)) => AdditionalFields::Schema(schema),
                // No properties and no additionalProperties: a free-form object.
                _ if shape.properties.is_empty() => return,
                _ => AdditionalFields::None,
            };
            for (key, child) in fields {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                let declared = shape.properties.iter().find_map(|props| props.get(key));
                match (declared, additional) {
                    (Some(child_schema), _) | (None, AdditionalFields::Schema(child_schema)) => {
                        walk(defs, child_schema, child, path, out, depth + 1);
                    }
                    (None, AdditionalFields::Any) => {}
                    (None, AdditionalFields::None) => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        Value::Array(elements) => {
            let Some(items) = shape.items else {
                return;
            };
            for (i, element) in elements.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(defs, items, element, path, out, depth + 1);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The Swagger 2.0 document kube-apiserver serves at `/openapi/v2`, made from the same
/// schemas and operations as the v3 documents: every served group version's paths in one
/// document, `definitions` for `components.schemas`, body parameters for request bodies,
/// `consumes`/`produces` for content types, and each response's schema in place.
pub fn swagger(served: &[Served]) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    let mut seen = BTreeSet::new();
    for s in served {
        if !seen.insert((s.group, s.version)) {
            continue;
        }
        let Some(doc) = document(served, s.group, s.version) else {
            continue;
        };
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            paths.insert(path.clone(), v2_path_item(item));
        }
        for (name, schema) in doc["components"]["schemas"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let mut schema = schema.clone();
            v2_schema(&mut schema);
            definitions.insert(name.clone(), schema);
        }
    }
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {
            "description": "Bearer Token authentication",
            "type": "apiKey",
            "name": "authorization",
            "in": "header"
        }},
        "security": [{"BearerToken": []}],
    });
    // Every reference moves from components to definitions.
    let text = serde_json::to_string(&doc)
        .unwrap_or_default()
        .replace("\"#/components/schemas/", "\"#/definitions/");
    serde_json::from_str(&text).unwrap_or(doc)
}

/// A v3 schema in v2 form, as kube publishes it: a reference with siblings is written
/// `{"$ref", "description", …}` (v3 wraps it in a one-element `allOf`, which Swagger 2.0
/// readers such as kube-openapi's proto model do not follow), and int-or-string is a string
/// of format `int-or-string` rather than v3's `anyOf`.
fn v2_schema(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(all)) = m.get("allOf") {
                if let [Value::Object(only)] = all.as_slice() {
                    if let (Some(r), 1) = (only.get("$ref").cloned(), only.len()) {
                        m.remove("allOf");
                        m.insert("$ref".into(), r);
                    }
                }
            }
            if m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
                m.remove("anyOf");
                m.insert("type".into(), json!("string"));
                m.insert("format".into(), json!("int-or-string"));
            }
            m.remove("nullable");
            for x in m.values_mut() {
                v2_schema(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(v2_schema),
        _ => {}
    }
}

/// One v3 path item in v2 form.
fn v2_path_item(item: &Value) -> Value {
    let mut out = Map::new();
    for (key, value) in item.as_object().into_iter().flatten() {
        match key.as_str() {
            "parameters" => {
                out.insert(key.clone(), v2_parameters(value));
            }
            "get" | "put" | "post" | "delete" | "patch" => {
                out.insert(key.clone(), v2_operation(value));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

/// v3 parameters (`schema` holding the type) as v2 ones (the type inline).
fn v2_parameters(params: &Value) -> Value {
    let converted = params.as_array().into_iter().flatten().map(|p| {
        let mut q = p.as_object().cloned().unwrap_or_default();
        if let Some(Value::Object(schema)) = q.remove("schema") {
            for (k, v) in schema {
                q.insert(k, v);
            }
        }
        Value::Object(q)
    });
    Value::Array(converted.collect())
}

/// One v3 operation in v2 form.
fn v2_operation(op: &Value) -> Value {
    let mut out = op.as_object().cloned().unwrap_or_default();
    let mut params = match out.remove("parameters") {
        Some(p) => v2_parameters(&p).as_array().cloned().unwrap_or_default(),
        None => Vec::new(),
    };
    if let Some(body) = out.remove("requestBody") {
        let content = body["content"].as_object().cloned().unwrap_or_default();
        let schema = content
            .values()
            .next()
            .map(|c| c["schema"].clone())
            .unwrap_or(json!({}));
        let consumes: Vec<&String> = content.keys().filter(|k| *k != "*/*").collect();
        if !consumes.is_empty() {
            out.insert("consumes".into(), json!(consumes));
        }
        params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
    }
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    if let Some(Value::Object(responses)) = out.remove("responses") {
        let converted: Map<String, Value> = responses
            .into_iter()
            .map(|(code, r)| {
                let mut v2 = json!({"description": r["description"].clone()});
                if let Some(schema) = r["content"]
                    .as_object()
                    .and_then(|c| c.values().next())
                    .map(|c| c["schema"].clone())
                {
                    v2["schema"] = schema;
                }
                (code, v2)
            })
            .collect();
        out.insert("responses".into(), Value::Object(converted));
    }
    out.insert(
        "produces".into(),
        json!([
            "application/json",
            "application/yaml",
            "application/vnd.kubernetes.protobuf"
        ]),
    );
    out.insert("schemes".into(), json!(["https"]));
    Value::Object(out)
}

/// What keys outside `properties` may hold.
#[derive(Clone, Copy)]
enum AdditionalFields<'a> {
    Any,
    None,
    Schema(&'a Value),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Vec<Served> {
        let s = |group, version, kind, plural, namespaced| Served {
            group,
            version,
            kind,
            plural,
            namespaced,
            schema: None,
            scale: false,
        };
        vec![
            s("", "v1", "Pod", "pods", true),
            s("", "v1", "Node", "nodes", false),
            s("", "v1", "Namespace", "namespaces", false),
            s("", "v1", "Event", "events", true),
            s("", "v1", "ConfigMap", "configmaps", true),
            s("", "v1", "Secret", "secrets", true),
            s("apps", "v1", "Deployment", "deployments", true),
            s("apps", "v1", "ReplicaSet", "replicasets", true),
            s("coordination.k8s.io", "v1", "Lease", "leases", true),
        ]
    }

    fn gvs() -> [(&'static str, &'static str); 3] {
        [("", "v1"), ("apps", "v1"), ("coordination.k8s.io", "v1")]
    }

    #[test]
    fn index_lists_group_versions_with_hashes() {
        let index = index(&served());
        let paths = index["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), 3);
        for key in ["api/v1", "apis/apps/v1", "apis/coordination.k8s.io/v1"] {
            let url = paths[key]["serverRelativeURL"].as_str().expect("url");
            let hash = url
                .strip_prefix(&format!("/openapi/v3/{key}?hash="))
                .expect("url shape");
            assert!(!hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()));
        }
        // The hash follows the document.
        let fewer: Vec<Served> = served()
            .into_iter()
            .filter(|s| s.kind != "Secret")
            .collect();
        assert_ne!(
            index["paths"]["api/v1"],
            super::index(&fewer)["paths"]["api/v1"]
        );
        assert_eq!(
            index["paths"]["apis/apps/v1"],
            super::index(&fewer)["paths"]["apis/apps/v1"]
        );
    }

    #[test]
    fn swagger_holds_every_group_version_in_v2_form() {
        let doc = swagger(&served());
        assert_eq!(doc["swagger"], "2.0");
        let text = serde_json::to_string(&doc).unwrap();
        assert!(
            !text.contains("#/components/schemas/"),
            "every $ref rewritten"
        );
        assert!(!text.contains("requestBody"));
        let create = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"];
        let body = create["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["in"] == "body")
            .expect("a body parameter");
        assert_eq!(
            body["schema"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.Deployment"
        );
        assert_eq!(
            create["responses"]["201"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.Deployment"
        );
        assert!(doc["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
        assert!(doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["get"].is_object());
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert!(patch["consumes"]
            .as_array()
            .unwrap()
            .contains(&json!("application/apply-patch+yaml")));
        let limit = doc["paths"]["/api/v1/pods"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .cloned()
            .expect("limit");
        assert_eq!(limit["type"], "integer");
        assert!(limit.get("schema").is_none());
    }

    #[test]
    fn list_fields_carry_kubes_list_and_patch_extensions() {
        let doc = document(&served(), "", "v1").expect("api/v1");
        let schemas = &doc["components"]["schemas"];
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let ports = &schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(
            ports["x-kubernetes-list-map-keys"],
            json!(["containerPort", "protocol"])
        );
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let args = &schemas["io.k8s.api.core.v1.Container"]["properties"]["args"];
        assert_eq!(args["x-kubernetes-list-type"], "atomic");
        assert!(args.get("x-kubernetes-patch-strategy").is_none());
        let finalizers =
            &schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["finalizers"];
        assert_eq!(finalizers["x-kubernetes-list-type"], "set");
        assert_eq!(finalizers["x-kubernetes-patch-strategy"], "merge");
    }

    #[test]
    fn core_document_has_pod_schemas() {
        let doc = document(&served(), "", "v1").expect("api/v1");
        assert_eq!(doc["openapi"], "3.0.0");
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["io.k8s.api.core.v1.Pod"][GVK_EXT],
            json!([{ "group": "", "version": "v1", "kind": "Pod" }])
        );
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodList"][GVK_EXT],
            json!([{ "group": "", "version": "v1", "kind": "PodList" }])
        );
        let image = &schemas["io.k8s.api.core.v1.Container"]["properties"]["image"];
        assert_eq!(image["type"], "string");
        assert!(image["description"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(schemas["io.k8s.api.core.v1.Container"]["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("name"))));
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        assert!(schemas
            .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
            .is_some());
        assert!(schemas.get(STATUS).is_some() && schemas.get(DELETE_OPTIONS).is_some());
        // Schemas of other group versions stay out.
        assert!(schemas.get("io.k8s.api.apps.v1.Deployment").is_none());
    }

    #[test]
    fn every_ref_resolves() {
        for (group, version) in gvs() {
            let doc = document(&served(), group, version).expect("document");
            let schemas = doc["components"]["schemas"].as_object().expect("schemas");
            let mut refs = Vec::new();
            collect_refs(&doc, &mut |r| refs.push(r.to_owned()));
            assert!(!refs.is_empty());
            for r in refs {
                let name = ref_name(&r).unwrap_or_else(|| panic!("foreign ref {r}"));
                assert!(
                    schemas.contains_key(name),
                    "{group}/{version}: dangling {r}"
                );
            }
        }
    }

    #[test]
    fn paths_carry_kubernetes_extensions() {
        let core = document(&served(), "", "v1").expect("api/v1");
        let pods = &core["paths"]["/api/v1/namespaces/{namespace}/pods"];
        assert_eq!(pods["get"]["x-kubernetes-action"], "list");
        assert_eq!(pods["post"]["x-kubernetes-action"], "post");
        assert_eq!(
            pods["post"][GVK_EXT],
            json!({ "group": "", "version": "v1", "kind": "Pod" })
        );
        assert!(core["paths"]["/api/v1/pods"]["get"].is_object());
        assert!(core["paths"]["/api/v1/nodes/{name}"]["patch"].is_object());
        assert!(core["paths"]["/api/v1/namespaces/{namespace}/nodes"].is_null());

        let apps = document(&served(), "apps", "v1").expect("apps/v1");
        let item = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        for (method, action) in [
            ("get", "get"),
            ("put", "put"),
            ("patch", "patch"),
            ("delete", "delete"),
        ] {
            assert_eq!(item[method]["x-kubernetes-action"], action);
            assert_eq!(
                item[method][GVK_EXT],
                json!({ "group": "apps", "version": "v1", "kind": "Deployment" })
            );
        }
        for method in ["put", "patch"] {
            let names: Vec<&str> = item[method]["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .filter_map(|p| p["name"].as_str())
                .collect();
            for wanted in ["dryRun", "fieldManager", "fieldValidation"] {
                assert!(names.contains(&wanted), "{method} lacks {wanted}");
            }
        }
        assert_eq!(
            item["put"]["requestBody"]["content"]["*/*"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.Deployment"
        );
        let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(scale["patch"][GVK_EXT]["kind"], "Scale");
        assert!(apps["components"]["schemas"].get(SCALE).is_some());
        assert!(document(&served(), "batch", "v1").is_none());
    }

    #[test]
    fn unknown_fields_reports_typos() {
        let deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "web" },
            "spec": {
                "replicaz": 3,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "web", "imagee": "nginx" }] }
                }
            }
        });
        assert_eq!(
            unknown_fields("Deployment", "apps/v1", &deployment),
            vec![
                ".spec.replicaz".to_owned(),
                ".spec.template.spec.containers[0].imagee".to_owned()
            ]
        );
        let pod =
            json!({ "metadata": { "name": "p", "labelz": {} }, "spec": { "containers": [] } });
        assert_eq!(
            unknown_fields("Pod", "v1", &pod),
            vec![".metadata.labelz".to_owned()]
        );
    }

    #[test]
    fn unknown_fields_accepts_valid_objects() {
        let deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "labels": { "app": "web", "tier/x": "y" },
                "annotations": { "example.com/anything": "{\"json\": true}" },
                "creationTimestamp": null,
                "managedFields": [{ "manager": "kubectl", "fieldsV1": { "f:spec": { "f:replicas": {} } } }]
            },
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": { "app": "web" } },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": 1 } },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": {
                        "containers": [{
                            "name": "web",
                            "image": "nginx:1.27",
                            "ports": [{ "containerPort": 80, "name": "http", "protocol": "TCP" }],
                            "env": [
                                { "name": "A", "value": "1" },
                                { "name": "B", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }
                            ],
                            "resources": { "limits": { "cpu": "1", "memory": "128Mi" }, "requests": { "cpu": 0.5 } },
                            "readinessProbe": { "httpGet": { "path": "/", "port": "http" } }
                        }],
                        "nodeSelector": { "disk": "ssd" }
                    }
                }
            },
            "status": { "replicas": 2, "conditions": [{ "type": "Available", "status": "True" }] }
        });
        assert!(unknown_fields("Deployment", "apps/v1", &deployment).is_empty());

        let config_map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "cfg" },
            "data": { "anything": "goes", "app.properties": "a=b", "replicaz": "3" },
            "binaryData": { "blob": "AAEC" }
        });
        assert!(unknown_fields("ConfigMap", "v1", &config_map).is_empty());

        let list = json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{ "metadata": { "nam": "x" } }] });
        assert_eq!(
            unknown_fields("PodList", "v1", &list),
            vec![".items[0].metadata.nam".to_owned()]
        );
    }

    #[test]
    fn unknown_fields_never_panics() {
        assert!(unknown_fields("Nope", "v9", &json!({ "x": 1 })).is_empty());
        assert!(unknown_fields("Pod", "", &json!(null)).is_empty());
        assert!(unknown_fields("Pod", "v1", &json!([1, "x", {}])).is_empty());
        assert_eq!(
            unknown_fields("Pod", "v1", &json!({ "spec": "not an object" })),
            Vec::<String>::new()
        );
        // Deep nesting through a free-form field and through an unknown one.
        let mut deep = json!({});
        for _ in 0..1000 {
            deep = json!({ "a": deep });
        }
        let obj = json!({ "metadata": { "managedFields": [{ "fieldsV1": deep.clone() }] }, "bogus": deep });
        assert_eq!(unknown_fields("Pod", "v1", &obj), vec![".bogus".to_owned()]);
    }
}
