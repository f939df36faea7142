//! Pods: defaults of the spec and its containers, Priority admission, the Pending status a pod
//! starts with, graceful deletion of scheduled pods, the spec's update rules, and the columns
//! of `kubectl get pods`.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta_v1;
use serde_json::{json, Value};

use super::{Admission, Strategy};
use crate::api::meta;
use crate::api::resource::ResourceInfo;
use crate::api::status::Status;
use crate::api::wire::DeleteOptions;
use crate::apiserver::http::table::{self, age, col, i, or_none, s};
use crate::apiserver::patch::RootKind;
use crate::apiserver::registry::set_condition;
use crate::apiserver::validation::pod_spec::*;
use crate::apiserver::validation::*;

/// The `pods` strategy.
pub struct Pod;

impl Strategy for Pod {
    fn tracks_generation(&self) -> bool {
        true
    }

    /// The pod spec's defaults, then kube's `SetDefaults_Pod`: service links on, and each
    /// container's requests defaulted from its limits.
    fn defaults(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec") else {
            return;
        };
        spec_defaults(spec);
        let Some(s) = spec.as_object_mut() else {
            return;
        };
        s.entry("enableServiceLinks").or_insert(json!(true));
        for list in ["containers", "initContainers"] {
            for c in s
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                requests_from_limits(c);
            }
        }
    }

    /// Priority admission, then DefaultTolerationSeconds: a pod that does not tolerate
    /// not-ready or unreachable nodes tolerates them for the configured time (300 s).
    fn admit_create(&self, obj: &mut Value, admission: &Admission) -> Result<(), Status> {
        admit_priority(obj)?;
        default_toleration_seconds(obj, admission.toleration_seconds);
        Ok(())
    }

    /// A status subresource write keeps the pod's QoS class when it leaves it out (it is
    /// computed once, at create).
    fn prepare_for_update(
        &self,
        info: &ResourceInfo,
        sub: Option<&str>,
        old: &Value,
        new: &mut Value,
    ) -> Result<(), Status> {
        super::prepare_for_update(info, sub, old, new)?;
        if let (Some(qos), Some(status)) = (
            old.pointer("/status/qosClass"),
            new.get_mut("status").and_then(Value::as_object_mut),
        ) {
            status.entry("qosClass").or_insert_with(|| qos.clone());
        }
        Ok(())
    }

    fn initial_status(&self, obj: &mut Value) {
        let qos = qos_class(obj);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        if obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            set_condition(obj, "PodScheduled", "True", None);
        }
    }

    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::<core::Pod>(NameRule::Subdomain, info.namespaced, obj, old)
    }

    /// Only scheduled pods that have not ended terminate gracefully: the kubelet must stop
    /// their containers first.
    fn grace_period(&self, obj: &Value, opts: &DeleteOptions) -> i64 {
        let scheduled = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let terminal = matches!(
            obj.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        if !scheduled || terminal {
            return 0;
        }
        opts.grace_period_seconds
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(),
            col("Ready", "string", 0, "Ready containers / containers."),
            col(
                "Status",
                "string",
                0,
                "The aggregate state of the containers.",
            ),
            col("Restarts", "string", 0, "Container restarts."),
            table::age_column(),
            col("IP", "string", 1, "The pod's IP address."),
            col("Node", "string", 1, "The node the pod is bound to."),
            col(
                "Nominated Node",
                "string",
                1,
                "The node the pod is nominated for.",
            ),
            col(
                "Readiness Gates",
                "string",
                1,
                "Readiness gates passed / declared.",
            ),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let total = obj
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(Vec::len)
            .unwrap_or(0);
        let statuses = obj
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ready = statuses.iter().filter(|c| c["ready"] == true).count();
        let restarts: i64 = statuses.iter().map(|c| i(c, "/restartCount")).sum();
        let gates = obj
            .pointer("/spec/readinessGates")
            .and_then(Value::as_array)
            .map(Vec::len)
            .unwrap_or(0);
        vec![
            json!(meta::name(obj)),
            json!(format!("{ready}/{total}")),
            json!(pod_status(obj)),
            json!(restarts.to_string()),
            json!(age(obj)),
            json!(or_none(s(obj, "/status/podIP"))),
            json!(or_none(s(obj, "/spec/nodeName"))),
            json!(or_none(s(obj, "/status/nominatedNodeName"))),
            json!(if gates == 0 {
                "<none>".to_string()
            } else {
                format!("0/{gates}")
            }),
        ]
    }

    fn patch_root(&self) -> RootKind {
        RootKind::Pod
    }
}

impl Checked for core::Pod {
    fn object_meta(&self) -> &meta_v1::ObjectMeta {
        &self.metadata
    }

    fn check(&self, _obj: &Value, errs: &mut Errs) {
        let default = core::PodSpec::default();
        validate_pod_spec(self.spec.as_ref().unwrap_or(&default), "spec", errs);
    }

    fn check_update(&self, old: &Self, errs: &mut Errs) {
        validate_pod_update(old, self, errs);
    }
}

/// The pod STATUS column: phase, or the reason a container waits or ended, or Terminating.
fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut reason = s(pod, "/status/reason").to_string();
    if reason.is_empty() {
        reason = s(pod, "/status/phase").to_string();
    }
    // An init container that has not succeeded names the state (kube's printPod):
    // Init:Error, Init:CrashLoopBackOff, or Init:<done>/<all>.
    let inits = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array);
    let all_inits = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    for (i, c) in inits.into_iter().flatten().enumerate() {
        if c.pointer("/state/terminated/exitCode")
            .and_then(Value::as_i64)
            == Some(0)
        {
            continue;
        }
        let waiting = s(c, "/state/waiting/reason");
        if c.pointer("/state/terminated").is_some() {
            let why = s(c, "/state/terminated/reason");
            return if !why.is_empty() {
                format!("Init:{why}")
            } else {
                match c
                    .pointer("/state/terminated/signal")
                    .and_then(Value::as_i64)
                {
                    Some(sig) if sig != 0 => format!("Init:Signal:{sig}"),
                    _ => format!(
                        "Init:ExitCode:{}",
                        c.pointer("/state/terminated/exitCode")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                    ),
                }
            };
        }
        if !waiting.is_empty() && waiting != "PodInitializing" {
            return format!("Init:{waiting}");
        }
        return format!("Init:{i}/{all_inits}");
    }
    if let Some(cs) = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
    {
        for c in cs.iter().rev() {
            let waiting = s(c, "/state/waiting/reason");
            let terminated = s(c, "/state/terminated/reason");
            if !waiting.is_empty() {
                reason = waiting.into();
            } else if !terminated.is_empty() && c.pointer("/state/running").is_none() {
                reason = terminated.into();
            }
        }
    }
    if reason.is_empty() {
        "Pending".into()
    } else {
        reason
    }
}

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds`";

fn validate_pod_update(old: &core::Pod, new: &core::Pod, errs: &mut Errs) {
    let os = old.spec.clone().unwrap_or_default();
    let ns = new.spec.clone().unwrap_or_default();

    // activeDeadlineSeconds may be set or lowered, never raised or removed.
    match (os.active_deadline_seconds, ns.active_deadline_seconds) {
        (Some(o), Some(n)) if n > o && (0..=i64::from(i32::MAX)).contains(&n) => {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                n.to_string(),
                "must be less than or equal to previous value",
            ));
        }
        (Some(_), None) => errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            "null".into(),
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }

    // Existing tolerations stay (tolerationSeconds may change); new ones may be added.
    let new_tolerations = ns.tolerations.clone().unwrap_or_default();
    for old_t in os.tolerations.iter().flatten() {
        let kept = new_tolerations.iter().any(|n| {
            let mut o = old_t.clone();
            o.toleration_seconds = n.toleration_seconds;
            &o == n
        });
        if !kept {
            errs.push(FieldError::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }

    // Everything else in spec must be unchanged.
    let mut masked_old = os.clone();
    let mut masked_new = ns.clone();
    for (i, c) in masked_new.containers.iter_mut().enumerate() {
        if let Some(o) = os.containers.get(i) {
            c.image.clone_from(&o.image);
        }
    }
    if let (Some(new_init), Some(old_init)) = (
        masked_new.init_containers.as_mut(),
        os.init_containers.as_ref(),
    ) {
        for (i, c) in new_init.iter_mut().enumerate() {
            if let Some(o) = old_init.get(i) {
                c.image.clone_from(&o.image);
            }
        }
    }
    masked_new.active_deadline_seconds = os.active_deadline_seconds;
    masked_new.tolerations.clone_from(&os.tolerations);
    masked_new.termination_grace_period_seconds = os.termination_grace_period_seconds;
    if os.node_name.as_deref().unwrap_or_default().is_empty() {
        // Binding: nodeName may go from empty to set.
        masked_new.node_name = None;
        masked_old.node_name = None;
    }
    if masked_old == masked_new {
        return;
    }
    // Compare as the server would after defaulting: absent defaulted fields,
    // empty lists and maps, and false flags equal their default forms.
    let (Ok(mut a), Ok(mut b)) = (
        serde_json::to_value(&masked_old),
        serde_json::to_value(&masked_new),
    ) else {
        errs.push(FieldError::forbidden("spec", POD_UPDATE_FORBIDDEN));
        return;
    };
    for v in [&mut a, &mut b] {
        default_pod_spec_json(v);
        normalize_json(v);
    }
    if a != b {
        let mut changed = Vec::new();
        json_diff(&a, &b, "spec", &mut changed);
        let mut msg = POD_UPDATE_FORBIDDEN.to_string();
        if !changed.is_empty() {
            let shown: Vec<String> = changed.iter().take(10).map(|c| format!("`{c}`")).collect();
            let _ = write!(msg, "; changed: {}", shown.join(", "));
            if changed.len() > 10 {
                msg.push_str(", ...");
            }
        }
        errs.push(FieldError::forbidden("spec", &msg));
    }
}

/// The PriorityClasses every cluster has (Skiff serves no others yet).
const SYSTEM_PRIORITY_CLASSES: [(&str, i64); 2] = [
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

/// kube's Priority admission on a pod create: `spec.priority` is computed from
/// `spec.priorityClassName` (0 without one), never given; an unknown class is 403.
pub(crate) fn admit_priority(pod: &mut Value) -> Result<(), Status> {
    let name = meta::name(pod).to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let class = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let computed = if class.is_empty() {
        0
    } else {
        match SYSTEM_PRIORITY_CLASSES.iter().find(|(c, _)| *c == class) {
            Some((_, p)) => *p,
            None => {
                return Err(Status::forbidden_on(
                    "",
                    "pods",
                    &name,
                    &format!("no PriorityClass with name {class} was found"),
                ))
            }
        }
    };
    if let Some(given) = spec.get("priority").filter(|v| !v.is_null()) {
        if given.as_i64() != Some(computed) {
            return Err(Status::forbidden_on(
                "",
                "pods",
                &name,
                &format!(
                    "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {computed} from the given PriorityClass name"
                ),
            ));
        }
    }
    spec.insert("priority".into(), json!(computed));
    spec.entry("preemptionPolicy")
        .or_insert(json!("PreemptLowerPriority"));
    Ok(())
}

/// kube's `SetDefaults_Pod`: a resource with a limit and no request requests its limit.
fn requests_from_limits(container: &mut Value) {
    let Some(res) = container
        .get_mut("resources")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    let requests = res.entry("requests").or_insert_with(|| json!({}));
    if let Some(r) = requests.as_object_mut() {
        for (k, v) in limits {
            r.entry(k).or_insert(v);
        }
    }
}

/// The node conditions a pod is evicted for once its toleration runs out.
const NOT_READY_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// kube's DefaultTolerationSeconds admission: a NoExecute toleration of each not-ready taint
/// for `seconds`, unless the pod already tolerates it (by key, or by an empty key, with the
/// NoExecute or an empty effect).
fn default_toleration_seconds(pod: &mut Value, seconds: i64) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    let Some(list) = list.as_array_mut() else {
        return; // validation refuses tolerations that are not a list
    };
    for taint in NOT_READY_TAINTS {
        let tolerated = list.iter().any(|t| {
            let key = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (key == taint || key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        });
        if !tolerated {
            list.push(json!({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}

/// A pod's QoS class, as kube's `GetPodQOS` computes it from its containers' cpu and memory
/// requests and limits: none at all is BestEffort; limits on both for every container, equal
/// to the requests, is Guaranteed; anything else is Burstable.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| pod.pointer(&format!("/spec/{l}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let quantity = |c: &Value, kind: &str, res: &str| {
        c.pointer(&format!("/resources/{kind}/{res}"))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .and_then(|s| parse_quantity(&s))
            .filter(|q| *q != parse_quantity("0").expect("zero parses"))
    };
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        for res in ["cpu", "memory"] {
            let (req, lim) = (quantity(c, "requests", res), quantity(c, "limits", res));
            any |= req.is_some() || lim.is_some();
            match (req, lim) {
                (Some(r), Some(l)) if r == l => {}
                (None, Some(_)) => {}
                _ => guaranteed = false,
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Writes every quantity of a container's resources in kube's canonical form.
fn canonical_resources(container: &mut serde_json::Map<String, Value>) {
    let Some(res) = container
        .get_mut("resources")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for kind in ["requests", "limits"] {
        for v in res
            .get_mut(kind)
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            let raw = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => continue,
            };
            if let Some(c) = canonical_quantity(&raw) {
                *v = Value::String(c);
            }
        }
    }
}

/// Pod spec defaults, shared by pod templates (kube's `SetDefaults_PodSpec` and
/// `SetDefaults_Container`).
pub(crate) fn spec_defaults(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    s.entry("restartPolicy").or_insert(json!("Always"));
    s.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    s.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    s.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    s.entry("securityContext").or_insert(json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
                canonical_resources(c);
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                    }
                }
                let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                let latest = !image.rsplit('/').next().unwrap_or("").contains(':')
                    || image.ends_with(":latest");
                c.entry("imagePullPolicy").or_insert(json!(if latest {
                    "Always"
                } else {
                    "IfNotPresent"
                }));
            }
        }
    }
}
