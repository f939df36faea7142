//! The pure part of Skiff's scheduler: the filters and scores Kubernetes' default
//! profile applies to a Pod and a set of Nodes, over the JSON of core/v1 objects held as
//! `serde_json::Value`. It mirrors the semantics of the upstream plugins
//! `NodeUnschedulable`, `NodeName`, `TaintToleration` (plus a readiness check standing
//! in for the `node.kubernetes.io/not-ready` taint), `NodeAffinity`, `NodePorts` and
//! `NodeResourcesFit` for filtering, and `NodeResourcesFit` (LeastAllocated),
//! `NodeResourcesBalancedAllocation` and owner spreading for scoring, and it produces
//! the same "0/N nodes are available: ..." message Kubernetes puts in the
//! `FailedScheduling` event. Nothing here does I/O or panics on malformed objects:
//! missing fields and wrong types simply read as absent. For throughput, every node is
//! summarised once into a [`NodeSummary`] that is kept up to date incrementally
//! ([`NodeSummary::add_pod`], [`NodeSummary::remove_pod`]) and every pod into a
//! [`PodSummary`], so a scheduling decision touches no quantity strings at all; the
//! `Value`-based functions are thin wrappers that build those summaries on the fly.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value};

/// Highest score a node can get.
pub const MAX_NODE_SCORE: i64 = 100;
/// CPU (millicores) counted for scoring a container that requests no CPU, as Kubernetes does.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory (bytes) counted for scoring a container that requests no memory, as Kubernetes does.
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;
/// The taint key (and toleration key) Kubernetes uses for cordoned nodes.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The taint key (and toleration key) Kubernetes uses for nodes that are not Ready.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The message Kubernetes reports when the cluster has no nodes at all.
pub const NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";

const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
const REASON_NOT_READY: &str = "node(s) had condition NotReady";
const REASON_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
const REASON_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
const REASON_TOO_MANY_PODS: &str = "Too many pods";
const REASON_CPU: &str = "Insufficient cpu";
const REASON_MEMORY: &str = "Insufficient memory";
const REASON_POD_AFFINITY: &str = "node(s) didn't match pod affinity rules";
const REASON_POD_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
const REASON_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
const REASON_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
const PREEMPTION_NO_VICTIMS: &str = "No preemption victims found for incoming pod";
const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// Weights of the score plugins, as in Kubernetes' default profile.
const WEIGHT_LEAST_ALLOCATED: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_SPREAD: i64 = 2;

/// Resources in the scheduler's units: millicores and bytes, plus pod count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Number of pods.
    pub pods: i64,
}

impl Resources {
    /// Component-wise saturating sum.
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(other.milli_cpu),
            memory: self.memory.saturating_add(other.memory),
            pods: self.pods.saturating_add(other.pods),
        }
    }

    /// Component-wise saturating difference.
    pub fn minus(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_sub(other.milli_cpu),
            memory: self.memory.saturating_sub(other.memory),
            pods: self.pods.saturating_sub(other.pods),
        }
    }

    /// Component-wise maximum.
    pub fn max_with(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
            pods: self.pods.max(other.pods),
        }
    }
}

// ---------------------------------------------------------------------------
// Quantities
// ---------------------------------------------------------------------------

/// Parses a Kubernetes quantity ("100m", "1", "1.5", "64Mi", "1G", "2e3", "1Ki"…) to
/// millicores (`cpu` = true) or bytes (`cpu` = false). None if malformed.
///
/// Fractions are rounded up, as `resource.Quantity`'s `MilliValue`/`Value` do, and
/// values beyond `i64` saturate. Only the first 20 significant digits are exact.
pub fn parse_quantity(q: &str, cpu: bool) -> Option<i64> {
    const MAX_DIGITS: u32 = 20;
    let bytes = q.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let mut mantissa: u128 = 0;
    let mut significant = 0u32;
    let mut exp10: i64 = 0;
    let mut truncated = false;
    let mut seen_digit = false;
    let mut seen_dot = false;
    while let Some(&b) = bytes.get(i) {
        if b.is_ascii_digit() {
            seen_digit = true;
            let d = u128::from(b - b'0');
            if significant < MAX_DIGITS {
                if mantissa != 0 || d != 0 {
                    mantissa = mantissa * 10 + d;
                    significant += 1;
                }
                if seen_dot {
                    exp10 -= 1;
                }
            } else {
                truncated |= d != 0;
                if !seen_dot {
                    exp10 += 1;
                }
            }
        } else if b == b'.' && !seen_dot {
            seen_dot = true;
        } else {
            break;
        }
        i += 1;
    }
    if !seen_digit {
        return None;
    }
    let suffix = q.get(i..)?;
    let (dec, bin): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            let digits = rest
                .strip_prefix('-')
                .or_else(|| rest.strip_prefix('+'))
                .unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (rest.parse::<i32>().ok()?.into(), 0)
        }
    };
    let exponent = exp10 + dec + if cpu { 3 } else { 0 };
    // mantissa < 10^20 and 2^60 < 1.2 * 10^18, so this fits in a u128.
    let m = mantissa << bin;
    let (floor, ceil): (u128, u128) = if m == 0 {
        (0, 0)
    } else if exponent >= 0 {
        match u32::try_from(exponent)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
            .and_then(|p| m.checked_mul(p))
        {
            Some(v) => (v, v.saturating_add(u128::from(truncated))),
            None => (u128::MAX, u128::MAX),
        }
    } else {
        match u32::try_from(-exponent)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
        {
            Some(p) => {
                let f = m / p;
                let exact = m.is_multiple_of(p) && !truncated;
                (f, if exact { f } else { f + 1 })
            }
            // Smaller than one unit: rounds up to one.
            None => (0, 1),
        }
    };
    Some(if negative {
        // ceil(-x) = -floor(x)
        i64::try_from(floor).map_or(i64::MIN, |v| -v)
    } else {
        i64::try_from(ceil).unwrap_or(i64::MAX)
    })
}

/// A quantity held in JSON: normally a string, but numbers are accepted too.
fn quantity_value(v: &Value, cpu: bool) -> Option<i64> {
    match v {
        Value::String(s) => parse_quantity(s, cpu),
        Value::Number(n) => parse_quantity(&n.to_string(), cpu),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Small JSON helpers
// ---------------------------------------------------------------------------

/// `v[key]` as a string slice, "" when absent or not a string.
fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A scalar as text: strings as they are, null as "", anything else as its JSON.
fn text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

fn text_at<'a>(v: &'a Value, key: &str) -> Cow<'a, str> {
    v.get(key).map_or(Cow::Borrowed(""), text)
}

fn array_at<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

fn spec(v: &Value) -> &Value {
    v.get("spec").unwrap_or(&Value::Null)
}

fn metadata(v: &Value) -> &Value {
    v.get("metadata").unwrap_or(&Value::Null)
}

/// Whether a pod has finished (phase Succeeded or Failed) and so holds no resources.
pub fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.get("status").map(|s| str_at(s, "phase")),
        Some("Succeeded" | "Failed")
    )
}

/// A pod's identity: "namespace/name", else "uid:<uid>", else None.
pub fn pod_key(pod: &Value) -> Option<String> {
    let meta = metadata(pod);
    let name = str_at(meta, "name");
    if !name.is_empty() {
        return Some(format!("{}/{}", str_at(meta, "namespace"), name));
    }
    let uid = str_at(meta, "uid");
    (!uid.is_empty()).then(|| format!("uid:{uid}"))
}

/// The key pods are spread by: the uid of the controller ownerReference, or for pods
/// without a controller the namespace plus the full label set; None for a pod with
/// neither.
pub fn owner_key(pod: &Value) -> Option<String> {
    let meta = metadata(pod);
    for reference in array_at(meta, "ownerReferences") {
        if reference.get("controller").and_then(Value::as_bool) == Some(true) {
            let uid = str_at(reference, "uid");
            if !uid.is_empty() {
                return Some(format!("uid:{uid}"));
            }
        }
    }
    let labels = meta.get("labels").and_then(Value::as_object)?;
    if labels.is_empty() {
        return None;
    }
    let mut pairs: Vec<(&str, Cow<'_, str>)> =
        labels.iter().map(|(k, v)| (k.as_str(), text(v))).collect();
    pairs.sort();
    let mut key = format!("labels:{}", str_at(meta, "namespace"));
    for (k, v) in pairs {
        key.push('\u{0}');
        key.push_str(k);
        key.push('=');
        key.push_str(&v);
    }
    Some(key)
}

/// A fixed-key 64-bit hash of a spreading key, so that the hot path compares integers
/// instead of hashing the key once per node.
fn fingerprint(key: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

// ---------------------------------------------------------------------------
// Pod requests and node allocatable
// ---------------------------------------------------------------------------

/// The cpu and memory requests of a `resources` block (container or pod level),
/// falling back to limits per resource as Kubernetes defaults them; None for a resource
/// that is neither requested nor limited.
fn requests_of(resources: &Value) -> (Option<i64>, Option<i64>) {
    let requests = resources.get("requests").unwrap_or(&Value::Null);
    let limits = resources.get("limits").unwrap_or(&Value::Null);
    let get = |name: &str, cpu: bool| {
        requests
            .get(name)
            .or_else(|| limits.get(name))
            .map(|q| quantity_value(q, cpu).unwrap_or(0))
    };
    (get("cpu", true), get("memory", false))
}

/// Sums containers, folds in init containers (sidecars with restartPolicy Always run
/// alongside everything after them) and takes pod-level resources and overhead into
/// account. `non_zero` substitutes Kubernetes' scoring defaults for missing requests.
fn compute_pod_requests(pod: &Value, non_zero: bool) -> Resources {
    let s = spec(pod);
    let per_container = |c: &Value| {
        let (cpu, memory) = requests_of(c.get("resources").unwrap_or(&Value::Null));
        let (dc, dm) = if non_zero {
            (DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST)
        } else {
            (0, 0)
        };
        Resources {
            milli_cpu: cpu.unwrap_or(dc),
            memory: memory.unwrap_or(dm),
            pods: 0,
        }
    };
    let mut total = Resources::default();
    for c in array_at(s, "containers") {
        total = total.plus(per_container(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in array_at(s, "initContainers") {
        let r = per_container(c);
        let effective = if str_at(c, "restartPolicy") == "Always" {
            total = total.plus(r);
            sidecars = sidecars.plus(r);
            sidecars
        } else {
            r.plus(sidecars)
        };
        init_max = init_max.max_with(effective);
    }
    total = total.max_with(init_max);
    // Pod-level resources (spec.resources), when set, replace the container aggregate.
    if let Some(pod_level) = s.get("resources").filter(|v| v.is_object()) {
        let (cpu, memory) = requests_of(pod_level);
        if let Some(cpu) = cpu {
            total.milli_cpu = cpu;
        }
        if let Some(memory) = memory {
            total.memory = memory;
        }
    }
    if let Some(overhead) = s.get("overhead") {
        let get = |name: &str, cpu: bool| {
            overhead
                .get(name)
                .and_then(|q| quantity_value(q, cpu))
                .unwrap_or(0)
        };
        total.milli_cpu = total.milli_cpu.saturating_add(get("cpu", true));
        total.memory = total.memory.saturating_add(get("memory", false));
    }
    total.pods = 1;
    total
}

/// The pod's requests as the scheduler counts them: sum over containers of requests
/// (limits when requests absent, as Kubernetes defaults them), max with each init
/// container, plus pod overhead; pods=1.
pub fn pod_requests(pod: &serde_json::Value) -> Resources {
    compute_pod_requests(pod, false)
}

/// Like [`pod_requests`], but with Kubernetes' scoring defaults (100m CPU, 200Mi
/// memory) for containers that request nothing; used by the LeastAllocated score.
pub fn pod_non_zero_requests(pod: &serde_json::Value) -> Resources {
    compute_pod_requests(pod, true)
}

/// status.allocatable (falling back to capacity) of a node.
pub fn node_allocatable(node: &serde_json::Value) -> Resources {
    let status = node.get("status").unwrap_or(&Value::Null);
    let allocatable = status.get("allocatable").unwrap_or(&Value::Null);
    let capacity = status.get("capacity").unwrap_or(&Value::Null);
    let get = |name: &str, cpu: bool| {
        allocatable
            .get(name)
            .and_then(|q| quantity_value(q, cpu))
            .or_else(|| capacity.get(name).and_then(|q| quantity_value(q, cpu)))
            .unwrap_or(0)
    };
    Resources {
        milli_cpu: get("cpu", true),
        memory: get("memory", false),
        pods: get("pods", false),
    }
}

fn node_ready(node: &Value) -> bool {
    let status = node.get("status").unwrap_or(&Value::Null);
    array_at(status, "conditions")
        .iter()
        .find(|c| str_at(c, "type") == "Ready")
        .is_some_and(|c| str_at(c, "status") == "True")
}

/// A host port as (hostIP, protocol, port), normalised like Kubernetes: an empty
/// hostIP is 0.0.0.0 and an empty protocol TCP.
pub type HostPort = (String, String, i64);

/// The host ports a pod's containers claim. With hostNetwork, a container port without
/// an explicit hostPort claims the same port on the host, as the API server defaults it.
fn pod_host_ports(pod: &Value) -> Vec<HostPort> {
    let s = spec(pod);
    let host_network = s.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    let mut out = Vec::new();
    for c in array_at(s, "containers") {
        for p in array_at(c, "ports") {
            let mut port = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if port <= 0 && host_network {
                port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
            }
            if port <= 0 {
                continue;
            }
            let ip = str_at(p, "hostIP");
            let protocol = str_at(p, "protocol");
            out.push((
                if ip.is_empty() { "0.0.0.0" } else { ip }.to_string(),
                if protocol.is_empty() { "TCP" } else { protocol }.to_string(),
                port,
            ));
        }
    }
    out
}

fn ports_conflict(used: &[HostPort], wanted: &[HostPort]) -> bool {
    wanted.iter().any(|(ip, protocol, port)| {
        used.iter().any(|(uip, uprotocol, uport)| {
            uport == port
                && uprotocol == protocol
                && (ip == "0.0.0.0" || uip == "0.0.0.0" || uip == ip)
        })
    })
}

// ---------------------------------------------------------------------------
// Tolerations and node selectors
// ---------------------------------------------------------------------------

/// One of a pod's tolerations; absent fields are empty strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toleration {
    /// Taint key; empty (with operator Exists) matches every key.
    pub key: String,
    /// "Equal" (or empty) or "Exists".
    pub operator: String,
    /// Value compared under Equal.
    pub value: String,
    /// Effect; empty matches every effect.
    pub effect: String,
}

impl Toleration {
    fn parse(v: &Value) -> Toleration {
        Toleration {
            key: str_at(v, "key").to_string(),
            operator: str_at(v, "operator").to_string(),
            value: text_at(v, "value").into_owned(),
            effect: str_at(v, "effect").to_string(),
        }
    }

    /// Whether this toleration tolerates the taint, with Kubernetes' rules.
    pub fn tolerates(&self, key: &str, value: &str, effect: &str) -> bool {
        if !self.effect.is_empty() && self.effect != effect {
            return false;
        }
        if !self.key.is_empty() && self.key != key {
            return false;
        }
        match self.operator.as_str() {
            "" | "Equal" => self.value == value,
            "Exists" => true,
            _ => false,
        }
    }
}

/// Operator of a node selector requirement; `Invalid` covers unknown operators and
/// malformed values (a requirement that never matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// Value is one of the values.
    In,
    /// Absent, or value is none of the values.
    NotIn,
    /// Key present.
    Exists,
    /// Key absent.
    DoesNotExist,
    /// Value, as an integer, greater than the single value.
    Gt(i64),
    /// Value, as an integer, less than the single value.
    Lt(i64),
    /// Malformed requirement.
    Invalid,
}

/// One matchExpressions/matchFields entry of a node selector term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Label key, or field path for matchFields.
    pub key: String,
    /// The operator, with Gt/Lt operands pre-parsed.
    pub operator: Operator,
    /// The values for In/NotIn.
    pub values: Vec<String>,
}

impl Requirement {
    fn parse(v: &Value) -> Requirement {
        let values: Vec<String> = array_at(v, "values")
            .iter()
            .map(|x| text(x).into_owned())
            .collect();
        let single_int = || match values.as_slice() {
            [one] => one.parse::<i64>().ok(),
            _ => None,
        };
        let operator = match str_at(v, "operator") {
            "In" if !values.is_empty() => Operator::In,
            "NotIn" if !values.is_empty() => Operator::NotIn,
            "Exists" if values.is_empty() => Operator::Exists,
            "DoesNotExist" if values.is_empty() => Operator::DoesNotExist,
            "Gt" => single_int().map_or(Operator::Invalid, Operator::Gt),
            "Lt" => single_int().map_or(Operator::Invalid, Operator::Lt),
            _ => Operator::Invalid,
        };
        Requirement {
            key: str_at(v, "key").to_string(),
            operator,
            values,
        }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Operator::NotIn => value.is_none_or(|v| self.values.iter().all(|x| x != v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > n),
            Operator::Lt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < n),
            Operator::Invalid => false,
        }
    }
}

/// A nodeSelectorTerm: all its requirements must hold; an empty term matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSelectorTerm {
    /// Requirements on node labels.
    pub match_expressions: Vec<Requirement>,
    /// Requirements on node fields (only `metadata.name` is supported).
    pub match_fields: Vec<Requirement>,
}

impl NodeSelectorTerm {
    fn parse(v: &Value) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: array_at(v, "matchExpressions")
                .iter()
                .map(Requirement::parse)
                .collect(),
            match_fields: array_at(v, "matchFields")
                .iter()
                .map(Requirement::parse)
                .collect(),
        }
    }

    fn matches(&self, node: &NodeSummary) -> bool {
        if self.match_expressions.is_empty() && self.match_fields.is_empty() {
            return false;
        }
        self.match_expressions
            .iter()
            .all(|r| r.matches(label(&node.labels, &r.key).as_deref()))
            && self
                .match_fields
                .iter()
                .all(|r| r.key == "metadata.name" && r.matches(Some(node.name.as_str())))
    }
}

fn label<'a>(labels: &'a Map<String, Value>, key: &str) -> Option<Cow<'a, str>> {
    labels.get(key).map(text)
}

// ---------------------------------------------------------------------------
// Summaries
// ---------------------------------------------------------------------------

/// Everything the filters and scores need to know about a pod, computed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSummary {
    /// Requests as counted by the fit filter and balanced allocation.
    pub requests: Resources,
    /// Requests with scoring defaults for containers that request nothing.
    pub non_zero_requests: Resources,
    /// Host ports the pod claims.
    pub host_ports: Vec<HostPort>,
    /// spec.tolerations.
    pub tolerations: Vec<Toleration>,
    /// spec.nodeSelector as (key, value) pairs.
    pub node_selector: Vec<(String, String)>,
    /// Required node affinity terms (ORed), if the pod has required node affinity.
    pub affinity: Option<Vec<NodeSelectorTerm>>,
    /// Spreading key (see [`owner_key`]).
    pub owner: Option<String>,
    /// spec.nodeName, when already set.
    pub node_name: Option<String>,
    /// Whether the pod tolerates `node.kubernetes.io/unschedulable:NoSchedule`.
    pub tolerates_unschedulable: bool,
    /// Whether the pod tolerates `node.kubernetes.io/not-ready:NoSchedule`.
    pub tolerates_not_ready: bool,
    /// Whether spec.preemptionPolicy is Never.
    pub never_preempts: bool,
    /// metadata.namespace and metadata.labels (what other pods' affinity terms select).
    pub namespace: String,
    /// metadata.labels.
    pub labels: Map<String, Value>,
    /// Required pod affinity terms (all must hold).
    pub pod_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms (all must hold).
    pub pod_anti_affinity: Vec<AffinityTerm>,
    /// `topologySpreadConstraints` with `whenUnsatisfiable: DoNotSchedule`.
    pub spread: Vec<SpreadConstraint>,
    owner_fingerprint: Option<u64>,
}

/// One hard topology spread constraint: the pods its selector picks (in the pod's namespace)
/// may differ by at most `max_skew` between the domains of `term.topology_key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpreadConstraint {
    /// The selection and the topology key (namespaces: the pod's own).
    pub term: AffinityTerm,
    /// maxSkew.
    pub max_skew: i64,
    /// minDomains: with fewer eligible domains, the global minimum counts as 0.
    pub min_domains: Option<i64>,
}

/// One required (anti-)affinity term: pods matching `selector` in `namespaces` (or in every
/// namespace), counted per value of the nodes' `topology_key` label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AffinityTerm {
    /// labelSelector (a missing one selects nothing, as kube's).
    pub selector: Option<crate::api::selector::LabelSelector>,
    /// namespaces (the pod's own when neither they nor a namespaceSelector are given).
    pub namespaces: Vec<String>,
    /// `namespaceSelector: {}`: every namespace.
    pub all_namespaces: bool,
    /// topologyKey.
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse_all(v: Option<&Value>, own_namespace: &str) -> Vec<AffinityTerm> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| {
                let selector = t
                    .get("labelSelector")
                    .filter(|s| !s.is_null())
                    .and_then(|s| crate::api::selector::LabelSelector::from_json(s).ok());
                let mut namespaces: Vec<String> = array_at(t, "namespaces")
                    .iter()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect();
                // An empty namespaceSelector selects every namespace; Skiff's scheduler does
                // not resolve label-selected namespaces (treated as every namespace).
                let all_namespaces = t.get("namespaceSelector").is_some_and(|n| n.is_object());
                if namespaces.is_empty() && !all_namespaces {
                    namespaces.push(own_namespace.to_string());
                }
                AffinityTerm {
                    selector,
                    namespaces,
                    all_namespaces,
                    topology_key: str_at(t, "topologyKey").to_string(),
                }
            })
            .collect()
    }

    /// The label index key answering this term alone, when it selects one label value in
    /// one namespace (`matchLabels: {app: web}`, the common case).
    fn index_key(&self) -> Option<String> {
        use crate::api::selector::LabelOperator;
        let sel = self.selector.as_ref()?;
        match (
            sel.requirements(),
            self.namespaces.as_slice(),
            self.all_namespaces,
        ) {
            ([r], [ns], false)
                if matches!(r.operator(), LabelOperator::Equals | LabelOperator::In)
                    && r.values().len() == 1 =>
            {
                Some(label_key(ns, r.key(), &r.values()[0]))
            }
            _ => None,
        }
    }

    /// Whether one of `node`'s pods is selected by this term (`key`: its [`index_key`]).
    fn selects_on(&self, node: &NodeSummary, key: Option<&str>) -> bool {
        match key {
            Some(k) => node.label_index.contains_key(k),
            None => node
                .pods
                .values()
                .any(|e| self.selects(&e.namespace, &e.labels)),
        }
    }

    /// Whether a pod of `namespace` with `labels` is one this term selects.
    pub fn selects(&self, namespace: &str, labels: &Map<String, Value>) -> bool {
        (self.all_namespaces || self.namespaces.iter().any(|n| n == namespace))
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(Some(labels)))
    }
}

impl PodSummary {
    /// Pre-computes the pod's requests, ports, tolerations, selector and affinity.
    pub fn new(pod: &Value) -> PodSummary {
        let s = spec(pod);
        let tolerations: Vec<Toleration> = array_at(s, "tolerations")
            .iter()
            .map(Toleration::parse)
            .collect();
        let tolerates = |key: &str| {
            tolerations
                .iter()
                .any(|t| t.tolerates(key, "", "NoSchedule"))
        };
        let tolerates_unschedulable = tolerates(TAINT_UNSCHEDULABLE);
        let tolerates_not_ready = tolerates(TAINT_NOT_READY);
        let node_selector = s
            .get("nodeSelector")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), text(v).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let affinity = s
            .get("affinity")
            .and_then(|a| a.get("nodeAffinity"))
            .and_then(|a| a.get("requiredDuringSchedulingIgnoredDuringExecution"))
            .filter(|r| !r.is_null())
            .map(|r| {
                array_at(r, "nodeSelectorTerms")
                    .iter()
                    .map(NodeSelectorTerm::parse)
                    .collect()
            });
        let node_name = Some(str_at(s, "nodeName"))
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let owner = owner_key(pod);
        let namespace = str_at(metadata(pod), "namespace").to_string();
        let affinity_of = |kind: &str| {
            AffinityTerm::parse_all(
                s.get("affinity")
                    .and_then(|a| a.get(kind))
                    .and_then(|a| a.get("requiredDuringSchedulingIgnoredDuringExecution")),
                &namespace,
            )
        };
        let pod_affinity = affinity_of("podAffinity");
        let pod_anti_affinity = affinity_of("podAntiAffinity");
        let spread = array_at(s, "topologySpreadConstraints")
            .iter()
            .filter(|c| str_at(c, "whenUnsatisfiable") != "ScheduleAnyway")
            .map(|c| SpreadConstraint {
                term: AffinityTerm {
                    selector: c
                        .get("labelSelector")
                        .filter(|s| !s.is_null())
                        .and_then(|s| crate::api::selector::LabelSelector::from_json(s).ok()),
                    namespaces: vec![namespace.clone()],
                    all_namespaces: false,
                    topology_key: str_at(c, "topologyKey").to_string(),
                },
                max_skew: c.get("maxSkew").and_then(Value::as_i64).unwrap_or(1).max(1),
                min_domains: c.get("minDomains").and_then(Value::as_i64),
            })
            .collect();
        PodSummary {
            labels: metadata(pod)
                .get("labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            namespace,
            pod_affinity,
            pod_anti_affinity,
            spread,
            owner_fingerprint: owner.as_deref().map(fingerprint),
            requests: pod_requests(pod),
            non_zero_requests: pod_non_zero_requests(pod),
            host_ports: pod_host_ports(pod),
            tolerations,
            node_selector,
            affinity,
            owner,
            node_name,
            tolerates_unschedulable,
            tolerates_not_ready,
            never_preempts: str_at(s, "preemptionPolicy") == "Never",
        }
    }

    fn matches_node_selection(&self, node: &NodeSummary) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| label(&node.labels, k).is_some_and(|l| l == v.as_str()))
            && self
                .affinity
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| t.matches(node)))
    }

    fn is_best_effort(&self) -> bool {
        self.requests.milli_cpu == 0 && self.requests.memory == 0
    }
}

/// What one pod contributes to a node, remembered so it can be taken away again.
#[derive(Debug, Clone, Default)]
struct PodEntry {
    requests: Resources,
    non_zero: Resources,
    ports: Vec<HostPort>,
    owner: Option<String>,
    namespace: String,
    labels: Map<String, Value>,
    /// Its required anti-affinity terms (other pods must keep away from it).
    anti: Vec<AffinityTerm>,
}

/// What the scheduler knows about one node, built once and updated incrementally as
/// pods are bound to it or leave it. The public fields are maintained by the methods;
/// treat them as read-only.
#[derive(Debug, Clone, Default)]
pub struct NodeSummary {
    /// metadata.name.
    pub name: String,
    /// status.allocatable (falling back to capacity).
    pub allocatable: Resources,
    /// Sum of the requests of the node's pods; `pods` is their number.
    pub requested: Resources,
    /// Sum of the node's pods' requests with scoring defaults (see [`pod_non_zero_requests`]).
    pub non_zero_requested: Resources,
    /// Host ports in use, one entry per claiming container port.
    pub host_ports: Vec<HostPort>,
    /// Number of the node's pods per spreading key (see [`owner_key`]).
    pub owner_counts: HashMap<String, usize>,
    /// metadata.labels.
    pub labels: Map<String, Value>,
    /// spec.taints.
    pub taints: Vec<Value>,
    /// spec.unschedulable.
    pub unschedulable: bool,
    /// Whether the Ready condition is True.
    pub ready: bool,
    pods: HashMap<String, PodEntry>,
    /// `owner_counts` by [`fingerprint`], scanned linearly on the hot path.
    owner_fingerprints: Vec<(u64, usize)>,
    anonymous: u64,
    /// How many of its pods have required anti-affinity terms.
    anti_affinity_pods: usize,
    /// Its pods' labels, counted by [`label_key`] (namespace, key, value): a term selecting one
    /// label value is answered per node with one lookup, not a scan of its pods.
    label_index: HashMap<String, usize>,
    /// Its pods' distinct required anti-affinity terms, with how many pods carry each.
    anti_terms: Vec<(AffinityTerm, usize)>,
}

/// The [`NodeSummary`] label index key of a pod label.
fn label_key(namespace: &str, key: &str, value: &str) -> String {
    format!("{namespace}\u{0}{key}\u{0}{value}")
}

impl NodeSummary {
    /// Summarises a node that has no pods yet.
    pub fn new(node: &Value) -> NodeSummary {
        let mut summary = NodeSummary::default();
        summary.update_node(node);
        summary
    }

    /// Summarises a node together with its pods.
    pub fn from_info(info: &NodeInfo<'_>) -> NodeSummary {
        let mut summary = NodeSummary::new(info.node);
        for pod in &info.pods {
            summary.add_pod(pod);
        }
        summary
    }

    /// Refreshes the node-derived fields (name, allocatable, labels, taints,
    /// unschedulable, readiness) from a new version of the node, keeping its pods.
    pub fn update_node(&mut self, node: &Value) {
        let meta = metadata(node);
        let s = spec(node);
        self.name = str_at(meta, "name").to_string();
        self.allocatable = node_allocatable(node);
        self.labels = meta
            .get("labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        self.taints = array_at(s, "taints")
            .iter()
            .filter(|t| t.is_object())
            .cloned()
            .collect();
        self.unschedulable = s.get("unschedulable").and_then(Value::as_bool) == Some(true);
        self.ready = node_ready(node);
    }

    /// Counts a pod as bound to (or assumed on) this node. Adding a pod that is already
    /// counted (same namespace/name, else uid) replaces its previous version; adding a
    /// terminal (Succeeded/Failed) pod removes it, as it no longer holds resources.
    pub fn add_pod(&mut self, pod: &Value) {
        let key = match pod_key(pod) {
            Some(key) => key,
            None => {
                self.anonymous += 1;
                format!("#anonymous-{}", self.anonymous)
            }
        };
        self.remove_key(&key);
        if is_terminal(pod) {
            return;
        }
        let meta = metadata(pod);
        let namespace = str_at(meta, "namespace").to_string();
        let anti = AffinityTerm::parse_all(
            spec(pod)
                .get("affinity")
                .and_then(|a| a.get("podAntiAffinity"))
                .and_then(|a| a.get("requiredDuringSchedulingIgnoredDuringExecution")),
            &namespace,
        );
        if !anti.is_empty() {
            self.anti_affinity_pods += 1;
        }
        let entry = PodEntry {
            requests: pod_requests(pod),
            non_zero: pod_non_zero_requests(pod),
            ports: pod_host_ports(pod),
            owner: owner_key(pod),
            labels: meta
                .get("labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            namespace,
            anti,
        };
        self.requested = self.requested.plus(entry.requests);
        self.non_zero_requested = self.non_zero_requested.plus(entry.non_zero);
        self.host_ports.extend(entry.ports.iter().cloned());
        if let Some(owner) = &entry.owner {
            *self.owner_counts.entry(owner.clone()).or_insert(0) += 1;
            let fp = fingerprint(owner);
            match self.owner_fingerprints.iter_mut().find(|e| e.0 == fp) {
                Some(e) => e.1 += 1,
                None => self.owner_fingerprints.push((fp, 1)),
            }
        }
        for (k, v) in &entry.labels {
            *self
                .label_index
                .entry(label_key(&entry.namespace, k, &text(v)))
                .or_insert(0) += 1;
        }
        for t in &entry.anti {
            match self.anti_terms.iter_mut().find(|(x, _)| x == t) {
                Some(e) => e.1 += 1,
                None => self.anti_terms.push((t.clone(), 1)),
            }
        }
        self.pods.insert(key, entry);
    }

    /// Stops counting a pod (matched by namespace/name, else uid). Returns whether it
    /// was counted.
    pub fn remove_pod(&mut self, pod: &Value) -> bool {
        pod_key(pod).is_some_and(|key| self.remove_key(&key))
    }

    /// Stops counting the pod with this key (see [`pod_key`]). Returns whether it was
    /// counted.
    pub fn remove_key(&mut self, key: &str) -> bool {
        let Some(entry) = self.pods.remove(key) else {
            return false;
        };
        if !entry.anti.is_empty() {
            self.anti_affinity_pods = self.anti_affinity_pods.saturating_sub(1);
        }
        for (k, v) in &entry.labels {
            let lk = label_key(&entry.namespace, k, &text(v));
            if let Some(n) = self.label_index.get_mut(&lk) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.label_index.remove(&lk);
                }
            }
        }
        for t in &entry.anti {
            if let Some(i) = self.anti_terms.iter().position(|(x, _)| x == t) {
                self.anti_terms[i].1 = self.anti_terms[i].1.saturating_sub(1);
                if self.anti_terms[i].1 == 0 {
                    self.anti_terms.swap_remove(i);
                }
            }
        }
        self.requested = self.requested.minus(entry.requests);
        self.non_zero_requested = self.non_zero_requested.minus(entry.non_zero);
        for port in &entry.ports {
            if let Some(i) = self.host_ports.iter().position(|p| p == port) {
                self.host_ports.swap_remove(i);
            }
        }
        if let Some(owner) = &entry.owner {
            if let Some(count) = self.owner_counts.get_mut(owner) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.owner_counts.remove(owner);
                }
            }
            let fp = fingerprint(owner);
            if let Some(i) = self.owner_fingerprints.iter().position(|e| e.0 == fp) {
                self.owner_fingerprints[i].1 = self.owner_fingerprints[i].1.saturating_sub(1);
                if self.owner_fingerprints[i].1 == 0 {
                    self.owner_fingerprints.swap_remove(i);
                }
            }
        }
        true
    }

    /// Whether the pod with this key (see [`pod_key`]) is counted on the node.
    pub fn contains_key(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Number of pods counted on the node.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

/// What the scheduler knows about one node: the node and the pods bound to it
/// (including ones it has assumed but not yet seen bound).
pub struct NodeInfo<'a> {
    /// The Node object.
    pub node: &'a serde_json::Value,
    /// Pods bound to or assumed on the node.
    pub pods: Vec<&'a serde_json::Value>,
}

// ---------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------

/// Why a node was rejected (one short reason, Kubernetes' wording, e.g. "Insufficient
/// cpu", "node(s) didn't match Pod's node affinity/selector", "node(s) had untolerated
/// taint {node.kubernetes.io/not-ready: }", "node(s) were unschedulable", "node(s)
/// didn't have free ports for the requested pod ports", "node(s) had condition
/// NotReady", "Too many pods").
pub type Reason = String;

/// A filter failure, cheap to produce; turned into a [`Reason`] only when reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Unschedulable,
    NodeName,
    NotReady,
    /// Index into the node's taints.
    Taint(usize),
    Affinity,
    Ports,
    TooManyPods,
    InsufficientCpu,
    InsufficientMemory,
    PodAffinity,
    PodAntiAffinity,
    ExistingAntiAffinity,
    Spread,
    SpreadLabel,
}

impl Failure {
    const FIXED: usize = 13;

    /// Slot for the reasons with a fixed message.
    fn slot(self) -> Option<usize> {
        Some(match self {
            Failure::Unschedulable => 0,
            Failure::NodeName => 1,
            Failure::NotReady => 2,
            Failure::Affinity => 3,
            Failure::Ports => 4,
            Failure::TooManyPods => 5,
            Failure::InsufficientCpu => 6,
            Failure::InsufficientMemory => 7,
            Failure::PodAffinity => 8,
            Failure::PodAntiAffinity => 9,
            Failure::ExistingAntiAffinity => 10,
            Failure::Spread => 11,
            Failure::SpreadLabel => 12,
            Failure::Taint(_) => return None,
        })
    }

    fn fixed_message(slot: usize) -> &'static str {
        [
            REASON_UNSCHEDULABLE,
            REASON_NODE_NAME,
            REASON_NOT_READY,
            REASON_AFFINITY,
            REASON_PORTS,
            REASON_TOO_MANY_PODS,
            REASON_CPU,
            REASON_MEMORY,
            REASON_POD_AFFINITY,
            REASON_POD_ANTI_AFFINITY,
            REASON_EXISTING_ANTI_AFFINITY,
            REASON_SPREAD,
            REASON_SPREAD_LABEL,
        ]
        .get(slot)
        .copied()
        .unwrap_or("")
    }

    /// Whether evicting pods could make the node fit (Kubernetes' `Unschedulable`
    /// rather than `UnschedulableAndUnresolvable`).
    fn resolvable(self) -> bool {
        matches!(
            self,
            Failure::Ports
                | Failure::TooManyPods
                | Failure::InsufficientCpu
                | Failure::InsufficientMemory
                | Failure::PodAntiAffinity
                | Failure::ExistingAntiAffinity
                | Failure::Spread
        )
    }

    fn reason(self, node: &NodeSummary) -> Reason {
        match self {
            Failure::Taint(i) => {
                let (key, value) = taint_key_value(node, i);
                taint_reason(key, &value)
            }
            other => Failure::fixed_message(other.slot().unwrap_or(usize::MAX)).to_string(),
        }
    }
}

fn taint_key_value(node: &NodeSummary, i: usize) -> (&str, Cow<'_, str>) {
    node.taints.get(i).map_or(("", Cow::Borrowed("")), |t| {
        (str_at(t, "key"), text_at(t, "value"))
    })
}

fn taint_reason(key: &str, value: &str) -> Reason {
    format!("node(s) had untolerated taint {{{key}: {value}}}")
}

/// The first NoSchedule/NoExecute taint of the node that the pod does not tolerate.
fn untolerated_taint(pod: &PodSummary, node: &NodeSummary, skip_not_ready: bool) -> Option<usize> {
    node.taints.iter().position(|t| {
        let effect = str_at(t, "effect");
        if effect != "NoSchedule" && effect != "NoExecute" {
            return false;
        }
        let key = str_at(t, "key");
        if skip_not_ready && key == TAINT_NOT_READY {
            return false;
        }
        let value = text_at(t, "value");
        !pod.tolerations
            .iter()
            .any(|tol| tol.tolerates(key, &value, effect))
    })
}

/// Runs the filters in Kubernetes' plugin order, pushing failures to `out`. With `all`
/// false it stops after the first plugin that fails, as the Kubernetes framework does
/// (its diagnosis only holds that plugin's reasons).
fn check(
    pod: &PodSummary,
    node: &NodeSummary,
    inter: Option<&InterPod>,
    all: bool,
    out: &mut Vec<Failure>,
) {
    // NodeUnschedulable
    if node.unschedulable && !pod.tolerates_unschedulable {
        out.push(Failure::Unschedulable);
        if !all {
            return;
        }
    }
    // NodeName
    if pod.node_name.as_ref().is_some_and(|n| *n != node.name) {
        out.push(Failure::NodeName);
        if !all {
            return;
        }
    }
    // TaintToleration, with readiness standing in for the not-ready taint.
    let not_ready = !node.ready && !pod.tolerates_not_ready;
    if not_ready {
        out.push(Failure::NotReady);
    }
    // Like Kubernetes, report one taint per node; the first-plugin mode reports NotReady
    // alone.
    if !node.taints.is_empty() && (all || !not_ready) {
        if let Some(i) = untolerated_taint(pod, node, not_ready) {
            out.push(Failure::Taint(i));
        }
    }
    if !all && !out.is_empty() {
        return;
    }
    // NodeAffinity (spec.nodeSelector and required node affinity)
    if !pod.matches_node_selection(node) {
        out.push(Failure::Affinity);
        if !all {
            return;
        }
    }
    // NodePorts
    if !pod.host_ports.is_empty() && ports_conflict(&node.host_ports, &pod.host_ports) {
        out.push(Failure::Ports);
        if !all {
            return;
        }
    }
    // NodeResourcesFit
    let requested = node.requested;
    let allocatable = node.allocatable;
    if requested.pods.saturating_add(1) > allocatable.pods {
        out.push(Failure::TooManyPods);
    }
    let want = pod.requests;
    if want.milli_cpu > 0
        && want.milli_cpu > allocatable.milli_cpu.saturating_sub(requested.milli_cpu)
    {
        out.push(Failure::InsufficientCpu);
    }
    if want.memory > 0 && want.memory > allocatable.memory.saturating_sub(requested.memory) {
        out.push(Failure::InsufficientMemory);
    }
    if !all && !out.is_empty() {
        return;
    }
    // InterPodAffinity
    if let Some(inter) = inter {
        inter.check(pod, node, out);
    }
}

/// What inter-pod (anti-)affinity needs to know about the whole cluster for one pod, computed
/// once per decision (kube's InterPodAffinity PreFilter): per term, the topology values
/// (of its key) of the nodes where a selected pod runs, and the domains existing pods'
/// anti-affinity keeps this pod out of.
pub struct InterPod {
    /// For each required affinity term: the values its pods are in.
    affinity: Vec<std::collections::HashSet<String>>,
    /// Whether no pod at all matches the affinity terms and the pod matches them itself
    /// (the first pod of a group that wants to be together may go anywhere).
    affinity_self: bool,
    /// For each required anti-affinity term: the values its pods are in.
    anti: Vec<std::collections::HashSet<String>>,
    /// Per topology key, the values where an existing pod's anti-affinity selects this pod.
    existing: HashMap<String, std::collections::HashSet<String>>,
    /// Per spread constraint: selected pods per domain, the global minimum, and 1 when the
    /// pod itself is selected.
    spread: Vec<(HashMap<String, i64>, i64, i64)>,
}

impl InterPod {
    /// The state for `pod` over `nodes`; None when neither it nor any pod there has terms.
    pub fn new(pod: &PodSummary, nodes: &[NodeSummary]) -> Option<InterPod> {
        let any_existing = nodes.iter().any(|n| n.anti_affinity_pods > 0);
        if pod.pod_affinity.is_empty()
            && pod.pod_anti_affinity.is_empty()
            && pod.spread.is_empty()
            && !any_existing
        {
            return None;
        }
        // Topology spread (kube's PodTopologySpread PreFilter): over the nodes the pod could
        // go to by its node selection (nodeAffinityPolicy Honor) that carry the key.
        let spread = pod
            .spread
            .iter()
            .map(|c| {
                let key = c.term.index_key();
                let mut counts: HashMap<String, i64> = HashMap::new();
                for node in nodes.iter().filter(|n| pod.matches_node_selection(n)) {
                    let Some(domain) = label(&node.labels, &c.term.topology_key) else {
                        continue;
                    };
                    let n = match &key {
                        Some(k) => node.label_index.get(k).copied().unwrap_or(0) as i64,
                        None => node
                            .pods
                            .values()
                            .filter(|e| c.term.selects(&e.namespace, &e.labels))
                            .count() as i64,
                    };
                    *counts.entry(domain.into_owned()).or_insert(0) += n;
                }
                let mut min = counts.values().copied().min().unwrap_or(0);
                if c.min_domains.is_some_and(|m| (counts.len() as i64) < m) {
                    min = 0;
                }
                let own = i64::from(c.term.selects(&pod.namespace, &pod.labels));
                (counts, min, own)
            })
            .collect();
        let value = |n: &NodeSummary, key: &str| label(&n.labels, key).map(|v| v.into_owned());
        let mut affinity = vec![std::collections::HashSet::new(); pod.pod_affinity.len()];
        let mut anti = vec![std::collections::HashSet::new(); pod.pod_anti_affinity.len()];
        let mut existing: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        let mut affinity_matches = false;
        let affinity_keys: Vec<Option<String>> = pod
            .pod_affinity
            .iter()
            .map(AffinityTerm::index_key)
            .collect();
        let anti_keys: Vec<Option<String>> = pod
            .pod_anti_affinity
            .iter()
            .map(AffinityTerm::index_key)
            .collect();
        for node in nodes {
            if node.pods.is_empty() {
                continue;
            }
            for (i, t) in pod.pod_affinity.iter().enumerate() {
                if t.selects_on(node, affinity_keys[i].as_deref()) {
                    affinity_matches = true;
                    if let Some(v) = value(node, &t.topology_key) {
                        affinity[i].insert(v);
                    }
                }
            }
            for (i, t) in pod.pod_anti_affinity.iter().enumerate() {
                if t.selects_on(node, anti_keys[i].as_deref()) {
                    if let Some(v) = value(node, &t.topology_key) {
                        anti[i].insert(v);
                    }
                }
            }
            for (t, _) in &node.anti_terms {
                if t.selects(&pod.namespace, &pod.labels) {
                    if let Some(v) = value(node, &t.topology_key) {
                        existing
                            .entry(t.topology_key.clone())
                            .or_default()
                            .insert(v);
                    }
                }
            }
        }
        let affinity_self = !affinity_matches
            && !pod.pod_affinity.is_empty()
            && pod
                .pod_affinity
                .iter()
                .all(|t| t.selects(&pod.namespace, &pod.labels));
        Some(InterPod {
            affinity,
            affinity_self,
            anti,
            existing,
            spread,
        })
    }

    fn check(&self, pod: &PodSummary, node: &NodeSummary, out: &mut Vec<Failure>) {
        let value = |key: &str| label(&node.labels, key);
        for (c, (counts, min, own)) in pod.spread.iter().zip(&self.spread) {
            let Some(domain) = value(&c.term.topology_key) else {
                out.push(Failure::SpreadLabel);
                return;
            };
            let here = counts.get(domain.as_ref()).copied().unwrap_or(0);
            if here + own - min > c.max_skew {
                out.push(Failure::Spread);
                return;
            }
        }
        if !self.affinity_self {
            let ok = pod
                .pod_affinity
                .iter()
                .zip(&self.affinity)
                .all(|(t, values)| {
                    value(&t.topology_key).is_some_and(|v| values.contains(v.as_ref()))
                });
            if !ok {
                out.push(Failure::PodAffinity);
                return;
            }
        }
        let blocked = pod
            .pod_anti_affinity
            .iter()
            .zip(&self.anti)
            .any(|(t, values)| value(&t.topology_key).is_some_and(|v| values.contains(v.as_ref())));
        if blocked {
            out.push(Failure::PodAntiAffinity);
            return;
        }
        if self
            .existing
            .iter()
            .any(|(key, values)| value(key).is_some_and(|v| values.contains(v.as_ref())))
        {
            out.push(Failure::ExistingAntiAffinity);
        }
    }
}

/// Runs every filter of a summarised pod against a summarised node. Returns Ok(()) or
/// all the reasons that apply, in Kubernetes' plugin order.
pub fn filter_summary(pod: &PodSummary, node: &NodeSummary) -> Result<(), Vec<Reason>> {
    let mut failures = Vec::new();
    let inter = InterPod::new(pod, std::slice::from_ref(node));
    check(pod, node, inter.as_ref(), true, &mut failures);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.into_iter().map(|f| f.reason(node)).collect())
    }
}

/// Runs every filter: node Ready condition True and not spec.unschedulable (unless
/// tolerated like Kubernetes: the `node.kubernetes.io/unschedulable` NoSchedule
/// toleration); CPU/memory requests and pod count within allocatable minus what the
/// node's pods request; spec.nodeSelector; required node affinity (nodeSelectorTerms
/// ORed, matchExpressions ANDed, operators In/NotIn/Exists/DoesNotExist/Gt/Lt, and
/// matchFields on metadata.name); taints with effect NoSchedule/NoExecute vs the pod's
/// tolerations (operator Equal/Exists, empty key with Exists tolerates everything,
/// effect empty matches all effects); host port conflicts
/// (containers[].ports[].hostPort, by protocol and hostIP with 0.0.0.0 wildcard).
/// Returns Ok(()) or all the reasons that apply.
pub fn filter(pod: &serde_json::Value, node: &NodeInfo) -> Result<(), Vec<Reason>> {
    filter_summary(&PodSummary::new(pod), &NodeSummary::from_info(node))
}

// ---------------------------------------------------------------------------
// Scores
// ---------------------------------------------------------------------------

/// Kubernetes' LeastAllocated: mean over cpu and memory of free capacity after adding
/// the pod, in percent; resources the node has none of are left out.
fn least_allocated(pod: &PodSummary, node: &NodeSummary) -> i64 {
    let one = |capacity: i64, requested: i64| -> Option<i64> {
        if capacity <= 0 {
            return None;
        }
        if requested > capacity {
            return Some(0);
        }
        let free = capacity - requested.max(0);
        Some(match free.checked_mul(MAX_NODE_SCORE) {
            Some(scaled) => scaled / capacity,
            None => (i128::from(free) * i128::from(MAX_NODE_SCORE) / i128::from(capacity)) as i64,
        })
    };
    let wanted = node.non_zero_requested.plus(pod.non_zero_requests);
    let scores = [
        one(node.allocatable.milli_cpu, wanted.milli_cpu),
        one(node.allocatable.memory, wanted.memory),
    ];
    let (sum, n) = scores
        .iter()
        .flatten()
        .fold((0i64, 0i64), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0
    } else {
        sum / n
    }
}

/// Balanced allocation: 100 - |cpuFraction - memFraction| * 100 after adding the pod,
/// fractions capped at 1; resources the node has none of are left out.
fn balanced_allocation(pod: &PodSummary, node: &NodeSummary) -> i64 {
    let fraction = |capacity: i64, requested: i64| -> Option<f64> {
        (capacity > 0).then(|| (requested as f64 / capacity as f64).clamp(0.0, 1.0))
    };
    let wanted = node.requested.plus(pod.requests);
    match (
        fraction(node.allocatable.milli_cpu, wanted.milli_cpu),
        fraction(node.allocatable.memory, wanted.memory),
    ) {
        (Some(cpu), Some(memory)) => ((1.0 - (cpu - memory).abs()) * MAX_NODE_SCORE as f64) as i64,
        _ => MAX_NODE_SCORE,
    }
}

/// Spreading: 100 for a node without siblings, down to 0 for the node with the most.
fn spread(count: usize, max: usize) -> i64 {
    if max == 0 {
        return MAX_NODE_SCORE;
    }
    let free = max - count.min(max);
    // Saturation only matters beyond usize::MAX / 100 pods on one node.
    i64::try_from(free.saturating_mul(MAX_NODE_SCORE as usize) / max).unwrap_or(0)
}

fn score_parts(pod: &PodSummary, node: &NodeSummary, same_owner: usize, owner_max: usize) -> i64 {
    let mut total = WEIGHT_LEAST_ALLOCATED * least_allocated(pod, node);
    let mut weights = WEIGHT_LEAST_ALLOCATED;
    // Like Kubernetes, balanced allocation skips best-effort pods.
    if !pod.is_best_effort() {
        total += WEIGHT_BALANCED * balanced_allocation(pod, node);
        weights += WEIGHT_BALANCED;
    }
    if pod.owner.is_some() {
        total += WEIGHT_SPREAD * spread(same_owner, owner_max);
        weights += WEIGHT_SPREAD;
    }
    (total / weights).clamp(0, MAX_NODE_SCORE)
}

/// Counts the pods on a summarised node that share the pod's spreading key.
pub fn same_owner_summary(pod: &PodSummary, node: &NodeSummary) -> usize {
    match (&pod.owner, pod.owner_fingerprint) {
        (None, _) => 0,
        (Some(_), Some(fp)) => node
            .owner_fingerprints
            .iter()
            .find(|e| e.0 == fp)
            .map_or(0, |e| e.1),
        // A summary assembled by hand rather than by PodSummary::new.
        (Some(owner), None) => node.owner_counts.get(owner).copied().unwrap_or(0),
    }
}

/// Scores a feasible summarised node 0..=100 for the pod (see [`score`]).
pub fn score_summary(pod: &PodSummary, node: &NodeSummary, owner_counts_max: usize) -> i64 {
    score_parts(pod, node, same_owner_summary(pod, node), owner_counts_max)
}

/// Scores a feasible node 0..=100 for the pod (higher is better), the sum of weighted
/// plugins normalised to 0..=100: least allocated (Kubernetes NodeResourcesFit
/// LeastAllocated: average over cpu and memory of (allocatable - requested) * 100 /
/// allocatable, after adding this pod), balanced allocation (100 - |cpuFraction -
/// memFraction| * 100 after adding this pod), and spreading the pods of one owner:
/// pods on the node with the same controller ownerReference uid (or, for pods without
/// an owner, the same labels) lower the score. Deterministic.
///
/// Weights follow Kubernetes' default profile: 1 for least allocated, 1 for balanced
/// allocation (skipped for pods that request no cpu or memory), 2 for spreading
/// (skipped for pods with neither an owner nor labels).
pub fn score(pod: &serde_json::Value, node: &NodeInfo, owner_counts_max: usize) -> i64 {
    score_summary(
        &PodSummary::new(pod),
        &NodeSummary::from_info(node),
        owner_counts_max,
    )
}

/// Counts the pods on the node that share the pod's controller owner (uid) — used for
/// spreading; `owner_counts_max` passed to score is the max of this over all candidate
/// nodes. Pods without a controller are matched by namespace and labels instead.
pub fn same_owner(pod: &serde_json::Value, node: &NodeInfo) -> usize {
    let Some(owner) = owner_key(pod) else {
        return 0;
    };
    NodeSummary::from_info(node)
        .owner_counts
        .get(&owner)
        .copied()
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Decision
// ---------------------------------------------------------------------------

/// Tally of why nodes were rejected, for the FailedScheduling message.
struct Diagnosis<'a> {
    fixed: [usize; Failure::FIXED],
    taints: HashMap<(&'a str, Cow<'a, str>), usize>,
    resolvable: usize,
    unresolvable: usize,
}

impl<'a> Diagnosis<'a> {
    fn new() -> Self {
        Diagnosis {
            fixed: [0; Failure::FIXED],
            taints: HashMap::new(),
            resolvable: 0,
            unresolvable: 0,
        }
    }

    fn record(&mut self, node: &'a NodeSummary, failures: &[Failure]) {
        for f in failures {
            match f.slot() {
                Some(slot) => self.fixed[slot] += 1,
                None => {
                    if let Failure::Taint(i) = *f {
                        *self.taints.entry(taint_key_value(node, i)).or_insert(0) += 1;
                    }
                }
            }
        }
        if failures.iter().all(|f| f.resolvable()) {
            self.resolvable += 1;
        } else {
            self.unresolvable += 1;
        }
    }

    fn message(&self, pod: &PodSummary, total: usize) -> String {
        let mut parts: Vec<String> = self
            .fixed
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(slot, n)| format!("{n} {}", Failure::fixed_message(slot)))
            .chain(
                self.taints
                    .iter()
                    .map(|((key, value), n)| format!("{n} {}", taint_reason(key, value))),
            )
            .collect();
        parts.sort();
        let mut message = format!("0/{total} nodes are available: {}.", parts.join(", "));
        if pod.never_preempts {
            message.push_str(" preemption: not eligible due to preemptionPolicy=Never.");
        } else {
            let mut preemption: Vec<String> = [
                (self.resolvable, PREEMPTION_NO_VICTIMS),
                (self.unresolvable, PREEMPTION_NOT_HELPFUL),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, m)| format!("{n} {m}"))
            .collect();
            preemption.sort();
            message.push_str(&format!(
                " preemption: 0/{total} nodes are available: {}.",
                preemption.join(", ")
            ));
        }
        message
    }
}

/// How many feasible nodes a decision looks for before it scores them: kube-scheduler's
/// `numFeasibleNodesToFind` with the default, adaptive `percentageOfNodesToScore` — every
/// node of a cluster under 100; else 50 % less one point per 125 nodes, at least 5 %, and at
/// least 100 nodes (5,000 nodes: 10 %, 500; 10,000 nodes: 5 %, 500).
pub fn feasible_nodes_to_find(total: usize) -> usize {
    const MIN_NODES: usize = 100;
    if total < MIN_NODES {
        return total;
    }
    let percent = 50usize.saturating_sub(total / 125).max(5);
    (total * percent / 100).max(MIN_NODES)
}

/// The whole decision over summaries, returning the index of the chosen node: filter the
/// nodes from `*next_start` on, wrapping, until [`feasible_nodes_to_find`] fit (every node
/// when fewer do), score those, pick the highest score, ties broken by node name rotated by
/// `tie_breaker` (the `tie_breaker % ties`-th tied node in name order). `*next_start`
/// moves past the nodes filtered, so the next decision looks at others first, as
/// kube-scheduler's `nextStartNodeIndex`. Err carries the FailedScheduling message (see
/// [`schedule`]), and then every node was filtered.
pub fn select_node(
    pod: &PodSummary,
    nodes: &[NodeSummary],
    tie_breaker: usize,
    next_start: &mut usize,
) -> Result<usize, String> {
    if nodes.is_empty() {
        return Err(NO_NODES_AVAILABLE.to_string());
    }
    let to_find = feasible_nodes_to_find(nodes.len());
    let first = *next_start % nodes.len();
    let inter = InterPod::new(pod, nodes);
    let mut failures = Vec::with_capacity(4);
    let mut feasible: Vec<(usize, usize)> = Vec::with_capacity(to_find);
    let mut diagnosis: Option<Diagnosis<'_>> = None;
    let mut owner_max = 0;
    let mut filtered = 0;
    let order = nodes
        .iter()
        .enumerate()
        .skip(first)
        .chain(nodes.iter().enumerate().take(first));
    for (i, node) in order {
        if feasible.len() >= to_find {
            break;
        }
        filtered += 1;
        failures.clear();
        check(pod, node, inter.as_ref(), false, &mut failures);
        if failures.is_empty() {
            let count = same_owner_summary(pod, node);
            owner_max = owner_max.max(count);
            feasible.push((i, count));
        } else {
            diagnosis
                .get_or_insert_with(Diagnosis::new)
                .record(node, &failures);
        }
    }
    *next_start = (first + filtered) % nodes.len();
    if feasible.is_empty() {
        let diagnosis = diagnosis.unwrap_or_else(Diagnosis::new);
        return Err(diagnosis.message(pod, nodes.len()));
    }
    let mut best = i64::MIN;
    let mut tied: Vec<usize> = Vec::new();
    for &(i, count) in &feasible {
        let s = score_parts(pod, &nodes[i], count, owner_max);
        match s.cmp(&best) {
            Ordering::Greater => {
                best = s;
                tied.clear();
                tied.push(i);
            }
            Ordering::Equal => tied.push(i),
            Ordering::Less => {}
        }
    }
    if let [only] = tied.as_slice() {
        return Ok(*only);
    }
    // Homogeneous clusters tie on thousands of nodes: order them by an integer prefix
    // of the name first and compare whole names only when prefixes are equal.
    let mut keyed: Vec<(u128, usize)> = tied
        .iter()
        .map(|&i| (name_prefix(&nodes[i].name), i))
        .collect();
    let k = tie_breaker % keyed.len();
    let (_, chosen, _) = keyed.select_nth_unstable_by(k, |a, b| {
        a.0.cmp(&b.0)
            .then_with(|| nodes[a.1].name.cmp(&nodes[b.1].name))
            .then(a.1.cmp(&b.1))
    });
    Ok(chosen.1)
}

/// The first 16 bytes of a name as a big-endian integer, zero padded: ordering these
/// agrees with ordering the names whenever the prefixes differ.
fn name_prefix(name: &str) -> u128 {
    let bytes = name.as_bytes();
    let mut buf = [0u8; 16];
    let n = bytes.len().min(16);
    buf[..n].copy_from_slice(&bytes[..n]);
    u128::from_be_bytes(buf)
}

/// [`schedule`] over pre-built node summaries: returns the chosen node's name.
pub fn schedule_summaries(
    pod: &serde_json::Value,
    nodes: &[NodeSummary],
    tie_breaker: usize,
) -> Result<String, String> {
    let summary = PodSummary::new(pod);
    select_node(&summary, nodes, tie_breaker, &mut 0).map(|i| nodes[i].name.clone())
}

/// The whole decision: filter every node, score the feasible ones, pick the highest
/// score (ties broken by node name, deterministically, or by a caller-supplied
/// round-robin offset `tie_breaker` modulo the number of tied nodes). Err carries the
/// message Kubernetes puts in the FailedScheduling event and the PodScheduled=False
/// condition, e.g. "0/3 nodes are available: 1 node(s) were unschedulable, 2
/// Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims
/// found for incoming pod." — "0/N nodes are available: " + counts per reason (of the
/// first failing filter of each node, as Kubernetes reports them) sorted like
/// Kubernetes sorts the "count reason" strings, joined by ", " and ending with ".".
/// The preemption sentence assumes no lower-priority victims exist (this module does
/// not preempt).
pub fn schedule(
    pod: &serde_json::Value,
    nodes: &[NodeInfo],
    tie_breaker: usize,
) -> Result<String, String> {
    let summaries: Vec<NodeSummary> = nodes.iter().map(NodeSummary::from_info).collect();
    schedule_summaries(pod, &summaries, tie_breaker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, memory: &str, pods: &str) -> Value {
        json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        })
    }

    fn pod(name: &str, cpu: &str, memory: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
        })
    }

    fn with(mut v: Value, path: &[&str], value: Value) -> Value {
        let mut cur = &mut v;
        for (i, p) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cur[*p] = value;
                break;
            }
            cur = &mut cur[*p];
        }
        v
    }

    fn info(node: &Value) -> NodeInfo<'_> {
        NodeInfo { node, pods: vec![] }
    }

    fn reasons(pod: &Value, node: &NodeInfo) -> Vec<String> {
        filter(pod, node).err().unwrap_or_default()
    }

    #[test]
    fn quantity_table() {
        let cases: &[(&str, bool, Option<i64>)] = &[
            ("100m", true, Some(100)),
            ("1", true, Some(1000)),
            ("0.5", true, Some(500)),
            ("1.5", true, Some(1500)),
            ("2e3", true, Some(2_000_000)),
            ("1e3", true, Some(1_000_000)),
            ("64Mi", false, Some(67_108_864)),
            ("1G", false, Some(1_000_000_000)),
            ("1Ki", false, Some(1024)),
            ("1.5Gi", false, Some(1_610_612_736)),
            ("128974848", false, Some(128_974_848)),
            ("129e6", false, Some(129_000_000)),
            ("123Mi", false, Some(128_974_848)),
            ("1m", false, Some(1)),
            ("250u", true, Some(1)),
            ("0", true, Some(0)),
            (".5", true, Some(500)),
            ("+1", true, Some(1000)),
            ("-100m", true, Some(-100)),
            ("110", false, Some(110)),
            ("1E", true, Some(i64::MAX)),
            ("1e100", false, Some(i64::MAX)),
            ("garbage", true, None),
            ("", true, None),
            ("m", true, None),
            ("1K", false, None),
            ("1.2.3", true, None),
            (" 1", true, None),
            ("1Mi ", false, None),
            ("1e", true, None),
            ("1e+", true, None),
            ("1ee3", true, None),
            ("1é", true, None),
        ];
        for (q, cpu, want) in cases {
            assert_eq!(parse_quantity(q, *cpu), *want, "{q} cpu={cpu}");
        }
    }

    #[test]
    fn requests_sum_limits_init_and_overhead() {
        let p = json!({"spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"resources": {"limits": {"cpu": "200m", "memory": "1Gi"}, "requests": {"memory": "128Mi"}}}
            ],
            "initContainers": [
                {"resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}
            ],
            "overhead": {"cpu": "10m", "memory": "1Mi"}
        }});
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 1000 + 10);
        assert_eq!(r.memory, (64 + 128 + 1) * 1024 * 1024);
        assert_eq!(r.pods, 1);
        let empty = json!({"spec": {"containers": [{}]}});
        assert_eq!(
            pod_requests(&empty),
            Resources {
                milli_cpu: 0,
                memory: 0,
                pods: 1
            }
        );
        assert_eq!(
            pod_non_zero_requests(&empty),
            Resources {
                milli_cpu: DEFAULT_MILLI_CPU_REQUEST,
                memory: DEFAULT_MEMORY_REQUEST,
                pods: 1
            }
        );
        // A sidecar runs alongside the app containers.
        let sidecar = json!({"spec": {
            "containers": [{"resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [{"restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}}]
        }});
        assert_eq!(pod_requests(&sidecar).milli_cpu, 150);
    }

    #[test]
    fn allocatable_falls_back_to_capacity() {
        let n = json!({"status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                                  "allocatable": {"cpu": "3500m"}}});
        assert_eq!(
            node_allocatable(&n),
            Resources {
                milli_cpu: 3500,
                memory: 8 << 30,
                pods: 110
            }
        );
    }

    #[test]
    fn insufficient_cpu_memory_and_pods() {
        let n = node("n1", "2", "4Gi", "2");
        let existing = pod("a", "1500m", "3Gi");
        let ni = NodeInfo {
            node: &n,
            pods: vec![&existing],
        };
        assert!(filter(&pod("small", "500m", "1Gi"), &ni).is_ok());
        assert_eq!(
            reasons(&pod("p", "600m", "1Gi"), &ni),
            vec!["Insufficient cpu"]
        );
        assert_eq!(
            reasons(&pod("p", "100m", "2Gi"), &ni),
            vec!["Insufficient memory"]
        );
        assert_eq!(
            reasons(&pod("p", "1", "2Gi"), &ni),
            vec!["Insufficient cpu", "Insufficient memory"]
        );
        let other = pod("b", "0", "0");
        let full = NodeInfo {
            node: &n,
            pods: vec![&existing, &other],
        };
        assert_eq!(reasons(&pod("p", "0", "0"), &full), vec!["Too many pods"]);
        // The same pod seen twice (assumed, then bound) counts once.
        let twice = NodeInfo {
            node: &n,
            pods: vec![&existing, &existing],
        };
        assert!(filter(&pod("small", "500m", "1Gi"), &twice).is_ok());
    }

    #[test]
    fn node_selector() {
        let n = with(
            node("n1", "4", "8Gi", "110"),
            &["metadata", "labels", "disk"],
            json!("ssd"),
        );
        let p = with(
            pod("p", "1", "1Gi"),
            &["spec", "nodeSelector"],
            json!({"disk": "ssd"}),
        );
        assert!(filter(&p, &info(&n)).is_ok());
        let q = with(
            pod("p", "1", "1Gi"),
            &["spec", "nodeSelector"],
            json!({"disk": "hdd"}),
        );
        assert_eq!(
            reasons(&q, &info(&n)),
            vec!["node(s) didn't match Pod's node affinity/selector"]
        );
        let r = with(
            pod("p", "1", "1Gi"),
            &["spec", "nodeSelector"],
            json!({"gpu": "yes"}),
        );
        assert!(filter(&r, &info(&n)).is_err());
    }

    fn affinity_pod(terms: Value) -> Value {
        with(
            pod("p", "100m", "1Mi"),
            &["spec", "affinity"],
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}),
        )
    }

    #[test]
    fn node_affinity() {
        let n = with(
            node("n1", "4", "8Gi", "110"),
            &["metadata", "labels"],
            json!({"zone": "a", "cores": "16"}),
        );
        let fits = |terms: Value| filter(&affinity_pod(terms), &info(&n)).is_ok();
        let expr = |key: &str, op: &str, values: Value| json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]);
        assert!(fits(expr("zone", "In", json!(["a", "b"]))));
        assert!(!fits(expr("zone", "In", json!(["b"]))));
        assert!(!fits(expr("zone", "NotIn", json!(["a"]))));
        assert!(fits(expr("zone", "NotIn", json!(["b"]))));
        assert!(fits(expr("missing", "NotIn", json!(["b"]))));
        assert!(fits(expr("zone", "Exists", json!([]))));
        assert!(!fits(expr("missing", "Exists", json!([]))));
        assert!(fits(expr("missing", "DoesNotExist", json!([]))));
        assert!(fits(expr("cores", "Gt", json!(["8"]))));
        assert!(!fits(expr("cores", "Gt", json!(["16"]))));
        assert!(!fits(expr("zone", "Gt", json!(["1"]))));
        assert!(fits(expr("cores", "Lt", json!(["32"]))));
        assert!(!fits(expr("zone", "Bogus", json!(["a"]))));
        // Expressions ANDed, terms ORed.
        assert!(!fits(json!([{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]},
            {"key": "cores", "operator": "Lt", "values": ["4"]}
        ]}])));
        assert!(fits(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
        ])));
        // matchFields on metadata.name.
        let field = |op: &str, name: &str| json!([{"matchFields": [{"key": "metadata.name", "operator": op, "values": [name]}]}]);
        assert!(fits(field("In", "n1")));
        assert!(!fits(field("In", "n2")));
        assert!(fits(field("NotIn", "n2")));
        // Empty term and empty term list match nothing.
        assert!(!fits(json!([{}])));
        assert!(!fits(json!([])));
        assert_eq!(
            reasons(&affinity_pod(field("In", "n2")), &info(&n)),
            vec!["node(s) didn't match Pod's node affinity/selector"]
        );
    }

    #[test]
    fn taints_and_tolerations() {
        let n = with(
            node("n1", "4", "8Gi", "110"),
            &["spec", "taints"],
            json!([
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                {"key": "soft", "value": "x", "effect": "PreferNoSchedule"}
            ]),
        );
        let tolerating = |tolerations: Value| {
            with(
                pod("p", "100m", "1Mi"),
                &["spec", "tolerations"],
                tolerations,
            )
        };
        assert_eq!(
            reasons(&pod("p", "100m", "1Mi"), &info(&n)),
            vec!["node(s) had untolerated taint {dedicated: gpu}"]
        );
        let fits = |t: Value| filter(&tolerating(t), &info(&n)).is_ok();
        assert!(fits(
            json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}])
        ));
        assert!(fits(json!([{"key": "dedicated", "value": "gpu"}])));
        assert!(!fits(
            json!([{"key": "dedicated", "operator": "Equal", "value": "cpu"}])
        ));
        assert!(!fits(
            json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"}])
        ));
        assert!(fits(json!([{"key": "dedicated", "operator": "Exists"}])));
        assert!(fits(json!([{"operator": "Exists"}])));
        assert!(!fits(json!([{"key": "other", "operator": "Exists"}])));
        let noexec = with(
            node("n2", "4", "8Gi", "110"),
            &["spec", "taints"],
            json!([{"key": "k", "effect": "NoExecute"}]),
        );
        assert_eq!(
            reasons(&pod("p", "100m", "1Mi"), &info(&noexec)),
            vec!["node(s) had untolerated taint {k: }"]
        );
    }

    #[test]
    fn unschedulable_node() {
        let n = with(
            node("n1", "4", "8Gi", "110"),
            &["spec", "unschedulable"],
            json!(true),
        );
        assert_eq!(
            reasons(&pod("p", "100m", "1Mi"), &info(&n)),
            vec!["node(s) were unschedulable"]
        );
        let tolerant = with(
            pod("p", "100m", "1Mi"),
            &["spec", "tolerations"],
            json!([{"key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]),
        );
        assert!(filter(&tolerant, &info(&n)).is_ok());
    }

    #[test]
    fn not_ready_node() {
        for status in ["False", "Unknown"] {
            let n = with(
                node("n1", "4", "8Gi", "110"),
                &["status", "conditions"],
                json!([{"type": "Ready", "status": status}]),
            );
            assert_eq!(
                reasons(&pod("p", "100m", "1Mi"), &info(&n)),
                vec!["node(s) had condition NotReady"]
            );
            // The default NoExecute toleration does not help; a NoSchedule one does.
            let default_only = with(
                pod("p", "100m", "1Mi"),
                &["spec", "tolerations"],
                json!([{"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
            );
            assert!(filter(&default_only, &info(&n)).is_err());
            let tolerant = with(
                pod("p", "100m", "1Mi"),
                &["spec", "tolerations"],
                json!([{"key": TAINT_NOT_READY, "operator": "Exists"}]),
            );
            assert!(filter(&tolerant, &info(&n)).is_ok());
        }
        let no_status = json!({"metadata": {"name": "bare"}});
        assert!(reasons(&pod("p", "0", "0"), &info(&no_status))
            .contains(&"node(s) had condition NotReady".to_string()));
    }

    fn port_pod(name: &str, port: i64, protocol: &str, ip: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"ports": [{"containerPort": 80, "hostPort": port, "protocol": protocol, "hostIP": ip}]}]}
        })
    }

    #[test]
    fn host_ports() {
        let n = node("n1", "4", "8Gi", "110");
        let existing = port_pod("a", 8080, "TCP", "");
        let ni = NodeInfo {
            node: &n,
            pods: vec![&existing],
        };
        assert_eq!(
            reasons(&port_pod("b", 8080, "TCP", ""), &ni),
            vec!["node(s) didn't have free ports for the requested pod ports"]
        );
        assert!(filter(&port_pod("b", 8080, "UDP", ""), &ni).is_ok());
        assert!(filter(&port_pod("b", 8081, "TCP", ""), &ni).is_ok());
        // 0.0.0.0 conflicts with any specific address.
        assert!(filter(&port_pod("b", 8080, "TCP", "10.0.0.1"), &ni).is_err());
        let specific = port_pod("a", 9090, "TCP", "10.0.0.1");
        let ni = NodeInfo {
            node: &n,
            pods: vec![&specific],
        };
        assert!(filter(&port_pod("b", 9090, "TCP", "10.0.0.2"), &ni).is_ok());
        assert!(filter(&port_pod("b", 9090, "TCP", "10.0.0.1"), &ni).is_err());
        assert!(filter(&port_pod("b", 9090, "TCP", "0.0.0.0"), &ni).is_err());
        // Removing the pod frees its port.
        let mut summary = NodeSummary::from_info(&ni);
        assert!(summary.remove_pod(&specific));
        assert!(
            filter_summary(&PodSummary::new(&port_pod("b", 9090, "TCP", "")), &summary).is_ok()
        );
    }

    #[test]
    fn least_allocated_prefers_emptier_node() {
        let busy = node("a-busy", "4", "8Gi", "110");
        let idle = node("b-idle", "4", "8Gi", "110");
        let load = pod("load", "3", "6Gi");
        let busy_info = NodeInfo {
            node: &busy,
            pods: vec![&load],
        };
        let idle_info = info(&idle);
        let p = pod("p", "500m", "1Gi");
        assert!(score(&p, &idle_info, 0) > score(&p, &busy_info, 0));
        let nodes = [busy_info, idle_info];
        assert_eq!(schedule(&p, &nodes, 0).as_deref(), Ok("b-idle"));
        // Exact numbers on the empty node: cpu (4000-500)/4000 = 87, mem 87 -> 87;
        // balanced: fractions equal -> 100; no owner/labels -> no spreading.
        assert_eq!(score(&p, &nodes[1], 0), (87 + 100) / 2);
    }

    #[test]
    fn balanced_allocation_prefers_balanced_node() {
        let n1 = node("n1", "4", "8Gi", "110");
        let n2 = node("n2", "4", "8Gi", "110");
        let cpu_heavy = pod("x", "2", "0");
        let mixed = pod("y", "1", "2Gi");
        let a = NodeInfo {
            node: &n1,
            pods: vec![&cpu_heavy],
        };
        let b = NodeInfo {
            node: &n2,
            pods: vec![&mixed],
        };
        let p = pod("p", "1", "2Gi");
        assert!(score(&p, &b, 0) > score(&p, &a, 0));
    }

    fn owned(name: &str, uid: &str) -> Value {
        with(
            pod(name, "100m", "128Mi"),
            &["metadata", "ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}]),
        )
    }

    #[test]
    fn spreading_prefers_node_without_siblings() {
        let n1 = node("a", "4", "8Gi", "110");
        let n2 = node("b", "4", "8Gi", "110");
        let sibling = owned("s1", "rs-1");
        let stranger = owned("s2", "rs-2");
        // Same load on both nodes; only ownership differs.
        let a = NodeInfo {
            node: &n1,
            pods: vec![&sibling],
        };
        let b = NodeInfo {
            node: &n2,
            pods: vec![&stranger],
        };
        let p = owned("new", "rs-1");
        assert_eq!(same_owner(&p, &a), 1);
        assert_eq!(same_owner(&p, &b), 0);
        assert!(score(&p, &b, 1) > score(&p, &a, 1));
        assert_eq!(schedule(&p, &[a, b], 0).as_deref(), Ok("b"));
        // Pods without an owner are grouped by labels.
        let labelled = |name: &str| {
            with(
                pod(name, "100m", "128Mi"),
                &["metadata", "labels"],
                json!({"app": "web"}),
            )
        };
        let l1 = labelled("w1");
        let a = NodeInfo {
            node: &n1,
            pods: vec![&l1],
        };
        assert_eq!(same_owner(&labelled("w2"), &a), 1);
        assert_eq!(same_owner(&pod("plain", "1", "1"), &a), 0);
    }

    #[test]
    fn unschedulable_message_mixed_reasons() {
        let cordoned = with(
            node("n1", "4", "8Gi", "110"),
            &["spec", "unschedulable"],
            json!(true),
        );
        let small1 = node("n2", "1", "8Gi", "110");
        let small2 = node("n3", "1", "8Gi", "110");
        let nodes = [info(&cordoned), info(&small1), info(&small2)];
        let p = pod("p", "2", "1Gi");
        assert_eq!(
            schedule(&p, &nodes, 0),
            Err(
                "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu. \
                 preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
                 2 No preemption victims found for incoming pod."
                    .to_string()
            )
        );
        let tainted = with(
            node("n4", "4", "8Gi", "110"),
            &["spec", "taints"],
            json!([{"key": TAINT_NOT_READY, "effect": "NoSchedule"}]),
        );
        let big = pod("p", "64", "1Gi");
        let nodes = [info(&small1), info(&tainted)];
        let msg = schedule(&big, &nodes, 0).unwrap_err();
        assert!(msg.starts_with(
            "0/2 nodes are available: 1 Insufficient cpu, \
             1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
        ));
        let never = with(big.clone(), &["spec", "preemptionPolicy"], json!("Never"));
        assert!(schedule(&never, &nodes, 0)
            .unwrap_err()
            .ends_with("preemption: not eligible due to preemptionPolicy=Never."));
        assert_eq!(schedule(&big, &[], 0), Err(NO_NODES_AVAILABLE.to_string()));
        // filter reports every reason, schedule only the first failing plugin's.
        let both = with(
            cordoned.clone(),
            &["spec", "taints"],
            json!([{"key": "k", "effect": "NoSchedule"}]),
        );
        assert_eq!(
            reasons(&big, &info(&both)),
            vec![
                "node(s) were unschedulable",
                "node(s) had untolerated taint {k: }",
                "Insufficient cpu"
            ]
        );
        assert!(schedule(&big, &[info(&both)], 0)
            .unwrap_err()
            .starts_with("0/1 nodes are available: 1 node(s) were unschedulable."));
    }

    #[test]
    fn ties_broken_by_name_and_round_robin() {
        let names = ["c", "a", "b"];
        let nodes: Vec<Value> = names.iter().map(|n| node(n, "4", "8Gi", "110")).collect();
        let infos: Vec<NodeInfo> = nodes.iter().map(info).collect();
        let p = pod("p", "1", "1Gi");
        let picks: Vec<String> = (0..4).map(|t| schedule(&p, &infos, t).unwrap()).collect();
        assert_eq!(picks, vec!["a", "b", "c", "a"]);
    }

    #[test]
    fn incremental_summary_matches_rebuild() {
        let n = node("n1", "8", "16Gi", "110");
        let pods: Vec<Value> = (0..5)
            .map(|i| port_pod(&format!("p{i}"), 8000 + i, "TCP", ""))
            .chain((0..5).map(|i| owned(&format!("o{i}"), "rs")))
            .collect();
        let mut summary = NodeSummary::new(&n);
        for p in &pods {
            summary.add_pod(p);
            summary.add_pod(p);
        }
        for p in &pods[..3] {
            assert!(summary.remove_pod(p));
        }
        assert!(!summary.remove_pod(&pods[0]));
        let finished = with(pods[9].clone(), &["status", "phase"], json!("Succeeded"));
        summary.add_pod(&finished);
        let expected = NodeSummary::from_info(&NodeInfo {
            node: &n,
            pods: pods[3..9].iter().collect(),
        });
        assert_eq!(summary.requested, expected.requested);
        assert_eq!(summary.non_zero_requested, expected.non_zero_requested);
        assert_eq!(summary.owner_counts, expected.owner_counts);
        let mut a = summary.host_ports.clone();
        let mut b = expected.host_ports.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(summary.pod_count(), 6);
    }

    #[test]
    fn garbage_inputs_do_not_panic() {
        let garbage = [
            json!(null),
            json!(42),
            json!("pod"),
            json!([]),
            json!({"spec": 3, "metadata": []}),
            json!({"spec": {"containers": {"a": 1}, "tolerations": [1, null], "nodeSelector": [],
                            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [1, {"matchExpressions": "x"}]}}}},
                   "status": {"allocatable": {"cpu": []}, "conditions": {"type": "Ready"}}}),
            json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "lots", "memory": 12}}, "ports": [{"hostPort": "80"}]}],
                            "taints": [null, {"effect": 5}], "unschedulable": "yes"},
                   "metadata": {"labels": {"a": 1}, "ownerReferences": [{"controller": "true"}]}}),
        ];
        for p in &garbage {
            for n in &garbage {
                let ni = NodeInfo {
                    node: n,
                    pods: vec![p, n],
                };
                let _ = filter(p, &ni);
                let _ = score(p, &ni, 0);
                let _ = same_owner(p, &ni);
                let _ = schedule(p, &[ni], 7);
            }
        }
    }

    #[test]
    fn large_clusters_are_sampled_as_kube_scheduler_samples_them() {
        assert_eq!(feasible_nodes_to_find(0), 0);
        assert_eq!(feasible_nodes_to_find(99), 99);
        assert_eq!(feasible_nodes_to_find(150), 100);
        assert_eq!(feasible_nodes_to_find(1_000), 420);
        assert_eq!(feasible_nodes_to_find(5_000), 500);
        assert_eq!(feasible_nodes_to_find(10_000), 500);
        assert_eq!(feasible_nodes_to_find(100_000), 5_000);
        let nodes: Vec<NodeSummary> = (0..1_000)
            .map(|i| NodeSummary::new(&node(&format!("n{i:04}"), "4", "8Gi", "110")))
            .collect();
        let pod = PodSummary::new(&owned("p", "rs"));
        // Every node fits: 420 are filtered, and the next decision starts after them.
        let mut next = 990;
        let at = select_node(&pod, &nodes, 0, &mut next).unwrap();
        assert_eq!(next, (990 + 420) % 1_000);
        assert!(!(410..990).contains(&at), "chosen among the filtered: {at}");
        // Only the last node fits: every node is filtered to find it.
        let mut nodes = nodes;
        for n in nodes.iter_mut().take(999) {
            n.unschedulable = true;
        }
        let mut next = 5;
        assert_eq!(select_node(&pod, &nodes, 0, &mut next), Ok(999));
        assert_eq!(next, 5);
        nodes[999].unschedulable = true;
        let why = select_node(&pod, &nodes, 0, &mut next).unwrap_err();
        assert!(
            why.starts_with("0/1000 nodes are available: 1000 node(s) were unschedulable."),
            "{why}"
        );
    }

    /// 1,000 pods over 5,000 nodes (a tenth tainted, a quarter of the pods pinned to one zone)
    /// all fit, and no two of one owner share a node. Its speed is measured by
    /// `SKIFF_BENCH_ONLY=algorithm cargo bench --bench workloads`, not here.
    #[test]
    fn places_1000_pods_over_5000_nodes_spreading_each_owner() {
        let nodes: Vec<Value> = (0..5000)
            .map(|i| {
                let mut n = node(&format!("node-{i:05}"), "16", "64Gi", "110");
                n["metadata"]["labels"]["zone"] = json!(format!("zone-{}", i % 3));
                if i % 10 == 0 {
                    n["spec"]["taints"] =
                        json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]);
                }
                n
            })
            .collect();
        let mut summaries: Vec<NodeSummary> = nodes.iter().map(NodeSummary::new).collect();
        let index: HashMap<String, usize> = summaries
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let pods: Vec<Value> = (0..1000)
            .map(|i| {
                let mut p = owned(&format!("pod-{i}"), &format!("rs-{}", i % 50));
                if i % 4 == 0 {
                    p["spec"]["nodeSelector"] = json!({"zone": "zone-1"});
                }
                p
            })
            .collect();
        for (i, p) in pods.iter().enumerate() {
            let name = schedule_summaries(p, &summaries, i).expect("schedulable");
            let at = index[&name];
            assert!(!i.is_multiple_of(4) || at % 3 == 1, "{name} is in zone-1");
            assert!(!at.is_multiple_of(10), "{name} is tainted");
            summaries[at].add_pod(p);
        }
        let placed: usize = summaries.iter().map(NodeSummary::pod_count).sum();
        assert_eq!(placed, pods.len());
        assert!(summaries
            .iter()
            .all(|s| s.owner_counts.values().all(|c| *c <= 1)));
    }

    fn labelled(name: &str, app: &str, affinity: Value) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {"affinity": affinity, "containers": [{"name": "c"}]}
        })
    }

    fn anti(app: &str) -> Value {
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}})
    }

    fn two_nodes() -> Vec<NodeSummary> {
        vec![
            NodeSummary::new(&node("n1", "4", "8Gi", "110")),
            NodeSummary::new(&node("n2", "4", "8Gi", "110")),
        ]
    }

    #[test]
    fn required_anti_affinity_keeps_replicas_apart_and_reports_kube_s_reason() {
        let mut nodes = two_nodes();
        let first = labelled("web-1", "web", anti("web"));
        let at = schedule_summaries(&first, &nodes, 0).unwrap();
        nodes
            .iter_mut()
            .find(|n| n.name == at)
            .unwrap()
            .add_pod(&first);
        let second = labelled("web-2", "web", anti("web"));
        let at2 = schedule_summaries(&second, &nodes, 0).unwrap();
        assert_ne!(at, at2, "the second replica goes to the other node");
        nodes
            .iter_mut()
            .find(|n| n.name == at2)
            .unwrap()
            .add_pod(&second);
        let third = labelled("web-3", "web", anti("web"));
        assert_eq!(
            schedule_summaries(&third, &nodes, 0).unwrap_err(),
            "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules. \
             preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
        );
        // Another app is not kept away.
        assert!(schedule_summaries(&labelled("db", "db", json!({})), &nodes, 0).is_ok());
    }

    #[test]
    fn an_existing_pod_s_anti_affinity_keeps_matching_pods_off_its_node() {
        let mut nodes = two_nodes();
        nodes[0].add_pod(&labelled("loner", "loner", anti("web")));
        let web = labelled("web", "web", json!({}));
        assert_eq!(schedule_summaries(&web, &nodes, 0).unwrap(), "n2");
        nodes[1].add_pod(&labelled("loner-2", "loner", anti("web")));
        let err = schedule_summaries(&web, &nodes, 0).unwrap_err();
        assert!(
            err.starts_with("0/2 nodes are available: 2 node(s) didn't satisfy existing pods anti-affinity rules."),
            "{err}"
        );
    }

    #[test]
    fn required_affinity_follows_its_pods_and_waits_for_absent_ones() {
        let mut nodes = two_nodes();
        let with = |app: &str| {
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}})
        };
        // Nothing runs with app=cache: a pod wanting to be near one waits.
        let err =
            schedule_summaries(&labelled("near", "web", with("cache")), &nodes, 0).unwrap_err();
        assert!(
            err.starts_with("0/2 nodes are available: 2 node(s) didn't match pod affinity rules."),
            "{err}"
        );
        // The first pod of a group that wants to be together goes anywhere.
        assert!(schedule_summaries(&labelled("self", "cache", with("cache")), &nodes, 0).is_ok());
        nodes[1].add_pod(&labelled("cache-1", "cache", json!({})));
        for i in 0..4 {
            let p = labelled(&format!("near-{i}"), "web", with("cache"));
            assert_eq!(schedule_summaries(&p, &nodes, i).unwrap(), "n2");
        }
    }

    #[test]
    fn topology_spread_keeps_the_skew_and_needs_the_label() {
        let zoned = |name: &str, zone: Option<&str>| {
            let mut n = node(name, "4", "8Gi", "110");
            if let Some(z) = zone {
                n["metadata"]["labels"]["zone"] = json!(z);
            }
            NodeSummary::new(&n)
        };
        let spread = |app: &str, when: &str| {
            json!({"metadata": {"name": "new", "namespace": "default", "labels": {"app": app}},
                "spec": {"containers": [{"name": "c"}], "topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": when,
                     "labelSelector": {"matchLabels": {"app": app}}}]}})
        };
        let mut nodes = vec![
            zoned("a1", Some("a")),
            zoned("a2", Some("a")),
            zoned("b1", Some("b")),
        ];
        nodes[0].add_pod(&labelled("web-0", "web", json!({})));
        // Zone a has one, b none: a second in a would make the skew 2.
        for i in 0..5 {
            assert_eq!(
                schedule_summaries(&spread("web", "DoNotSchedule"), &nodes, i).unwrap(),
                "b1"
            );
        }
        // ScheduleAnyway does not filter.
        let anywhere: std::collections::HashSet<String> = (0..6)
            .map(|i| schedule_summaries(&spread("web", "ScheduleAnyway"), &nodes, i).unwrap())
            .collect();
        assert!(anywhere.len() > 1, "{anywhere:?}");
        // Balanced again, either zone; a node without the key never.
        nodes[2].add_pod(&labelled("web-1", "web", json!({})));
        nodes.push(zoned("nolabel", None));
        let err = schedule_summaries(&spread("web", "DoNotSchedule"), &nodes[3..], 0).unwrap_err();
        assert!(
            err.starts_with("0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label)."),
            "{err}"
        );
        let picked = schedule_summaries(&spread("web", "DoNotSchedule"), &nodes, 0).unwrap();
        assert_ne!(picked, "nolabel");
        // Both zones full to the skew: with b at 1 and a at 1, a third goes anywhere but then
        // a fourth must follow the lower zone.
        nodes[1].add_pod(&labelled("web-2", "web", json!({})));
        assert_eq!(
            schedule_summaries(&spread("web", "DoNotSchedule"), &nodes, 0).unwrap(),
            "b1"
        );
    }
}
