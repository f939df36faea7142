//! Request and event envelopes on the bus. One `Request` shape serves every verb, so the HTTP
//! front can build the same thing from a URL and both reach the same ApiServer path.
//!
//! Replies carry their code in the `Skiff-Code` header and, as payload, the object (as stored:
//! MessagePack), a list, or a `Status`. Watch events go to the caller's inbox as
//! `{seq, type, object}`; `seq` counts from 1 per watch, so a gap is visible.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a request does. The verb is the last token of the request subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// Read one object.
    Get,
    /// Read many objects.
    List,
    /// Create one object.
    Create,
    /// Replace one object.
    Update,
    /// Patch one object.
    Patch,
    /// Delete one object.
    Delete,
    /// Delete every object a list's selectors match (`DELETE` on a collection).
    DeleteCollection,
    /// Stream changes to the caller's inbox.
    Watch,
}

impl Verb {
    /// The subject token.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Watch => "watch",
        }
    }

    /// Parses a subject token.
    pub fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "get" => Verb::Get,
            "list" => Verb::List,
            "create" => Verb::Create,
            "update" => Verb::Update,
            "patch" => Verb::Patch,
            "delete" => Verb::Delete,
            "deletecollection" => Verb::DeleteCollection,
            "watch" => Verb::Watch,
            _ => return None,
        })
    }
}

/// The patch formats the API server applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatchType {
    /// RFC 7386 (`application/merge-patch+json`).
    Merge,
    /// RFC 6902 (`application/json-patch+json`).
    Json,
    /// Kubernetes strategic merge (`application/strategic-merge-patch+json`).
    Strategic,
    /// Server-side apply (`application/apply-patch+yaml`): the body is the manager's whole
    /// intent for the fields it owns.
    Apply,
}

/// List and watch options (`metav1.ListOptions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListOptions {
    /// `labelSelector` query syntax.
    pub label_selector: Option<String>,
    /// `fieldSelector` query syntax.
    pub field_selector: Option<String>,
    /// Page size (0: as many as fit in one message).
    pub limit: u64,
    /// Continue token from the previous page.
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    /// For list: serve at this revision; for watch: start after it ("" or "0": now, with the
    /// current objects first as ADDED).
    pub resource_version: Option<String>,
    /// A watch ends after this many seconds.
    pub timeout_seconds: Option<u64>,
    /// Send BOOKMARK events (NATS watches always get them as heartbeats).
    pub allow_watch_bookmarks: bool,
    /// How `resource_version` applies to a list: `NotOlderThan` (the default for a revision
    /// given without it) or `Exact`; on a watch only with `send_initial_events`.
    pub resource_version_match: Option<String>,
    /// Watch list: true starts the watch with the current objects as ADDED and ends them with
    /// a BOOKMARK annotated `k8s.io/initial-events-end`; false starts without them.
    pub send_initial_events: Option<bool>,
}

/// kube-apiserver's checks of list and watch options (`ValidateListOptions`), as the causes
/// of a 422 for `ListOptions.meta.k8s.io`.
pub fn list_options_causes(o: &ListOptions, watch: bool) -> Vec<crate::api::status::StatusCause> {
    use crate::api::status::StatusCause;
    let forbidden = |field: &str, why: &str| StatusCause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {why}"),
        field: field.into(),
    };
    let mut causes = Vec::new();
    let rv = o.resource_version.as_deref().unwrap_or("");
    let match_ = o.resource_version_match.as_deref().unwrap_or("");
    let continues = o.continue_token.as_deref().is_some_and(|c| !c.is_empty());
    if watch {
        if o.send_initial_events.is_some() && match_ != "NotOlderThan" {
            causes.push(forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !match_.is_empty() {
            if o.send_initial_events.is_none() {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if match_ != "NotOlderThan" {
                causes.push(unsupported(
                    "resourceVersionMatch",
                    &format!("{match_:?}"),
                    &["NotOlderThan"],
                ));
            }
            if continues {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
        return causes;
    }
    if !match_.is_empty() {
        if rv.is_empty() {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if continues {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if match_ != "Exact" && match_ != "NotOlderThan" {
            causes.push(unsupported(
                "resourceVersionMatch",
                &format!("{match_:?}"),
                &["Exact", "NotOlderThan", ""],
            ));
        }
        if match_ == "Exact" && rv == "0" {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    if o.send_initial_events.is_some() {
        causes.push(forbidden(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for list",
        ));
    }
    causes
}

/// Preconditions of a delete.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Preconditions {
    /// Delete only the object with this uid.
    pub uid: Option<String>,
    /// Delete only at this resourceVersion.
    pub resource_version: Option<String>,
}

/// `metav1.DeleteOptions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeleteOptions {
    /// Seconds the object may take to terminate (pods); 0 deletes at once.
    pub grace_period_seconds: Option<i64>,
    /// Background, Foreground or Orphan.
    pub propagation_policy: Option<String>,
    /// Only delete if these still hold.
    pub preconditions: Option<Preconditions>,
    /// Legacy: false means Orphan.
    pub orphan_dependents: Option<bool>,
    /// `["All"]`: check everything, delete nothing (what `kubectl delete --dry-run=server`
    /// sends, in the body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Vec<String>>,
}

impl DeleteOptions {
    /// Checks the options as kube-apiserver does (422 `DeleteOptions.meta.k8s.io "" is
    /// invalid` naming the field) and says whether they ask for a dry run.
    pub fn validate(&self) -> Result<bool, crate::api::Status> {
        let mut causes = Vec::new();
        if let Some(p) = &self.propagation_policy {
            // In kube-apiserver's order: both set, then an unknown policy.
            if self.orphan_dependents.is_some() {
                causes.push(crate::api::status::StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {p:?}: orphanDependents and deletionPropagation cannot \
                         be both set"
                    ),
                    field: "propagationPolicy".into(),
                });
            }
            if !matches!(p.as_str(), "Foreground" | "Background" | "Orphan") {
                causes.push(unsupported(
                    "propagationPolicy",
                    &format!("{p:?}"),
                    &["Foreground", "Background", "Orphan", "nil"],
                ));
            }
        }
        let dry = dry_run_values(self.dry_run.as_deref().unwrap_or_default(), &mut causes);
        if causes.is_empty() {
            Ok(dry)
        } else {
            Err(crate::api::Status::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                causes,
            ))
        }
    }
}

/// Whether `dryRun` values ask for a dry run: none is no, "All" (each of them) is yes;
/// anything else adds one cause naming the whole list, as kube-apiserver's
/// `Unsupported value: []string{"Foo"}: supported values: "All"`.
pub fn dry_run_values(
    values: &[String],
    causes: &mut Vec<crate::api::status::StatusCause>,
) -> bool {
    if values.iter().any(|v| v != "All") {
        let list = values
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        causes.push(unsupported(
            "dryRun",
            &format!("[]string{{{list}}}"),
            &["All"],
        ));
    }
    !values.is_empty()
}

/// A `FieldValueNotSupported` cause; `value` is written as Go's `%#v` would print it.
fn unsupported(field: &str, value: &str, supported: &[&str]) -> crate::api::status::StatusCause {
    let list = supported
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    crate::api::status::StatusCause {
        reason: "FieldValueNotSupported".into(),
        message: format!("Unsupported value: {value}: supported values: {list}"),
        field: field.into(),
    }
}

#[cfg(test)]
mod delete_options_tests {
    use super::*;

    fn message(o: &DeleteOptions) -> String {
        o.validate().unwrap_err().message
    }

    #[test]
    fn invalid_options_read_as_kube_apiserver_writes_them() {
        let both = DeleteOptions {
            propagation_policy: Some("Foreground".into()),
            orphan_dependents: Some(true),
            ..Default::default()
        };
        assert_eq!(
            message(&both),
            r#"DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Invalid value: "Foreground": orphanDependents and deletionPropagation cannot be both set"#
        );
        let sideways = DeleteOptions {
            propagation_policy: Some("Sideways".into()),
            ..Default::default()
        };
        assert_eq!(
            message(&sideways),
            r#"DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "Sideways": supported values: "Foreground", "Background", "Orphan", "nil""#
        );
        let foo = DeleteOptions {
            dry_run: Some(vec!["All".into(), "Foo".into()]),
            ..Default::default()
        };
        assert_eq!(
            message(&foo),
            r#"DeleteOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: []string{"All", "Foo"}: supported values: "All""#
        );
        let dry = DeleteOptions {
            dry_run: Some(vec!["All".into()]),
            ..Default::default()
        };
        assert!(dry.validate().unwrap());
        assert!(!DeleteOptions::default().validate().unwrap());
    }
}

/// One request on the bus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Request {
    /// API group ("" for core).
    pub group: String,
    /// Resource plural, e.g. `pods`.
    pub resource: String,
    /// API version, when the caller names one (a custom resource may serve several; the
    /// storage version when None).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Namespace, for namespaced resources (None or "" lists across all namespaces).
    pub namespace: Option<String>,
    /// Object name, for single-object verbs.
    pub name: Option<String>,
    /// `status`, `scale`, `binding`.
    pub subresource: Option<String>,
    /// The object (create, update) or the patch document (patch).
    pub body: Option<Value>,
    /// Format of `body` for patch.
    pub patch_type: Option<PatchType>,
    /// List and watch options.
    pub list: ListOptions,
    /// Delete options.
    pub delete: Option<DeleteOptions>,
    /// Watch: the subject events are published to.
    pub inbox: Option<String>,
    /// `fieldValidation`: Strict, Warn or Ignore.
    pub field_validation: Option<String>,
    /// `dryRun=All`: validate, then answer without storing.
    pub dry_run: bool,
    /// Logs: the container.
    pub container: Option<String>,
    /// Logs: only the last N lines.
    pub tail_lines: Option<i64>,
    /// Logs: keep streaming.
    pub follow: bool,
    /// Logs: the previous instance's (`--previous`).
    pub previous: bool,
    /// Logs: at most this many bytes (`--limit-bytes`).
    pub limit_bytes: Option<i64>,
    /// Logs: `sinceSeconds` (validated; see `Registry::log`).
    pub since_seconds: Option<i64>,
    /// Logs: `sinceTime` (validated; see `Registry::log`).
    pub since_time: Option<String>,
    /// Logs: prefix each line with its time (`--timestamps`).
    pub timestamps: bool,
    /// `fieldManager`: who owns the fields this write sets (required for apply).
    pub field_manager: Option<String>,
    /// `force`: an apply takes over fields other managers own instead of conflicting.
    pub force: Option<bool>,
    /// The field manager a write without `fieldManager` is recorded under: the HTTP client's
    /// User-Agent product, or the bus caller's name. Set by the API server, never sent.
    #[serde(skip)]
    pub client: String,
    /// What the API server checks on the object a write would store, knowing who writes it
    /// (RBAC escalation, NodeRestriction). Set by the API server, never sent.
    #[serde(skip)]
    pub guard: Option<WriteGuard>,
}

/// A check of the final object of a write (`new`, and `old` for an update) that only the API
/// server, knowing the caller, can make.
#[derive(Clone)]
pub struct WriteGuard(pub std::sync::Arc<GuardFn>);

/// What a [`WriteGuard`] runs: (resource, new object, old object for an update).
pub type GuardFn = dyn Fn(
        &crate::api::resource::ResourceInfo,
        &Value,
        Option<&Value>,
    ) -> Result<(), crate::api::Status>
    + Send
    + Sync;

impl WriteGuard {
    /// Runs the check.
    pub fn check(
        &self,
        info: &crate::api::resource::ResourceInfo,
        new: &Value,
        old: Option<&Value>,
    ) -> Result<(), crate::api::Status> {
        (self.0)(info, new, old)
    }
}

impl std::fmt::Debug for WriteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteGuard")
    }
}

/// Guards are not part of what a request says: two requests differing only in theirs are
/// the same request.
impl PartialEq for WriteGuard {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What the API server asks a kubelet for `kubectl logs` (on `skiff.node.<node>.log`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LogRequest {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The pod's uid (a re-created pod of the same name is another pod).
    pub uid: String,
    /// The container ("" when the pod has one).
    pub container: String,
    /// Keep streaming new output to `inbox` until the container ends.
    pub follow: bool,
    /// Where followed output goes (chunks, then an empty message with `Skiff-End`).
    pub inbox: Option<String>,
    /// Only the last N lines.
    pub tail_lines: Option<i64>,
    /// The previous instance's log.
    pub previous: bool,
    /// Prefix lines with timestamps.
    pub timestamps: bool,
}

/// The answer to a watch request: where the stream will arrive from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WatchStarted {
    /// The watch's id, for cancelling it.
    pub id: u64,
    /// The revision the stream starts after.
    pub resource_version: String,
}

/// Watch event types, as Kubernetes names them.
pub mod event_type {
    pub const ADDED: &str = "ADDED";
    pub const MODIFIED: &str = "MODIFIED";
    pub const DELETED: &str = "DELETED";
    pub const BOOKMARK: &str = "BOOKMARK";
    pub const ERROR: &str = "ERROR";
}

/// One event of a watch stream, as a client decodes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Position in this watch's stream, from 1; a jump means an event was lost.
    #[serde(default)]
    pub seq: u64,
    /// ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The object; a Status for ERROR; kind, apiVersion and resourceVersion for BOOKMARK.
    pub object: Value,
    /// The `traceparent` of the write that produced this event, so the work it causes joins
    /// that write's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}
