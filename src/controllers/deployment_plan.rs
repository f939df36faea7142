//! The pure decision logic of the Deployment controller: given an apps/v1 Deployment, the
//! ReplicaSets it owns (with their status) and the current time, [`plan`] says what to do next
//! — create the ReplicaSet for the current template, scale ReplicaSets, delete ReplicaSets
//! beyond `revisionHistoryLimit`, replace the Deployment's status — following the semantics of
//! Kubernetes' `pkg/controller/deployment` (sync.go, rolling.go, recreate.go, progress.go and
//! util/deployment_util.go). Everything works on `serde_json::Value`, does no I/O and never
//! panics on malformed input: missing or mistyped fields take their apps/v1 defaults.
//!
//! One call plans what Kubernetes would do over several back-to-back syncs in which no
//! ReplicaSet status changes (each sync sees the ReplicaSets as the previous one left them), so
//! a caller that carries out the actions in order and calls [`plan`] again whenever a
//! ReplicaSet's status (or the Deployment) changes drives a rollout to completion. Availability
//! is read from ReplicaSet `status.availableReplicas`; pods are never looked at. Differences
//! from Kubernetes, all deliberate: `unavailableReplicas` is `max(spec.replicas - available, 0)`;
//! the Deployment's own `deployment.kubernetes.io/revision` annotation is not planned here
//! (the controller writes [`current_revision`] after the plan's actions); `minReadySeconds` is copied only when the ReplicaSet is created; a
//! hash collision bumps `status.collisionCount` and creates the ReplicaSet in the same plan; a
//! stale `desired-replicas` annotation on a ReplicaSet that already has the right size is
//! refreshed (Kubernetes would keep treating every sync as a scaling event).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// ReplicaSet annotation: the rollout revision the ReplicaSet belongs to.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// ReplicaSet annotation: earlier revisions of a ReplicaSet that was rolled back to.
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// ReplicaSet annotation: the Deployment's `spec.replicas` when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// ReplicaSet annotation: `spec.replicas + maxSurge` when the ReplicaSet was last scaled.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells the ReplicaSets (and pods) of different templates apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Progressing reason once the progress deadline has passed without progress.
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
/// Progressing reason once the new ReplicaSet is fully available.
pub const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";

const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO_ANNOTATION: &str = "deprecated.deployment.rollback.to";

const AVAILABLE: &str = "Available";
const PROGRESSING: &str = "Progressing";
const REPLICA_FAILURE: &str = "ReplicaFailure";
const MIN_AVAILABLE_REASON: &str = "MinimumReplicasAvailable";
const MIN_UNAVAILABLE_REASON: &str = "MinimumReplicasUnavailable";
const NEW_RS_CREATED_REASON: &str = "NewReplicaSetCreated";
const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
const RS_UPDATED_REASON: &str = "ReplicaSetUpdated";
const PAUSED_REASON: &str = "DeploymentPaused";
const RESUMED_REASON: &str = "DeploymentResumed";

/// Counts are int32 in the API; clamping to that range keeps all arithmetic overflow-free.
const MAX_COUNT: i64 = i32::MAX as i64;
const DEFAULT_PROGRESS_DEADLINE: i64 = 600;
const DEFAULT_REVISION_HISTORY_LIMIT: i64 = 10;
const DEFAULT_SURGE_PERCENT: i64 = 25;
/// Upper bound on simulated syncs per plan (a rollout step needs at most three or four).
const MAX_PASSES: usize = 16;

/// What the controller should do next for one Deployment, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this ReplicaSet (full JSON object: name `<deployment>-<hash>`, namespace, labels = template labels + `pod-template-hash`, annotations `deployment.kubernetes.io/revision`, `deployment.kubernetes.io/desired-replicas`, `deployment.kubernetes.io/max-replicas`, ownerReferences to the Deployment (controller: true, blockOwnerDeletion: true, apiVersion apps/v1, kind Deployment, name, uid), spec.replicas, spec.selector = deployment selector + matchLabels pod-template-hash, spec.template = deployment template with the pod-template-hash label added).
    CreateReplicaSet(Value),
    /// Set spec.replicas of the named ReplicaSet (and its revision annotations when given).
    /// `annotations` holds only values that change; `replicas` may equal the current size when
    /// only annotations change.
    Scale {
        /// The ReplicaSet's name.
        name: String,
        /// The new `spec.replicas`.
        replicas: i64,
        /// Annotations to set (merge), e.g. revision, desired-replicas, max-replicas.
        annotations: Vec<(String, String)>,
    },
    /// Delete an old ReplicaSet beyond revisionHistoryLimit (only ones at 0 replicas, oldest first).
    DeleteReplicaSet {
        /// The ReplicaSet's name.
        name: String,
    },
    /// Replace the Deployment's status with this (observedGeneration, replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas, conditions Available and Progressing with reasons MinimumReplicasAvailable / MinimumReplicasUnavailable, NewReplicaSetCreated / FoundNewReplicaSet / ReplicaSetUpdated / NewReplicaSetAvailable, and ProgressDeadlineExceeded when progressDeadlineSeconds passed without progress — the caller passes `now_unix` and each condition keeps lastUpdateTime/lastTransitionTime semantics).
    UpdateStatus(Value),
}

/// The pod-template-hash of a Deployment's template (+ collisionCount), as a short lowercase
/// alphanumeric string.
///
/// Kubernetes hashes the Go-printed template with FNV-1a 32; here FNV-1a 32 runs over the
/// canonical JSON of the template instead (object keys sorted, `null` values and empty
/// objects/arrays dropped, any `pod-template-hash` label ignored), followed — when
/// `collision_count` is not 0 — by the count as 4 little-endian bytes padded to 8, as
/// Kubernetes does. The decimal form of the hash is then mapped character by character onto
/// `bcdfghjklmnpqrstvwxz2456789` (Kubernetes' `SafeEncodeString`), giving at most 10
/// characters. Templates equal as JSON hash equally whatever their key order.
pub fn template_hash(template: &Value, collision_count: i64) -> String {
    let mut canonical = String::new();
    write_canonical(&normalize(&strip_hash_label(template)), &mut canonical);
    let mut hash = fnv1a(FNV_OFFSET, canonical.as_bytes());
    if collision_count != 0 {
        let mut bytes = [0u8; 8];
        // Truncation to 32 bits matches Kubernetes' uint32 collision count.
        bytes[..4].copy_from_slice(&(collision_count as u32).to_le_bytes());
        hash = fnv1a(hash, &bytes);
    }
    safe_encode(&hash.to_string())
}

/// Plans one reconciliation. `replica_sets` are the ReplicaSets the Deployment owns (controller ownerReference uid == deployment uid), with their status (status.replicas, readyReplicas, availableReplicas). `now_unix` is the current time in seconds.
///
/// ReplicaSets whose controller ownerReference names another uid are ignored. A Deployment
/// without a name plans nothing; one with an empty selector or no template only gets its
/// `observedGeneration` bumped; one being deleted only gets its status refreshed. A paused
/// Deployment gets status updates, revision-history cleanup and — as in Kubernetes — replica
/// count changes (`kubectl scale`), but no rollout step. During a rollout a change of
/// `spec.replicas` is spread proportionally over the active ReplicaSets like Kubernetes does.
pub fn plan(deployment: &Value, replica_sets: &[Value], now_unix: i64) -> Vec<Action> {
    let Some(d) = Deploy::parse(deployment) else {
        return Vec::new();
    };
    let original = Status::parse(deployment.get("status"));
    if !d.valid {
        if original.observed_generation < d.generation {
            let mut status = original;
            status.observed_generation = d.generation;
            return vec![Action::UpdateStatus(status.to_value())];
        }
        return Vec::new();
    }
    let rss = replica_sets
        .iter()
        .filter(|rs| !controlled_by_other(rs, d.uid.as_deref()))
        .filter_map(|rs| Rs::parse(rs, &d.template_norm))
        .collect();
    let mut planner = Planner {
        d,
        rss,
        status: original.clone(),
        actions: Vec::new(),
        mutations: 0,
        now: now_unix,
        last_scale_base: None,
    };
    if planner.d.deleting {
        planner.status = planner.calculate_status();
    } else {
        for _ in 0..MAX_PASSES {
            let before = planner.mutations;
            planner.pass();
            if planner.mutations == before {
                break;
            }
        }
    }
    let mut actions = planner.actions;
    if planner.status != original {
        actions.push(Action::UpdateStatus(planner.status.to_value()));
    }
    actions
}

/// The rollout-undo helper: the template of the ReplicaSet with revision `to` (or the previous revision when `to` is 0), with pod-template-hash removed — what `kubectl rollout undo` writes back into the Deployment.
///
/// "Previous" is the highest revision below `current_revision`; when `current_revision` is not
/// positive it is the second-highest revision present (as kubectl does). `None` when no such
/// ReplicaSet (or template) exists or `to` is negative.
pub fn rollback_template(replica_sets: &[Value], current_revision: i64, to: i64) -> Option<Value> {
    if to < 0 {
        return None;
    }
    let revisions: Vec<(i64, &Value)> = replica_sets
        .iter()
        .filter_map(|rs| {
            let annotations = annotations_of(rs.get("metadata"));
            let revision = annotations.get(REVISION_ANNOTATION)?.trim().parse().ok()?;
            Some((revision, rs))
        })
        .collect();
    let target = if to > 0 {
        revisions.iter().find(|(r, _)| *r == to)
    } else if current_revision > 0 {
        revisions
            .iter()
            .filter(|(r, _)| *r < current_revision)
            .max_by_key(|(r, _)| *r)
    } else {
        let latest = revisions.iter().map(|(r, _)| *r).max()?;
        revisions
            .iter()
            .filter(|(r, _)| *r < latest)
            .max_by_key(|(r, _)| *r)
    }?;
    let template = get(target.1, &["spec", "template"])?;
    if !template.is_object() {
        return None;
    }
    let mut template = strip_hash_label(template);
    let empty_labels = get(&template, &["metadata", "labels"])
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty);
    if empty_labels {
        if let Some(metadata) = template.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("labels");
        }
    }
    Some(template)
}

/// The revision of the Deployment's current ("new") ReplicaSet — what Kubernetes keeps in the
/// Deployment's `deployment.kubernetes.io/revision` annotation and what [`rollback_template`]
/// takes as `current_revision`. 0 when no owned ReplicaSet matches the template.
pub fn current_revision(deployment: &Value, replica_sets: &[Value]) -> i64 {
    let Some(d) = Deploy::parse(deployment) else {
        return 0;
    };
    let mut matching: Vec<Rs> = replica_sets
        .iter()
        .filter(|rs| !controlled_by_other(rs, d.uid.as_deref()))
        .filter_map(|rs| Rs::parse(rs, &d.template_norm))
        .filter(|rs| rs.matches)
        .collect();
    matching.sort_by(cmp_creation);
    matching.first().and_then(|rs| rs.revision).unwrap_or(0)
}

/// When (unix seconds) [`plan`] must run again for this Deployment to notice that its
/// progress deadline passed, given its stored status; `None` when no deadline is pending
/// (no deadline, paused, rollout complete or already timed out). Kubernetes requeues the
/// Deployment for this moment.
pub fn progress_deadline_at(deployment: &Value) -> Option<i64> {
    let d = Deploy::parse(deployment)?;
    let deadline = d.progress_deadline?;
    if d.paused {
        return None;
    }
    let status = Status::parse(deployment.get("status"));
    let cond = status.cond(PROGRESSING)?;
    if cond.reason == TIMED_OUT_REASON
        || cond.reason == NEW_RS_AVAILABLE_REASON
        || deployment_complete(&d, &status)
    {
        return None;
    }
    parse_rfc3339(&cond.last_update).map(|t| t.saturating_add(deadline).saturating_add(1))
}

// ---------------------------------------------------------------------------------------------
// Parsed inputs
// ---------------------------------------------------------------------------------------------

/// The parts of a Deployment the controller reads, with apps/v1 defaults applied.
struct Deploy {
    name: String,
    namespace: Option<String>,
    uid: Option<String>,
    generation: i64,
    replicas: i64,
    recreate: bool,
    /// maxSurge resolved against `replicas` (rolling update fenceposts).
    surge: i64,
    /// maxUnavailable resolved against `replicas` (rolling update fenceposts).
    unavailable: i64,
    history_limit: i64,
    /// `None` when progressDeadlineSeconds is MaxInt32 (no deadline).
    progress_deadline: Option<i64>,
    paused: bool,
    deleting: bool,
    min_ready_seconds: Option<i64>,
    selector: Map<String, Value>,
    template: Value,
    template_norm: Value,
    annotations: BTreeMap<String, String>,
    valid: bool,
}

impl Deploy {
    fn parse(v: &Value) -> Option<Deploy> {
        let meta = v.get("metadata");
        let name = str_of(meta.and_then(|m| m.get("name")))?.to_string();
        if name.is_empty() {
            return None;
        }
        let spec = v.get("spec");
        let field = |k: &str| spec.and_then(|s| s.get(k));
        let replicas = count_of(field("replicas"), 1);
        let strategy = field("strategy");
        let recreate = str_of(strategy.and_then(|s| s.get("type"))) == Some("Recreate");
        let rolling = strategy.and_then(|s| s.get("rollingUpdate"));
        let surge = scaled_value(rolling.and_then(|r| r.get("maxSurge")), replicas, true);
        let mut unavailable = scaled_value(
            rolling.and_then(|r| r.get("maxUnavailable")),
            replicas,
            false,
        );
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        let progress_deadline = match int_of(field("progressDeadlineSeconds")) {
            None => Some(DEFAULT_PROGRESS_DEADLINE),
            Some(x) if x == MAX_COUNT => None,
            Some(x) => Some(x.clamp(0, MAX_COUNT)),
        };
        let selector = field("selector")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let template = field("template").cloned().unwrap_or(Value::Null);
        let selector_empty = normalize(&Value::Object(selector.clone()))
            .as_object()
            .is_none_or(Map::is_empty);
        let valid = !selector_empty && template.is_object();
        Some(Deploy {
            namespace: str_of(meta.and_then(|m| m.get("namespace"))).map(String::from),
            uid: str_of(meta.and_then(|m| m.get("uid"))).map(String::from),
            generation: int_of(meta.and_then(|m| m.get("generation")))
                .unwrap_or(0)
                .max(0),
            replicas,
            recreate,
            surge,
            unavailable,
            history_limit: count_of(
                field("revisionHistoryLimit"),
                DEFAULT_REVISION_HISTORY_LIMIT,
            ),
            progress_deadline,
            paused: field("paused").and_then(Value::as_bool).unwrap_or(false),
            deleting: meta
                .and_then(|m| m.get("deletionTimestamp"))
                .is_some_and(|t| !t.is_null()),
            min_ready_seconds: int_of(field("minReadySeconds")).map(|x| x.clamp(0, MAX_COUNT)),
            template_norm: normalize(&strip_hash_label(&template)),
            selector,
            template,
            annotations: annotations_of(meta),
            valid,
            name,
        })
    }

    /// Kubernetes' `MaxSurge`: 0 unless rolling update.
    fn max_surge(&self) -> i64 {
        if self.recreate {
            0
        } else {
            self.surge
        }
    }

    /// Kubernetes' `MaxUnavailable`: 0 unless rolling update with replicas, at most replicas.
    fn max_unavailable(&self) -> i64 {
        if self.recreate || self.replicas == 0 {
            0
        } else {
            self.unavailable.min(self.replicas)
        }
    }
}

/// The parts of a ReplicaSet the controller reads.
struct Rs {
    name: String,
    /// creationTimestamp in unix seconds (0 when missing, `i64::MAX` for one planned here).
    created: i64,
    revision: Option<i64>,
    annotations: BTreeMap<String, String>,
    spec: i64,
    status_replicas: i64,
    ready: i64,
    available: i64,
    generation: i64,
    observed_generation: i64,
    deleting: bool,
    /// Its template equals the Deployment's, ignoring the pod-template-hash label.
    matches: bool,
    /// ReplicaFailure conditions from its status, as Deployment conditions.
    failures: Vec<Cond>,
}

impl Rs {
    fn parse(v: &Value, deployment_template: &Value) -> Option<Rs> {
        let meta = v.get("metadata");
        let name = str_of(meta.and_then(|m| m.get("name")))?.to_string();
        if name.is_empty() {
            return None;
        }
        let status = v.get("status");
        let stat = |k: &str| count_of(status.and_then(|s| s.get(k)), 0);
        let annotations = annotations_of(meta);
        let failures = status
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .map(|conds| {
                conds
                    .iter()
                    .filter_map(Cond::parse)
                    .filter(|c| c.kind == REPLICA_FAILURE)
                    .map(|c| Cond {
                        last_update: c.last_transition.clone(),
                        ..c
                    })
                    .collect()
            })
            .unwrap_or_default();
        let matches = get(v, &["spec", "template"])
            .is_some_and(|t| normalize(&strip_hash_label(t)) == *deployment_template);
        Some(Rs {
            created: str_of(meta.and_then(|m| m.get("creationTimestamp")))
                .and_then(parse_rfc3339)
                .unwrap_or(0),
            revision: annotations
                .get(REVISION_ANNOTATION)
                .and_then(|r| r.trim().parse().ok()),
            spec: count_of(get(v, &["spec", "replicas"]), 1),
            status_replicas: stat("replicas"),
            ready: stat("readyReplicas"),
            available: stat("availableReplicas"),
            generation: int_of(meta.and_then(|m| m.get("generation"))).unwrap_or(0),
            observed_generation: int_of(status.and_then(|s| s.get("observedGeneration")))
                .unwrap_or(0),
            deleting: meta
                .and_then(|m| m.get("deletionTimestamp"))
                .is_some_and(|t| !t.is_null()),
            matches,
            failures,
            annotations,
            name,
        })
    }

    fn desired_annotation(&self) -> Option<i64> {
        self.annotations
            .get(DESIRED_REPLICAS_ANNOTATION)
            .and_then(|s| s.trim().parse().ok())
    }
}

/// Oldest first; ties by name (Kubernetes' `ReplicaSetsByCreationTimestamp`).
fn cmp_creation(a: &Rs, b: &Rs) -> Ordering {
    a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name))
}

/// A Deployment condition.
#[derive(Debug, Clone, PartialEq)]
struct Cond {
    kind: String,
    status: String,
    reason: String,
    message: String,
    last_update: String,
    last_transition: String,
}

impl Cond {
    fn parse(v: &Value) -> Option<Cond> {
        let text = |k: &str| str_of(v.get(k)).unwrap_or_default().to_string();
        Some(Cond {
            kind: str_of(v.get("type"))?.to_string(),
            status: text("status"),
            reason: text("reason"),
            message: text("message"),
            last_update: text("lastUpdateTime"),
            last_transition: text("lastTransitionTime"),
        })
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), json!(self.kind));
        for (key, value) in [
            ("status", &self.status),
            ("lastUpdateTime", &self.last_update),
            ("lastTransitionTime", &self.last_transition),
            ("reason", &self.reason),
            ("message", &self.message),
        ] {
            if !value.is_empty() {
                m.insert(key.into(), json!(value));
            }
        }
        Value::Object(m)
    }
}

/// A Deployment status.
#[derive(Debug, Clone, PartialEq, Default)]
struct Status {
    observed_generation: i64,
    replicas: i64,
    updated: i64,
    ready: i64,
    available: i64,
    unavailable: i64,
    collision_count: Option<i64>,
    conditions: Vec<Cond>,
}

impl Status {
    fn parse(v: Option<&Value>) -> Status {
        let field = |k: &str| int_of(v.and_then(|s| s.get(k)));
        Status {
            observed_generation: field("observedGeneration").unwrap_or(0),
            replicas: field("replicas").unwrap_or(0),
            updated: field("updatedReplicas").unwrap_or(0),
            ready: field("readyReplicas").unwrap_or(0),
            available: field("availableReplicas").unwrap_or(0),
            unavailable: field("unavailableReplicas").unwrap_or(0),
            collision_count: field("collisionCount"),
            conditions: v
                .and_then(|s| s.get("conditions"))
                .and_then(Value::as_array)
                .map(|c| c.iter().filter_map(Cond::parse).collect())
                .unwrap_or_default(),
        }
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        for (key, value) in [
            ("observedGeneration", self.observed_generation),
            ("replicas", self.replicas),
            ("updatedReplicas", self.updated),
            ("readyReplicas", self.ready),
            ("availableReplicas", self.available),
            ("unavailableReplicas", self.unavailable),
        ] {
            m.insert(key.into(), json!(value));
        }
        if !self.conditions.is_empty() {
            let conditions = self.conditions.iter().map(Cond::to_value).collect();
            m.insert("conditions".into(), Value::Array(conditions));
        }
        if let Some(count) = self.collision_count {
            m.insert("collisionCount".into(), json!(count));
        }
        Value::Object(m)
    }

    fn cond(&self, kind: &str) -> Option<&Cond> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    fn remove_cond(&mut self, kind: &str) {
        self.conditions.retain(|c| c.kind != kind);
    }

    /// Kubernetes' `SetDeploymentCondition`: nothing changes when status and reason are the
    /// same; lastTransitionTime is kept while the status stays the same.
    fn set_cond(&mut self, mut cond: Cond) {
        if let Some(current) = self.cond(&cond.kind) {
            if current.status == cond.status && current.reason == cond.reason {
                return;
            }
            if current.status == cond.status {
                cond.last_transition = current.last_transition.clone();
            }
        }
        self.remove_cond(&cond.kind);
        self.conditions.push(cond);
    }
}

/// Kubernetes' `DeploymentComplete`.
fn deployment_complete(d: &Deploy, s: &Status) -> bool {
    s.updated == d.replicas
        && s.replicas == d.replicas
        && s.available == d.replicas
        && s.observed_generation >= d.generation
}

/// Kubernetes' `DeploymentProgressing`: any sign of progress between two statuses.
fn deployment_progressing(old: &Status, new: &Status) -> bool {
    let old_old = old.replicas.saturating_sub(old.updated);
    let new_old = new.replicas.saturating_sub(new.updated);
    new.updated > old.updated
        || new_old < old_old
        || new.ready > old.ready
        || new.available > old.available
}

// ---------------------------------------------------------------------------------------------
// The planner: Kubernetes' sync loop over an in-memory copy of the ReplicaSets
// ---------------------------------------------------------------------------------------------

struct Planner {
    d: Deploy,
    rss: Vec<Rs>,
    /// The Deployment status as the simulated syncs left it.
    status: Status,
    actions: Vec<Action>,
    /// ReplicaSet changes planned so far (a sync that adds none ends the plan).
    mutations: usize,
    now: i64,
    /// The ReplicaSet (name, size, annotations) before the last `Scale` action, so that
    /// consecutive scales of one ReplicaSet merge into one action.
    last_scale_base: Option<(String, i64, BTreeMap<String, String>)>,
}

impl Planner {
    /// One Kubernetes `syncDeployment`.
    fn pass(&mut self) {
        self.check_paused_conditions();
        if self.d.paused {
            self.sync();
            return;
        }
        self.get_new_rs(false);
        if self.is_scaling_event() {
            self.sync();
        } else if self.d.recreate {
            self.rollout_recreate();
        } else {
            self.rollout_rolling();
        }
    }

    /// Kubernetes' `sync`: scaling events and paused Deployments.
    fn sync(&mut self) {
        self.get_new_rs(false);
        self.scale();
        if self.d.paused {
            let olds = self.olds(self.find_new());
            self.cleanup(olds);
        }
        self.status = self.calculate_status();
    }

    fn rollout_rolling(&mut self) {
        let Some(new) = self.get_new_rs(true) else {
            self.sync_rollout_status();
            return;
        };
        if self.reconcile_new(new) || self.reconcile_old(new) {
            self.sync_rollout_status();
            return;
        }
        if deployment_complete(&self.d, &self.calculate_status()) {
            let olds = self.olds(Some(new));
            self.cleanup(olds);
        }
        self.sync_rollout_status();
    }

    fn rollout_recreate(&mut self) {
        self.get_new_rs(false);
        let olds = self.olds(self.find_new());
        let mut scaled_down = false;
        for &i in &olds {
            if self.rss[i].spec > 0 {
                scaled_down |= self.scale_rs_and_record(i, 0);
            }
        }
        if scaled_down || olds.iter().any(|&i| self.rss[i].status_replicas > 0) {
            self.sync_rollout_status();
            return;
        }
        let new = match self.find_new() {
            Some(new) => Some(new),
            None => self.get_new_rs(true),
        };
        if let Some(new) = new {
            self.scale_rs_and_record(new, self.d.replicas);
            if deployment_complete(&self.d, &self.calculate_status()) {
                let olds = self.olds(Some(new));
                self.cleanup(olds);
            }
        }
        self.sync_rollout_status();
    }

    fn check_paused_conditions(&mut self) {
        if self.d.progress_deadline.is_none() {
            return;
        }
        let cond = self.status.cond(PROGRESSING);
        if cond.is_some_and(|c| c.reason == TIMED_OUT_REASON) {
            return;
        }
        let paused_cond = cond.is_some_and(|c| c.reason == PAUSED_REASON);
        if self.d.paused && !paused_cond {
            let c = self.new_cond(
                PROGRESSING,
                "Unknown",
                PAUSED_REASON,
                "Deployment is paused",
            );
            self.status.set_cond(c);
        } else if !self.d.paused && paused_cond {
            let c = self.new_cond(
                PROGRESSING,
                "Unknown",
                RESUMED_REASON,
                "Deployment is resumed",
            );
            self.status.set_cond(c);
        }
    }

    /// The oldest owned ReplicaSet whose template matches the Deployment's.
    fn find_new(&self) -> Option<usize> {
        let mut matching: Vec<usize> = (0..self.rss.len())
            .filter(|&i| self.rss[i].matches)
            .collect();
        self.sort_by_creation(&mut matching);
        matching.first().copied()
    }

    /// Every ReplicaSet but `new`, oldest first.
    fn olds(&self, new: Option<usize>) -> Vec<usize> {
        let mut olds: Vec<usize> = (0..self.rss.len()).filter(|&i| Some(i) != new).collect();
        self.sort_by_creation(&mut olds);
        olds
    }

    fn sort_by_creation(&self, indices: &mut [usize]) {
        indices.sort_by(|&a, &b| cmp_creation(&self.rss[a], &self.rss[b]));
    }

    fn total_spec(&self) -> i64 {
        self.rss.iter().map(|rs| rs.spec).sum()
    }

    /// Kubernetes' `getNewReplicaSet`: syncs the new ReplicaSet's revision (and the
    /// Deployment annotations copied onto it), or creates it when asked to.
    fn get_new_rs(&mut self, create: bool) -> Option<usize> {
        let new = self.find_new();
        let max_old = (0..self.rss.len())
            .filter(|&i| Some(i) != new)
            .filter_map(|i| self.rss[i].revision)
            .max()
            .unwrap_or(0)
            .max(0);
        let new_revision = max_old.saturating_add(1);
        let Some(i) = new else {
            return if create {
                self.create_new_rs(new_revision)
            } else {
                None
            };
        };
        let mut wanted = self.copied_annotations();
        let rs = &self.rss[i];
        let raw = rs.annotations.get(REVISION_ANNOTATION);
        let old_revision = match raw {
            None => Some(0),
            Some(text) => text.trim().parse::<i64>().ok(),
        };
        if let Some(old_revision) = old_revision {
            if old_revision < new_revision {
                wanted.push((REVISION_ANNOTATION.into(), new_revision.to_string()));
                if let Some(raw) = raw {
                    // Rolled back to: remember the revisions this ReplicaSet had before.
                    let history = match rs.annotations.get(REVISION_HISTORY_ANNOTATION) {
                        Some(h) if !h.is_empty() => format!("{h},{raw}"),
                        _ => raw.clone(),
                    };
                    wanted.push((REVISION_HISTORY_ANNOTATION.into(), history));
                }
            }
        }
        let size = rs.spec;
        let name = rs.name.clone();
        self.emit_scale(i, size, wanted);
        if self.d.progress_deadline.is_some() && self.status.cond(PROGRESSING).is_none() {
            let msg = format!("Found new replica set {name:?}");
            let c = self.new_cond(PROGRESSING, "True", FOUND_NEW_RS_REASON, &msg);
            self.status.set_cond(c);
        }
        Some(i)
    }

    /// The Deployment annotations Kubernetes copies onto its new ReplicaSet.
    fn copied_annotations(&self) -> Vec<(String, String)> {
        self.d
            .annotations
            .iter()
            .filter(|(k, _)| {
                ![
                    LAST_APPLIED_ANNOTATION,
                    REVISION_ANNOTATION,
                    REVISION_HISTORY_ANNOTATION,
                    DESIRED_REPLICAS_ANNOTATION,
                    MAX_REPLICAS_ANNOTATION,
                    ROLLBACK_TO_ANNOTATION,
                ]
                .contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn create_new_rs(&mut self, revision: i64) -> Option<usize> {
        let start = self.status.collision_count.unwrap_or(0).clamp(0, MAX_COUNT);
        let mut collisions = start;
        let taken = |p: &Planner, c: i64| {
            let name = format!("{}-{}", p.d.name, template_hash(&p.d.template, c));
            p.rss.iter().any(|rs| rs.name == name)
        };
        while taken(self, collisions) {
            if collisions - start >= 100 {
                return None;
            }
            collisions += 1;
        }
        if collisions != start {
            self.status.collision_count = Some(collisions);
        }
        let hash = template_hash(&self.d.template, collisions);
        let name = format!("{}-{}", self.d.name, hash);
        let replicas = self.new_rs_new_replicas(None);

        let mut annotations: BTreeMap<String, String> =
            self.copied_annotations().into_iter().collect();
        annotations.insert(REVISION_ANNOTATION.into(), revision.to_string());
        annotations.insert(
            DESIRED_REPLICAS_ANNOTATION.into(),
            self.d.replicas.to_string(),
        );
        annotations.insert(
            MAX_REPLICAS_ANNOTATION.into(),
            (self.d.replicas + self.d.max_surge()).to_string(),
        );

        let mut template = self.d.template.clone();
        let mut labels = Map::new();
        if let Some(t) = template.as_object_mut() {
            if let Some(l) = object_entry(t, "metadata").and_then(|m| object_entry(m, "labels")) {
                l.insert(POD_TEMPLATE_HASH_LABEL.into(), json!(hash));
                labels = l.clone();
            }
        }
        let mut selector = self.d.selector.clone();
        if let Some(m) = object_entry(&mut selector, "matchLabels") {
            m.insert(POD_TEMPLATE_HASH_LABEL.into(), json!(hash));
        }
        let mut owner = Map::new();
        owner.insert("apiVersion".into(), json!("apps/v1"));
        owner.insert("kind".into(), json!("Deployment"));
        owner.insert("name".into(), json!(self.d.name));
        if let Some(uid) = &self.d.uid {
            owner.insert("uid".into(), json!(uid));
        }
        owner.insert("controller".into(), json!(true));
        owner.insert("blockOwnerDeletion".into(), json!(true));
        let mut metadata = Map::new();
        metadata.insert("name".into(), json!(name));
        if let Some(ns) = &self.d.namespace {
            metadata.insert("namespace".into(), json!(ns));
        }
        metadata.insert("labels".into(), Value::Object(labels));
        metadata.insert("annotations".into(), json!(annotations));
        metadata.insert("ownerReferences".into(), json!([owner]));
        let mut spec = Map::new();
        spec.insert("replicas".into(), json!(replicas));
        if let Some(seconds) = self.d.min_ready_seconds {
            spec.insert("minReadySeconds".into(), json!(seconds));
        }
        spec.insert("selector".into(), Value::Object(selector));
        spec.insert("template".into(), template);
        let object = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": metadata,
            "spec": spec,
        });

        self.rss.push(Rs {
            name: name.clone(),
            created: i64::MAX,
            revision: Some(revision),
            annotations,
            spec: replicas,
            status_replicas: 0,
            ready: 0,
            available: 0,
            generation: 0,
            observed_generation: 0,
            deleting: false,
            matches: true,
            failures: Vec::new(),
        });
        self.actions.push(Action::CreateReplicaSet(object));
        self.mutations += 1;
        self.last_scale_base = None;
        if self.d.progress_deadline.is_some() {
            let msg = format!("Created new replica set {name:?}");
            let c = self.new_cond(PROGRESSING, "True", NEW_RS_CREATED_REASON, &msg);
            self.status.set_cond(c);
        }
        Some(self.rss.len() - 1)
    }

    /// Kubernetes' `NewRSNewReplicas`: how big the new ReplicaSet may be now.
    fn new_rs_new_replicas(&self, new: Option<usize>) -> i64 {
        if self.d.recreate {
            return self.d.replicas;
        }
        let new_size = new.map_or(0, |i| self.rss[i].spec);
        let current = self.total_spec();
        let max_total = self.d.replicas + self.d.surge;
        if current >= max_total {
            return new_size;
        }
        new_size + (max_total - current).min(self.d.replicas - new_size)
    }

    /// Kubernetes' `isScalingEvent`: an active ReplicaSet was sized for other replicas.
    fn is_scaling_event(&self) -> bool {
        self.rss.iter().filter(|rs| rs.spec > 0).any(|rs| {
            rs.desired_annotation()
                .is_some_and(|d| d != self.d.replicas)
        })
    }

    /// Kubernetes' `scale`: applies a replica count change to the active ReplicaSets.
    fn scale(&mut self) {
        let new = self.find_new();
        let olds = self.olds(new);
        if let Some(i) = self.find_active_or_latest(new, &olds) {
            self.scale_rs(i, self.d.replicas);
            return;
        }
        if self.is_saturated(new) {
            for &i in &olds {
                if self.rss[i].spec > 0 {
                    self.scale_rs_and_record(i, 0);
                }
            }
            return;
        }
        if self.d.recreate {
            return;
        }
        let mut active: Vec<usize> = olds
            .iter()
            .copied()
            .chain(new)
            .filter(|&i| self.rss[i].spec > 0)
            .collect();
        let total: i64 = active.iter().map(|&i| self.rss[i].spec).sum();
        let allowed = if self.d.replicas > 0 {
            self.d.replicas + self.d.max_surge()
        } else {
            0
        };
        let to_add = allowed - total;
        let rss = &self.rss;
        match to_add.cmp(&0) {
            // Larger first; among equals the newer first when growing, the older when shrinking.
            Ordering::Greater => active.sort_by(|&a, &b| {
                (rss[b].spec.cmp(&rss[a].spec)).then_with(|| cmp_creation(&rss[b], &rss[a]))
            }),
            Ordering::Less => active.sort_by(|&a, &b| {
                (rss[b].spec.cmp(&rss[a].spec)).then_with(|| cmp_creation(&rss[a], &rss[b]))
            }),
            Ordering::Equal => {}
        }
        let mut added = 0;
        let mut sizes: Vec<i64> = Vec::with_capacity(active.len());
        for &i in &active {
            let proportion = if to_add != 0 {
                self.proportion(i, to_add, added)
            } else {
                0
            };
            added += proportion;
            sizes.push(self.rss[i].spec + proportion);
        }
        if to_add != added {
            if let Some(first) = sizes.first_mut() {
                *first = (*first + to_add - added).max(0);
            }
        }
        for (&i, &size) in active.iter().zip(&sizes) {
            self.scale_rs(i, size);
        }
    }

    /// Kubernetes' `FindActiveOrLatest`: the only active ReplicaSet, or the newest one when
    /// none is active; `None` when several are active.
    fn find_active_or_latest(&self, new: Option<usize>, olds: &[usize]) -> Option<usize> {
        let active: Vec<usize> = olds
            .iter()
            .copied()
            .chain(new)
            .filter(|&i| self.rss[i].spec > 0)
            .collect();
        match active.len() {
            0 => new.or_else(|| olds.last().copied()),
            1 => active.first().copied(),
            _ => None,
        }
    }

    /// Kubernetes' `IsSaturated`.
    fn is_saturated(&self, new: Option<usize>) -> bool {
        new.is_some_and(|i| {
            let rs = &self.rss[i];
            rs.spec == self.d.replicas
                && rs.desired_annotation() == Some(self.d.replicas)
                && rs.available == self.d.replicas
        })
    }

    /// Kubernetes' `GetProportion`.
    fn proportion(&self, i: usize, to_add: i64, added: i64) -> i64 {
        if self.rss[i].spec == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(i);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Kubernetes' `getReplicaSetFraction`: the ReplicaSet's share of the new size, minus its
    /// current size.
    fn fraction(&self, i: usize) -> i64 {
        let rs = &self.rss[i];
        if self.d.replicas == 0 {
            return -rs.spec;
        }
        let deployment_size = i128::from(self.d.replicas + self.d.max_surge());
        let annotated = rs
            .annotations
            .get(MAX_REPLICAS_ANNOTATION)
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(self.status.replicas);
        if annotated <= 0 {
            return 0;
        }
        let annotated = i128::from(annotated);
        // round(spec * deployment_size / annotated), halves away from zero.
        let numerator = 2 * i128::from(rs.spec) * deployment_size + annotated;
        let new_size = numerator / (2 * annotated);
        i64::try_from(new_size).unwrap_or(MAX_COUNT).min(MAX_COUNT) - rs.spec
    }

    /// Kubernetes' `reconcileNewReplicaSet`.
    fn reconcile_new(&mut self, new: usize) -> bool {
        let size = self.rss[new].spec;
        if size == self.d.replicas {
            return false;
        }
        if size > self.d.replicas {
            return self.scale_rs_and_record(new, self.d.replicas);
        }
        let target = self.new_rs_new_replicas(Some(new));
        self.scale_rs_and_record(new, target)
    }

    /// Kubernetes' `reconcileOldReplicaSets`: scale old ReplicaSets down as far as
    /// availability allows, unhealthy replicas first.
    fn reconcile_old(&mut self, new: usize) -> bool {
        let olds: Vec<usize> = self
            .olds(Some(new))
            .into_iter()
            .filter(|&i| self.rss[i].spec > 0)
            .collect();
        if olds.is_empty() {
            return false;
        }
        let min_available = self.d.replicas - self.d.max_unavailable();
        let new_unavailable = self.rss[new].spec - self.rss[new].available;
        let max_scaled_down = self.total_spec() - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.cleanup_unhealthy(&olds, max_scaled_down);
        let scaled = self.scale_down_old_for_rolling(&olds);
        cleaned + scaled > 0
    }

    /// Kubernetes' `cleanupUnhealthyReplicas`: drop old replicas that are not available.
    fn cleanup_unhealthy(&mut self, olds: &[usize], max_cleanup: i64) -> i64 {
        let mut total = 0;
        for &i in olds {
            if total >= max_cleanup {
                break;
            }
            let (size, available) = (self.rss[i].spec, self.rss[i].available);
            if size == 0 || available >= size {
                continue;
            }
            let down = (max_cleanup - total).min(size - available);
            self.scale_rs_and_record(i, size - down);
            total += down;
        }
        total
    }

    /// Kubernetes' `scaleDownOldReplicaSetsForRollingUpdate`: keep total availability at
    /// `replicas - maxUnavailable` or more, oldest ReplicaSets first.
    fn scale_down_old_for_rolling(&mut self, olds: &[usize]) -> i64 {
        let min_available = self.d.replicas - self.d.max_unavailable();
        let available: i64 = self.rss.iter().map(|rs| rs.available).sum();
        if available <= min_available {
            return 0;
        }
        let target = available - min_available;
        let mut total = 0;
        for &i in olds {
            if total >= target {
                break;
            }
            let size = self.rss[i].spec;
            if size == 0 {
                continue;
            }
            let down = size.min(target - total);
            self.scale_rs_and_record(i, size - down);
            total += down;
        }
        total
    }

    /// Kubernetes' `cleanupDeployment`: delete the oldest old ReplicaSets beyond
    /// revisionHistoryLimit that have nothing left in them.
    fn cleanup(&mut self, olds: Vec<usize>) {
        let mut alive: Vec<usize> = olds
            .into_iter()
            .filter(|&i| !self.rss[i].deleting)
            .collect();
        let excess = i64::try_from(alive.len()).unwrap_or(i64::MAX) - self.d.history_limit;
        let Ok(excess) = usize::try_from(excess) else {
            return;
        };
        let rss = &self.rss;
        alive.sort_by(|&a, &b| {
            let (x, y) = (&rss[a], &rss[b]);
            x.revision
                .unwrap_or(0)
                .cmp(&y.revision.unwrap_or(0))
                .then_with(|| cmp_creation(x, y))
        });
        let doomed: Vec<String> = alive
            .iter()
            .take(excess)
            .map(|&i| &rss[i])
            .filter(|rs| {
                rs.status_replicas == 0
                    && rs.spec == 0
                    && rs.generation <= rs.observed_generation
                    && !rs.deleting
            })
            .map(|rs| rs.name.clone())
            .collect();
        for name in doomed {
            self.rss.retain(|rs| rs.name != name);
            self.actions.push(Action::DeleteReplicaSet { name });
            self.mutations += 1;
            self.last_scale_base = None;
        }
    }

    /// Kubernetes' `scaleReplicaSetAndRecordEvent`: nothing when the size already matches.
    fn scale_rs_and_record(&mut self, i: usize, size: i64) -> bool {
        if self.rss[i].spec == size {
            return false;
        }
        self.scale_rs(i, size)
    }

    /// Kubernetes' `scaleReplicaSet`: set the size and the replica annotations. True when the
    /// size changed.
    fn scale_rs(&mut self, i: usize, size: i64) -> bool {
        let annotations = vec![
            (
                DESIRED_REPLICAS_ANNOTATION.to_string(),
                self.d.replicas.to_string(),
            ),
            (
                MAX_REPLICAS_ANNOTATION.to_string(),
                (self.d.replicas + self.d.max_surge()).to_string(),
            ),
        ];
        self.emit_scale(i, size, annotations)
    }

    /// Records a `Scale` (merged into the previous action when that scaled the same
    /// ReplicaSet) unless it changes nothing. True when the size changed.
    fn emit_scale(&mut self, i: usize, size: i64, wanted: Vec<(String, String)>) -> bool {
        let Some(rs) = self.rss.get_mut(i) else {
            return false;
        };
        let mut changed: Vec<(String, String)> = Vec::new();
        for (k, v) in wanted {
            changed.retain(|(c, _)| *c != k);
            if rs.annotations.get(&k) != Some(&v) {
                changed.push((k, v));
            }
        }
        let resized = rs.spec != size;
        if !resized && changed.is_empty() {
            return false;
        }
        let base = (rs.name.clone(), rs.spec, rs.annotations.clone());
        rs.spec = size;
        for (k, v) in &changed {
            rs.annotations.insert(k.clone(), v.clone());
        }
        let name = rs.name.clone();
        let now_annotations = rs.annotations.clone();
        self.mutations += 1;

        let mergeable = matches!(
            (self.actions.last(), &self.last_scale_base),
            (Some(Action::Scale { name: last, .. }), Some((base_name, _, _)))
                if *last == name && *base_name == name
        );
        if !mergeable {
            self.last_scale_base = Some(base);
            self.actions.push(Action::Scale {
                name,
                replicas: size,
                annotations: changed,
            });
            return resized;
        }
        let Some((_, base_size, base_annotations)) = &self.last_scale_base else {
            return resized;
        };
        let base_size = *base_size;
        let mut keys: Vec<String> = Vec::new();
        if let Some(Action::Scale { annotations, .. }) = self.actions.last() {
            keys.extend(annotations.iter().map(|(k, _)| k.clone()));
        }
        for (k, _) in &changed {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        let merged: Vec<(String, String)> = keys
            .into_iter()
            .filter_map(|k| {
                let v = now_annotations.get(&k)?.clone();
                (base_annotations.get(&k) != Some(&v)).then_some((k, v))
            })
            .collect();
        if size == base_size && merged.is_empty() {
            // The two scales cancel out.
            self.actions.pop();
            self.last_scale_base = None;
        } else if let Some(Action::Scale {
            replicas,
            annotations,
            ..
        }) = self.actions.last_mut()
        {
            *replicas = size;
            *annotations = merged;
        }
        resized
    }

    fn new_cond(&self, kind: &str, status: &str, reason: &str, message: &str) -> Cond {
        let now = format_rfc3339(self.now);
        Cond {
            kind: kind.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_update: now.clone(),
            last_transition: now,
        }
    }

    /// Kubernetes' `calculateStatus`: counts from ReplicaSet status, plus the Available
    /// condition.
    fn calculate_status(&self) -> Status {
        let new = self.find_new();
        let sum = |f: fn(&Rs) -> i64| self.rss.iter().map(f).sum::<i64>();
        let available = sum(|rs| rs.available);
        let mut status = Status {
            observed_generation: self.d.generation,
            replicas: sum(|rs| rs.status_replicas),
            updated: new.map_or(0, |i| self.rss[i].status_replicas),
            ready: sum(|rs| rs.ready),
            available,
            unavailable: (self.d.replicas - available).max(0),
            collision_count: self.status.collision_count,
            conditions: self.status.conditions.clone(),
        };
        let cond = if available >= self.d.replicas - self.d.max_unavailable() {
            self.new_cond(
                AVAILABLE,
                "True",
                MIN_AVAILABLE_REASON,
                "Deployment has minimum availability.",
            )
        } else {
            self.new_cond(
                AVAILABLE,
                "False",
                MIN_UNAVAILABLE_REASON,
                "Deployment does not have minimum availability.",
            )
        };
        status.set_cond(cond);
        status
    }

    /// Kubernetes' `syncRolloutStatus`: status plus the Progressing (and ReplicaFailure)
    /// conditions.
    fn sync_rollout_status(&mut self) {
        let mut next = self.calculate_status();
        let new = self.find_new();
        if self.d.progress_deadline.is_none() {
            next.remove_cond(PROGRESSING);
        }
        let current = self.status.cond(PROGRESSING).cloned();
        let complete_before = next.replicas == next.updated
            && current
                .as_ref()
                .is_some_and(|c| c.reason == NEW_RS_AVAILABLE_REASON);
        if let (Some(deadline), false) = (self.d.progress_deadline, complete_before) {
            let subject = match new {
                Some(i) => format!("ReplicaSet {:?}", self.rss[i].name),
                None => format!("Deployment {:?}", self.d.name),
            };
            if deployment_complete(&self.d, &next) {
                let msg = format!("{subject} has successfully progressed.");
                let c = self.new_cond(PROGRESSING, "True", NEW_RS_AVAILABLE_REASON, &msg);
                next.set_cond(c);
            } else if deployment_progressing(&self.status, &next) {
                let msg = format!("{subject} is progressing.");
                let mut c = self.new_cond(PROGRESSING, "True", RS_UPDATED_REASON, &msg);
                if let Some(current) = &current {
                    if current.status == "True" {
                        c.last_transition = current.last_transition.clone();
                    }
                    // Progress refreshes lastUpdateTime even when the reason stays the same.
                    next.remove_cond(PROGRESSING);
                }
                next.set_cond(c);
            } else if self.timed_out(&next, deadline) {
                let msg = format!("{subject} has timed out progressing.");
                let c = self.new_cond(PROGRESSING, "False", TIMED_OUT_REASON, &msg);
                next.set_cond(c);
            }
        }
        let failures = new
            .map(|i| self.rss[i].failures.clone())
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| {
                self.rss
                    .iter()
                    .flat_map(|rs| rs.failures.iter().cloned())
                    .collect()
            });
        match failures.into_iter().next() {
            Some(failure) => next.set_cond(failure),
            None => next.remove_cond(REPLICA_FAILURE),
        }
        self.status = next;
    }

    /// Kubernetes' `DeploymentTimedOut`.
    fn timed_out(&self, status: &Status, deadline: i64) -> bool {
        let Some(cond) = status.cond(PROGRESSING) else {
            return false;
        };
        if cond.reason == NEW_RS_AVAILABLE_REASON {
            return false;
        }
        if cond.reason == TIMED_OUT_REASON {
            return true;
        }
        parse_rfc3339(&cond.last_update)
            .is_some_and(|from| from.saturating_add(deadline) < self.now)
    }
}

// ---------------------------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------------------------

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key))
}

fn str_of(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
}

/// An integer field; integral floats are accepted, huge values saturate.
fn int_of(v: Option<&Value>) -> Option<i64> {
    let Some(Value::Number(n)) = v else {
        return None;
    };
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    if n.as_u64().is_some() {
        return Some(i64::MAX);
    }
    // `as` saturates for out-of-range floats.
    n.as_f64()
        .filter(|f| f.is_finite() && f.fract() == 0.0)
        .map(|f| f as i64)
}

/// A replica count: int32 range, never negative, `default` when missing or mistyped.
fn count_of(v: Option<&Value>, default: i64) -> i64 {
    int_of(v).unwrap_or(default).clamp(0, MAX_COUNT)
}

fn annotations_of(meta: Option<&Value>) -> BTreeMap<String, String> {
    meta.and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// An int-or-percent (maxSurge / maxUnavailable) resolved against `total`; percentages round
/// up or down as asked. Missing or malformed values mean the apps/v1 default of 25%.
fn scaled_value(v: Option<&Value>, total: i64, round_up: bool) -> i64 {
    let percent = |p: i64| {
        let product = i128::from(p.clamp(0, MAX_COUNT)) * i128::from(total.clamp(0, MAX_COUNT));
        let value = if round_up {
            (product + 99) / 100
        } else {
            product / 100
        };
        i64::try_from(value).unwrap_or(MAX_COUNT).min(MAX_COUNT)
    };
    match v {
        Some(Value::Number(_)) => int_of(v).unwrap_or(0).clamp(0, MAX_COUNT),
        Some(Value::String(s)) => {
            let s = s.trim();
            match s.strip_suffix('%') {
                Some(p) => p
                    .trim()
                    .parse::<i64>()
                    .map_or_else(|_| percent(DEFAULT_SURGE_PERCENT), percent),
                None => s.parse::<i64>().map_or_else(
                    |_| percent(DEFAULT_SURGE_PERCENT),
                    |i| i.clamp(0, MAX_COUNT),
                ),
            }
        }
        _ => percent(DEFAULT_SURGE_PERCENT),
    }
}

/// The named member of `m` as an object, made one if it is missing or not an object.
fn object_entry<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let entry = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

/// True when a controller ownerReference names a uid other than the Deployment's.
fn controlled_by_other(rs: &Value, uid: Option<&str>) -> bool {
    let Some(uid) = uid else {
        return false;
    };
    get(rs, &["metadata", "ownerReferences"])
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("controller").and_then(Value::as_bool) == Some(true)
                    && str_of(r.get("uid")).is_some_and(|u| u != uid)
            })
        })
}

/// A copy of a pod template without the pod-template-hash label.
fn strip_hash_label(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .get_mut("metadata")
        .and_then(|m| m.get_mut("labels"))
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    t
}

/// Drops `null` members and empty objects/arrays (unset and empty are the same in the API).
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), normalize(x)))
                .filter(|(_, x)| !is_blank(x))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// JSON with object keys sorted, whatever the map's own order.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (n, k) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (n, x) in a.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

fn fnv1a(mut hash: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Kubernetes' `rand.SafeEncodeString`: no vowels, no easily confused characters.
fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// Unix seconds as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// RFC 3339 (fractional seconds and offsets allowed) as unix seconds.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let digits = b.get(from..to)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let v = |a: u8, b: u8| i64::from(a - b'0') * 10 + i64::from(b - b'0');
            let off = v(*h1, *h2) * 3600 + v(*m1, *m2) * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    fn template(image: &str) -> Value {
        json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": image}]}
        })
    }

    fn deployment(replicas: i64, strategy: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": strategy,
                "template": template("v1")
            }
        })
    }

    fn rolling(surge: Value, unavailable: Value) -> Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    }

    /// A tiny cluster: the store, a clock, and a ReplicaSet controller that makes `step`
    /// more replicas available per round.
    struct Sim {
        d: Value,
        rss: Vec<Value>,
        now: i64,
        max_total: i64,
        min_available: i64,
        created: usize,
    }

    impl Sim {
        fn new(d: Value) -> Sim {
            Sim {
                d,
                rss: Vec::new(),
                now: T0,
                max_total: i64::MAX,
                min_available: 0,
                created: 0,
            }
        }

        fn plan(&self) -> Vec<Action> {
            plan(&self.d, &self.rss, self.now)
        }

        fn rs(&self, name: &str) -> &Value {
            self.rss
                .iter()
                .find(|rs| rs["metadata"]["name"] == name)
                .expect("replica set exists")
        }

        fn rs_mut(&mut self, name: &str) -> &mut Value {
            self.rss
                .iter_mut()
                .find(|rs| rs["metadata"]["name"] == name)
                .expect("replica set exists")
        }

        fn spec_total(&self) -> i64 {
            self.rss
                .iter()
                .map(|rs| rs["spec"]["replicas"].as_i64().unwrap())
                .sum()
        }

        fn available_total(&self) -> i64 {
            self.rss
                .iter()
                .map(|rs| rs["status"]["availableReplicas"].as_i64().unwrap_or(0))
                .sum()
        }

        fn apply(&mut self, actions: &[Action]) {
            for action in actions {
                match action {
                    Action::CreateReplicaSet(rs) => {
                        let name = rs["metadata"]["name"].as_str().unwrap().to_string();
                        assert!(
                            !self
                                .rss
                                .iter()
                                .any(|r| r["metadata"]["name"] == name.as_str()),
                            "create of existing {name}"
                        );
                        let mut rs = rs.clone();
                        self.created += 1;
                        rs["metadata"]["creationTimestamp"] = json!(format_rfc3339(self.now));
                        rs["metadata"]["uid"] = json!(format!("rs-{}", self.created));
                        self.rss.push(rs);
                    }
                    Action::Scale {
                        name,
                        replicas,
                        annotations,
                    } => {
                        let rs = self.rs_mut(name);
                        let mut changed = rs["spec"]["replicas"] != *replicas;
                        for (k, v) in annotations {
                            if rs["metadata"]["annotations"][k.as_str()] != v.as_str() {
                                changed = true;
                            }
                            rs["metadata"]["annotations"][k.as_str()] = json!(v);
                        }
                        assert!(changed, "no-op scale of {name}: {action:?}");
                        rs["spec"]["replicas"] = json!(replicas);
                    }
                    Action::DeleteReplicaSet { name } => {
                        let rs = self.rs(name);
                        assert_eq!(rs["spec"]["replicas"], 0);
                        self.rss
                            .retain(|rs| rs["metadata"]["name"] != name.as_str());
                    }
                    Action::UpdateStatus(status) => {
                        assert_ne!(self.d["status"], *status, "no-op status update");
                        self.d["status"] = status.clone();
                    }
                }
                assert!(
                    self.spec_total() <= self.max_total,
                    "surge exceeded after {action:?}"
                );
            }
        }

        /// The ReplicaSet controller: pods appear at once, `step` of them become available.
        fn kubelet(&mut self, step: i64) -> bool {
            let mut changed = false;
            for rs in &mut self.rss {
                let spec = rs["spec"]["replicas"].as_i64().unwrap();
                let available = rs["status"]["availableReplicas"].as_i64().unwrap_or(0);
                let available = (available + step).min(spec);
                let status = json!({"replicas": spec, "readyReplicas": available, "availableReplicas": available});
                if rs["status"] != status {
                    rs["status"] = status;
                    changed = true;
                }
            }
            changed
        }

        /// Plans, applies and runs the ReplicaSet controller until nothing changes; returns
        /// every action taken.
        fn settle(&mut self, step: i64) -> Vec<Action> {
            let mut all = Vec::new();
            for _ in 0..200 {
                self.now += 10;
                let actions = self.plan();
                self.apply(&actions);
                let changed = self.kubelet(step);
                assert!(
                    self.available_total() >= self.min_available,
                    "availability dropped to {} (< {})",
                    self.available_total(),
                    self.min_available
                );
                let quiet = actions.is_empty() && !changed;
                all.extend(actions);
                if quiet {
                    return all;
                }
            }
            panic!("did not settle");
        }

        fn change_template(&mut self, image: &str) {
            self.d["spec"]["template"] = template(image);
            self.bump_generation();
        }

        fn bump_generation(&mut self) {
            let g = self.d["metadata"]["generation"].as_i64().unwrap();
            self.d["metadata"]["generation"] = json!(g + 1);
        }

        fn rs_with_image(&self, image: &str) -> &Value {
            self.rss
                .iter()
                .find(|rs| rs["spec"]["template"]["spec"]["containers"][0]["image"] == image)
                .expect("replica set for image")
        }

        fn rollout_done(&self) -> bool {
            let s = &self.d["status"];
            let replicas = self.d["spec"]["replicas"].as_i64().unwrap();
            let progressing = s["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"));
            self.d["metadata"]["generation"].as_i64() <= s["observedGeneration"].as_i64()
                && s["updatedReplicas"].as_i64().unwrap() >= replicas
                && s["replicas"].as_i64() <= s["updatedReplicas"].as_i64()
                && s["availableReplicas"].as_i64() >= s["updatedReplicas"].as_i64()
                && progressing.is_none_or(|c| c["reason"] != TIMED_OUT_REASON)
        }
    }

    fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == kind))
            .unwrap_or(&Value::Null)
    }

    fn names(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::CreateReplicaSet(rs) => format!("create {}", rs["metadata"]["name"]),
                Action::Scale { name, replicas, .. } => format!("scale {name} {replicas}"),
                Action::DeleteReplicaSet { name } => format!("delete {name}"),
                Action::UpdateStatus(_) => "status".into(),
            })
            .collect()
    }

    #[test]
    fn new_deployment_creates_its_replica_set() {
        let d = deployment(3, rolling(json!("25%"), json!("25%")));
        let actions = plan(&d, &[], T0);
        assert_eq!(actions.len(), 2, "{actions:?}");
        let Action::CreateReplicaSet(rs) = &actions[0] else {
            panic!("expected a create: {actions:?}");
        };
        let hash = template_hash(&template("v1"), 0);
        assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(rs["metadata"]["namespace"], "default");
        assert_eq!(rs["apiVersion"], "apps/v1");
        assert_eq!(rs["kind"], "ReplicaSet");
        assert_eq!(
            rs["metadata"]["labels"],
            json!({"app": "web", "pod-template-hash": hash})
        );
        assert_eq!(
            rs["spec"]["selector"],
            json!({"matchLabels": {"app": "web", "pod-template-hash": hash}})
        );
        assert_eq!(
            rs["spec"]["template"]["metadata"]["labels"],
            json!({"app": "web", "pod-template-hash": hash})
        );
        assert_eq!(rs["spec"]["template"]["spec"], template("v1")["spec"]);
        assert_eq!(rs["spec"]["replicas"], 3);
        let owner = &rs["metadata"]["ownerReferences"][0];
        assert_eq!(
            *owner,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-uid",
                   "controller": true, "blockOwnerDeletion": true})
        );
        let annotations = &rs["metadata"]["annotations"];
        assert_eq!(annotations[REVISION_ANNOTATION], "1");
        assert_eq!(annotations[DESIRED_REPLICAS_ANNOTATION], "3");
        assert_eq!(annotations[MAX_REPLICAS_ANNOTATION], "4");

        let Action::UpdateStatus(status) = &actions[1] else {
            panic!("expected a status update: {actions:?}");
        };
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(status["replicas"], 0);
        assert_eq!(status["unavailableReplicas"], 3);
        let progressing = condition(status, "Progressing");
        assert_eq!(progressing["status"], "True");
        assert_eq!(progressing["reason"], "NewReplicaSetCreated");
        assert_eq!(progressing["lastUpdateTime"], format_rfc3339(T0));
        let available = condition(status, "Available");
        assert_eq!(available["status"], "False");
        assert_eq!(available["reason"], "MinimumReplicasUnavailable");
    }

    #[test]
    fn steady_state_is_quiet() {
        let mut sim = Sim::new(deployment(3, rolling(json!("25%"), json!("25%"))));
        sim.settle(3);
        assert!(sim.rollout_done());
        let status = &sim.d["status"];
        assert_eq!(
            condition(status, "Available")["reason"],
            "MinimumReplicasAvailable"
        );
        assert_eq!(
            condition(status, "Progressing")["reason"],
            NEW_RS_AVAILABLE_REASON
        );
        assert_eq!(status["unavailableReplicas"], 0);
        sim.now += 100_000;
        assert_eq!(sim.plan(), Vec::new());
        // Status once on a Deployment that has none yet, then nothing.
        let mut fresh = sim.d.clone();
        fresh.as_object_mut().unwrap().remove("status");
        let actions = plan(&fresh, &sim.rss, sim.now);
        assert!(
            matches!(actions.as_slice(), [Action::UpdateStatus(_)]),
            "{actions:?}"
        );
    }

    #[test]
    fn rolling_update_with_surge_one_keeps_availability() {
        let mut sim = Sim::new(deployment(3, rolling(json!(1), json!(0))));
        sim.settle(3);
        let old = sim.rs_with_image("v1")["metadata"]["name"].clone();
        sim.max_total = 4;
        sim.min_available = 3;
        sim.change_template("v2");
        let actions = sim.settle(1);
        assert!(actions.len() > 4, "the rollout should take several steps");
        assert!(sim.rollout_done(), "status: {}", sim.d["status"]);
        let old = sim.rs(old.as_str().unwrap());
        assert_eq!(old["spec"]["replicas"], 0);
        assert_eq!(old["status"]["replicas"], 0);
        let new = sim.rs_with_image("v2");
        assert_eq!(new["spec"]["replicas"], 3);
        assert_eq!(new["metadata"]["annotations"][REVISION_ANNOTATION], "2");
        let status = &sim.d["status"];
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["replicas"], 3);
        assert_eq!(status["updatedReplicas"], 3);
        assert_eq!(status["availableReplicas"], 3);
        assert_eq!(
            condition(status, "Progressing")["reason"],
            NEW_RS_AVAILABLE_REASON
        );
        assert_eq!(sim.plan(), Vec::new());
    }

    #[test]
    fn max_unavailable_quarter_of_four() {
        let d = deployment(4, rolling(json!("25%"), json!("25%")));
        let parsed = Deploy::parse(&d).unwrap();
        assert_eq!((parsed.max_surge(), parsed.max_unavailable()), (1, 1));
        // Surge rounds up, unavailability down; both zero means one unavailable.
        assert_eq!(scaled_value(Some(&json!("25%")), 3, true), 1);
        assert_eq!(scaled_value(Some(&json!("25%")), 3, false), 0);
        assert_eq!(scaled_value(Some(&json!(2)), 3, false), 2);
        assert_eq!(scaled_value(None, 10, true), 3);
        let zero = Deploy::parse(&deployment(3, rolling(json!(0), json!("0%")))).unwrap();
        assert_eq!((zero.max_surge(), zero.max_unavailable()), (0, 1));

        let mut sim = Sim::new(d);
        sim.settle(4);
        sim.max_total = 5;
        sim.min_available = 3;
        sim.change_template("v2");
        // The first step may take one old replica down right away.
        let first = sim.plan();
        assert!(
            first
                .iter()
                .any(|a| matches!(a, Action::Scale { replicas: 3, .. })),
            "{:?}",
            names(&first)
        );
        sim.apply(&first);
        sim.kubelet(1);
        sim.settle(1);
        assert!(sim.rollout_done(), "status: {}", sim.d["status"]);
        assert_eq!(sim.rs_with_image("v1")["spec"]["replicas"], 0);
        assert_eq!(sim.rs_with_image("v2")["spec"]["replicas"], 4);
    }

    #[test]
    fn unhealthy_old_replicas_are_cleaned_up_first() {
        let mut sim = Sim::new(deployment(4, rolling(json!(0), json!(1))));
        sim.settle(4);
        let old = sim.rs_with_image("v1")["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        // Two old replicas break.
        sim.rs_mut(&old)["status"]["availableReplicas"] = json!(2);
        sim.rs_mut(&old)["status"]["readyReplicas"] = json!(2);
        sim.change_template("v2");
        let actions = sim.plan();
        // Availability is 2 < 3 already: only the unhealthy replicas may go.
        let scaled: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Scale { name, replicas, .. } if *name == old => Some(*replicas),
                _ => None,
            })
            .collect();
        // maxScaledDown = 4 total - 3 minAvailable - 0 new unavailable = 1.
        assert_eq!(scaled, vec![3], "{:?}", names(&actions));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Scale { name, replicas: 1, .. } if *name != old)),
            "{:?}",
            names(&actions)
        );
    }

    #[test]
    fn recreate_scales_old_down_before_new_up() {
        let mut sim = Sim::new(deployment(3, json!({"type": "Recreate"})));
        sim.settle(3);
        let old = sim.rs_with_image("v1")["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        sim.change_template("v2");
        let first = sim.plan();
        assert_eq!(
            names(&first),
            vec![format!("scale {old} 0"), "status".to_string()]
        );
        sim.apply(&first);
        // The old pods are still terminating: nothing new yet.
        sim.now += 5;
        let waiting = sim.plan();
        assert!(
            waiting.iter().all(|a| matches!(a, Action::UpdateStatus(_))),
            "{waiting:?}"
        );
        sim.kubelet(3);
        let next = sim.plan();
        let Some(Action::CreateReplicaSet(rs)) = next.first() else {
            panic!("expected the new replica set: {next:?}");
        };
        assert_eq!(rs["spec"]["replicas"], 3);
        sim.apply(&next);
        sim.kubelet(3);
        sim.settle(3);
        assert!(sim.rollout_done());
        assert_eq!(sim.rs(&old)["spec"]["replicas"], 0);
    }

    #[test]
    fn rollback_reuses_the_old_replica_set() {
        let mut sim = Sim::new(deployment(3, rolling(json!(1), json!(0))));
        sim.settle(3);
        sim.change_template("v2");
        sim.settle(3);
        let v1 = sim.rs_with_image("v1")["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(current_revision(&sim.d, &sim.rss), 2);

        // kubectl rollout undo: the previous revision's template, without the hash label.
        let undo = rollback_template(&sim.rss, 2, 0).expect("previous revision");
        assert_eq!(undo, template("v1"));
        assert_eq!(rollback_template(&sim.rss, 2, 1), Some(template("v1")));
        assert_eq!(rollback_template(&sim.rss, 0, 0), Some(template("v1")));
        assert_eq!(rollback_template(&sim.rss, 2, 7), None);

        sim.d["spec"]["template"] = undo;
        sim.bump_generation();
        let actions = sim.plan();
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::CreateReplicaSet(_))),
            "{actions:?}"
        );
        let Some(Action::Scale {
            name, annotations, ..
        }) = actions.first()
        else {
            panic!("expected the old replica set to be reused: {actions:?}");
        };
        assert_eq!(*name, v1);
        assert!(annotations.contains(&(REVISION_ANNOTATION.to_string(), "3".to_string())));
        assert!(annotations.contains(&(REVISION_HISTORY_ANNOTATION.to_string(), "1".to_string())));
        sim.apply(&actions);
        sim.kubelet(1);
        sim.settle(1);
        assert!(sim.rollout_done());
        assert_eq!(sim.rss.len(), 2);
        assert_eq!(sim.rs(&v1)["spec"]["replicas"], 3);
        assert_eq!(sim.rs_with_image("v2")["spec"]["replicas"], 0);
        assert_eq!(current_revision(&sim.d, &sim.rss), 3);
    }

    #[test]
    fn revision_history_limit_deletes_old_replica_sets() {
        let mut d = deployment(2, rolling(json!(1), json!(0)));
        d["spec"]["revisionHistoryLimit"] = json!(1);
        let mut sim = Sim::new(d);
        sim.settle(2);
        sim.change_template("v2");
        let actions = sim.settle(2);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::DeleteReplicaSet { .. })),
            "one old replica set is within the limit"
        );
        let v1 = sim.rs_with_image("v1")["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        sim.change_template("v3");
        let actions = sim.settle(2);
        assert!(
            actions.contains(&Action::DeleteReplicaSet { name: v1.clone() }),
            "{:?}",
            names(&actions)
        );
        assert_eq!(sim.rss.len(), 2);
        assert!(!sim
            .rss
            .iter()
            .any(|rs| rs["metadata"]["name"] == v1.as_str()));
        assert_eq!(sim.rs_with_image("v2")["spec"]["replicas"], 0);
        assert_eq!(sim.rs_with_image("v3")["spec"]["replicas"], 2);
    }

    #[test]
    fn paused_deployment_does_not_roll_out() {
        let mut sim = Sim::new(deployment(3, rolling(json!(1), json!(0))));
        sim.settle(3);
        sim.d["spec"]["paused"] = json!(true);
        sim.bump_generation();
        sim.change_template("v2");
        let actions = sim.settle(3);
        assert!(
            actions.iter().all(|a| matches!(a, Action::UpdateStatus(_))),
            "{actions:?}"
        );
        assert_eq!(sim.rss.len(), 1);
        let progressing = condition(&sim.d["status"], "Progressing");
        assert_eq!(progressing["reason"], "DeploymentPaused");
        assert_eq!(progressing["status"], "Unknown");
        assert_eq!(sim.d["status"]["observedGeneration"], 3);

        sim.d["spec"]["paused"] = json!(false);
        sim.bump_generation();
        sim.settle(3);
        assert!(sim.rollout_done());
        assert_eq!(sim.rs_with_image("v2")["spec"]["replicas"], 3);
    }

    #[test]
    fn template_hash_is_stable_and_distinguishes_templates() {
        let a: Value = serde_json::from_str(
            r#"{"metadata":{"labels":{"app":"web","tier":"fe"}},"spec":{"containers":[{"name":"app","image":"v1"}],"restartPolicy":"Always"}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"spec":{"restartPolicy":"Always","containers":[{"image":"v1","name":"app"}]},"metadata":{"labels":{"tier":"fe","app":"web"}}}"#,
        )
        .unwrap();
        let h = template_hash(&a, 0);
        assert_eq!(h, template_hash(&b, 0));
        assert_eq!(h, template_hash(&a, 0));
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        let mut c = a.clone();
        c["spec"]["containers"][0]["image"] = json!("v2");
        assert_ne!(h, template_hash(&c, 0));
        assert_ne!(h, template_hash(&a, 1));
        assert_ne!(template_hash(&a, 1), template_hash(&a, 2));
        // The hash label itself does not count.
        let mut labelled = a.clone();
        labelled["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL] = json!(h.clone());
        assert_eq!(h, template_hash(&labelled, 0));
    }

    #[test]
    fn hash_collision_bumps_collision_count() {
        let d = deployment(1, rolling(json!(1), json!(0)));
        let taken = format!("web-{}", template_hash(&template("v1"), 0));
        let squatter = json!({
            "metadata": {"name": taken, "annotations": {REVISION_ANNOTATION: "1"},
                         "ownerReferences": [{"controller": true, "uid": "d-uid"}]},
            "spec": {"replicas": 0, "template": template("other")},
            "status": {"replicas": 0}
        });
        let actions = plan(&d, &[squatter], T0);
        let Some(Action::CreateReplicaSet(rs)) = actions.first() else {
            panic!("{actions:?}");
        };
        assert_eq!(
            rs["metadata"]["name"],
            format!("web-{}", template_hash(&template("v1"), 1))
        );
        assert_eq!(rs["metadata"]["annotations"][REVISION_ANNOTATION], "2");
        let Some(Action::UpdateStatus(status)) = actions.last() else {
            panic!("{actions:?}");
        };
        assert_eq!(status["collisionCount"], 1);
    }

    #[test]
    fn progress_deadline_exceeded() {
        let mut d = deployment(2, rolling(json!(1), json!(0)));
        d["spec"]["progressDeadlineSeconds"] = json!(60);
        let mut sim = Sim::new(d);
        sim.settle(2);
        sim.change_template("broken");
        // The new pods never become available.
        let actions = sim.plan();
        sim.apply(&actions);
        sim.kubelet(0);
        let start = sim.now;
        assert_eq!(progress_deadline_at(&sim.d), Some(start + 61));
        // The new ReplicaSet's pods showing up is progress: the clock restarts.
        sim.now = start + 30;
        let actions = sim.plan();
        sim.apply(&actions);
        let progressing = condition(&sim.d["status"], "Progressing");
        assert_eq!(progressing["reason"], "ReplicaSetUpdated");
        assert_eq!(progressing["lastUpdateTime"], format_rfc3339(start + 30));
        let deadline = progress_deadline_at(&sim.d).unwrap();
        assert_eq!(deadline, start + 91);
        sim.now = deadline - 1;
        assert!(sim.plan().is_empty(), "the deadline is not passed yet");
        sim.now = deadline;
        let actions = sim.plan();
        assert!(
            matches!(actions.as_slice(), [Action::UpdateStatus(_)]),
            "{actions:?}"
        );
        sim.apply(&actions);
        let progressing = condition(&sim.d["status"], "Progressing");
        assert_eq!(progressing["status"], "False");
        assert_eq!(progressing["reason"], TIMED_OUT_REASON);
        assert_eq!(progressing["lastUpdateTime"], format_rfc3339(deadline));
        assert_eq!(progressing["lastTransitionTime"], format_rfc3339(deadline));
        assert!(!sim.rollout_done());
        assert_eq!(progress_deadline_at(&sim.d), None);
        sim.now += 1000;
        assert!(sim.plan().is_empty());

        // Progress again clears it, and the rollout completes.
        sim.kubelet(2);
        sim.settle(2);
        assert!(sim.rollout_done());
        assert_eq!(
            condition(&sim.d["status"], "Progressing")["reason"],
            NEW_RS_AVAILABLE_REASON
        );
    }

    #[test]
    fn scaling_without_rollout_scales_the_new_replica_set() {
        let mut sim = Sim::new(deployment(3, rolling(json!("25%"), json!("25%"))));
        sim.settle(3);
        let name = sim.rs_with_image("v1")["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        sim.d["spec"]["replicas"] = json!(5);
        sim.bump_generation();
        let actions = sim.plan();
        let Some(Action::Scale {
            name: scaled,
            replicas,
            annotations,
        }) = actions.first()
        else {
            panic!("{actions:?}");
        };
        assert_eq!((scaled, *replicas), (&name, 5));
        assert!(annotations.contains(&(DESIRED_REPLICAS_ANNOTATION.to_string(), "5".to_string())));
        assert!(annotations.contains(&(MAX_REPLICAS_ANNOTATION.to_string(), "7".to_string())));
        sim.apply(&actions);
        sim.settle(5);
        assert!(sim.rollout_done());
        assert_eq!(sim.rss.len(), 1);
    }

    #[test]
    fn scaling_during_rollout_is_proportional() {
        let mut sim = Sim::new(deployment(10, rolling(json!(3), json!(2))));
        sim.settle(10);
        sim.change_template("broken");
        // The new pods never become available: the rollout stalls at 8 old + 5 new.
        sim.settle(0);
        let old = sim.rs_with_image("v1")["spec"]["replicas"]
            .as_i64()
            .unwrap();
        let new = sim.rs_with_image("broken")["spec"]["replicas"]
            .as_i64()
            .unwrap();
        assert_eq!((old, new), (8, 5));
        sim.d["spec"]["replicas"] = json!(15);
        sim.bump_generation();
        let actions = sim.plan();
        sim.apply(&actions);
        let old = sim.rs_with_image("v1")["spec"]["replicas"]
            .as_i64()
            .unwrap();
        let new = sim.rs_with_image("broken")["spec"]["replicas"]
            .as_i64()
            .unwrap();
        assert_eq!(old + new, 18, "{:?}", names(&actions));
        assert_eq!((old, new), (11, 7));
    }

    #[test]
    fn garbage_does_not_panic() {
        let odd = [
            json!(null),
            json!(1),
            json!("x"),
            json!([]),
            json!({}),
            json!({"metadata": 5}),
            json!({"metadata": {"name": 5}}),
            json!({"metadata": {"name": "x"}, "spec": 1}),
            json!({"metadata": {"name": "x", "generation": 2}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {}}}),
            json!({"metadata": {"name": "x", "generation": "2"}, "spec": {"replicas": -4, "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": 3}, "strategy": {"type": 7, "rollingUpdate": {"maxSurge": "x%", "maxUnavailable": [1]}},
                "revisionHistoryLimit": -1, "progressDeadlineSeconds": "soon"}, "status": {"conditions": [1, {"type": "Progressing", "lastUpdateTime": "garbage"}], "collisionCount": i64::MAX}}),
            json!({"metadata": {"name": "x"}, "spec": {"replicas": 1e300, "selector": {"matchLabels": {"a": "b"}}, "template": {"spec": null},
                "strategy": {"rollingUpdate": {"maxSurge": u64::MAX, "maxUnavailable": "100%"}}}}),
        ];
        let rss = [
            json!(null),
            json!({"metadata": {"name": "r1", "annotations": {REVISION_ANNOTATION: "x"}}, "spec": {"replicas": "3", "template": 4}, "status": 9}),
            json!({"metadata": {"name": "r2", "annotations": {REVISION_ANNOTATION: i64::MAX.to_string()},
                   "creationTimestamp": "2024-13-99T99:99:99Z"}, "spec": {"replicas": i64::MAX, "template": {}},
                   "status": {"replicas": -1, "availableReplicas": u64::MAX, "conditions": [{"type": "ReplicaFailure"}]}}),
        ];
        for d in &odd {
            for now in [i64::MIN, -1, 0, T0, i64::MAX] {
                let _ = plan(d, &rss, now);
                let _ = plan(d, &[], now);
                let _ = progress_deadline_at(d);
                let _ = current_revision(d, &rss);
            }
        }
        for to in [-1, 0, 1, i64::MAX] {
            let _ = rollback_template(&rss, 0, to);
            let _ = rollback_template(&odd, i64::MIN, to);
        }
        let _ = template_hash(&json!(null), i64::MIN);
        let _ = format_rfc3339(i64::MAX);
        let _ = format_rfc3339(i64::MIN);
        assert_eq!(plan(&json!(null), &[], 0), Vec::new());
    }

    #[test]
    fn empty_selector_only_observes_the_generation() {
        let mut d = deployment(3, rolling(json!(1), json!(0)));
        d["spec"]["selector"] = json!({});
        let actions = plan(&d, &[], T0);
        assert_eq!(actions.len(), 1);
        let Action::UpdateStatus(status) = &actions[0] else {
            panic!("{actions:?}");
        };
        assert_eq!(status["observedGeneration"], 1);
        d["status"] = status.clone();
        assert!(plan(&d, &[], T0).is_empty());
    }

    #[test]
    fn rfc3339_round_trips() {
        for t in [0, 1, 951_782_400, T0, 4_102_444_800, -86_400] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(format_rfc3339(T0), "2023-11-14T22:13:20Z");
        assert_eq!(parse_rfc3339("2023-11-14T23:13:20.123+01:00"), Some(T0));
        assert_eq!(parse_rfc3339("2023-11-14"), None);
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20"), None);
    }
}
