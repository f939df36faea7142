//! Pod specs and pod templates, checked as kube's `ValidatePodSpec` and
//! `ValidatePodTemplateSpec` do: shared by every kind that runs pods (Pod, ReplicaSet,
//! Deployment, and the workload kinds to come).

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::Value;

use super::*;

pub(crate) fn validate_pod_spec(spec: &core::PodSpec, path: &str, errs: &mut Errs) {
    let volumes = validate_volumes(
        spec.volumes.as_deref().unwrap_or_default(),
        &child(path, "volumes"),
        errs,
    );
    let mut names: HashSet<String> = HashSet::new();
    let containers_path = child(path, "containers");
    if spec.containers.is_empty() {
        errs.push(FieldError::required(containers_path.clone(), ""));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        validate_container(
            c,
            &index(&containers_path, i),
            &volumes,
            &mut names,
            false,
            errs,
        );
    }
    let init_path = child(path, "initContainers");
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        validate_container(c, &index(&init_path, i), &volumes, &mut names, true, errs);
    }

    if let Some(policy) = spec.restart_policy.as_deref().filter(|p| !p.is_empty()) {
        const VALID: [&str; 3] = ["Always", "OnFailure", "Never"];
        if !VALID.contains(&policy) {
            errs.push(FieldError::not_supported(
                child(path, "restartPolicy"),
                q(policy),
                &VALID,
            ));
        }
    }
    if let Some(policy) = spec.dns_policy.as_deref().filter(|p| !p.is_empty()) {
        const VALID: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !VALID.contains(&policy) {
            errs.push(FieldError::not_supported(
                child(path, "dnsPolicy"),
                q(policy),
                &VALID,
            ));
        } else if policy == "None" && spec.dns_config.is_none() {
            errs.push(FieldError::required(
                child(path, "dnsConfig"),
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ));
        }
    }
    validate_labels(
        spec.node_selector.as_ref(),
        &child(path, "nodeSelector"),
        errs,
    );
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        for msg in dns1123_subdomain_errors(node) {
            errs.push(FieldError::invalid(child(path, "nodeName"), q(node), &msg));
        }
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        for msg in dns1123_subdomain_errors(sa) {
            errs.push(FieldError::invalid(
                child(path, "serviceAccountName"),
                q(sa),
                &msg,
            ));
        }
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            for msg in dns1123_label_errors(v) {
                errs.push(FieldError::invalid(child(path, field), q(v), &msg));
            }
        }
    }
    if let Some(ads) = spec.active_deadline_seconds {
        if !(1..=i64::from(i32::MAX)).contains(&ads) {
            errs.push(FieldError::invalid(
                child(path, "activeDeadlineSeconds"),
                ads.to_string(),
                &inclusive_range_error(1, i64::from(i32::MAX)),
            ));
        }
    }
    if let Some(grace) = spec.termination_grace_period_seconds {
        if grace < 0 {
            errs.push(FieldError::invalid(
                child(path, "terminationGracePeriodSeconds"),
                grace.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    validate_tolerations(
        spec.tolerations.as_deref().unwrap_or_default(),
        &child(path, "tolerations"),
        errs,
    );
    if spec.host_network == Some(true) {
        for (list, containers) in [
            ("containers", Some(&spec.containers)),
            ("initContainers", spec.init_containers.as_ref()),
        ] {
            for (i, c) in containers.into_iter().flatten().enumerate() {
                for (j, port) in c.ports.iter().flatten().enumerate() {
                    if let Some(h) = port
                        .host_port
                        .filter(|&h| h != 0 && h != port.container_port)
                    {
                        errs.push(FieldError::invalid(
                            child(
                                &index(&child(&index(&child(path, list), i), "ports"), j),
                                "hostPort",
                            ),
                            h.to_string(),
                            "must match `containerPort` when `hostNetwork` is true",
                        ));
                    }
                }
            }
        }
    }
    if let Some(na) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
    {
        let na_path = child(&child(path, "affinity"), "nodeAffinity");
        if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
            let p = child(&na_path, "requiredDuringSchedulingIgnoredDuringExecution");
            if req.node_selector_terms.is_empty() {
                errs.push(FieldError::required(
                    child(&p, "nodeSelectorTerms"),
                    "must have at least one node selector term",
                ));
            }
            for (i, term) in req.node_selector_terms.iter().enumerate() {
                validate_node_selector_term(term, &index(&child(&p, "nodeSelectorTerms"), i), errs);
            }
        }
        for (i, pref) in na
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .enumerate()
        {
            let p = index(
                &child(&na_path, "preferredDuringSchedulingIgnoredDuringExecution"),
                i,
            );
            if !(1..=100).contains(&pref.weight) {
                errs.push(FieldError::invalid(
                    child(&p, "weight"),
                    pref.weight.to_string(),
                    "must be in the range 1-100",
                ));
            }
            validate_node_selector_term(&pref.preference, &child(&p, "preference"), errs);
        }
    }
}

/// A node selector term's requirements, as kube's `validateNodeSelectorRequirement`.
pub(crate) fn validate_node_selector_term(
    term: &core::NodeSelectorTerm,
    path: &str,
    errs: &mut Errs,
) {
    for (i, rq) in term.match_expressions.iter().flatten().enumerate() {
        let p = index(&child(path, "matchExpressions"), i);
        let n = rq.values.as_ref().map_or(0, Vec::len);
        match rq.operator.as_str() {
            "In" | "NotIn" if n == 0 => errs.push(FieldError::required(
                child(&p, "values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if n > 0 => errs.push(FieldError::forbidden(
                child(&p, "values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "Gt" | "Lt" if n != 1 => errs.push(FieldError::required(
                child(&p, "values"),
                "must be specified single value when `operator` is 'Lt' or 'Gt'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
            other => errs.push(FieldError::invalid(
                child(&p, "operator"),
                q(other),
                "not a valid selector operator",
            )),
        }
    }
}

/// Checks volumes and returns their names.
pub(crate) fn validate_volumes(
    volumes: &[core::Volume],
    path: &str,
    errs: &mut Errs,
) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, vol) in volumes.iter().enumerate() {
        let p = index(path, i);
        if vol.name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else {
            for msg in dns1123_label_errors(&vol.name) {
                errs.push(FieldError::invalid(child(&p, "name"), q(&vol.name), &msg));
            }
            if !names.insert(vol.name.clone()) {
                errs.push(FieldError::duplicate(child(&p, "name"), q(&vol.name), ""));
            }
        }
        if let Ok(Value::Object(fields)) = serde_json::to_value(vol) {
            let sources: Vec<&String> = fields
                .iter()
                .filter(|(k, v)| k.as_str() != "name" && !v.is_null())
                .map(|(k, _)| k)
                .collect();
            match sources.as_slice() {
                [] => errs.push(FieldError::required(
                    p.clone(),
                    "must specify a volume type",
                )),
                [_] => {}
                [_, second, ..] => errs.push(FieldError::forbidden(
                    child(&p, second),
                    "may not specify more than 1 volume type",
                )),
            }
        }
    }
    names
}

pub(crate) fn validate_container(
    c: &core::Container,
    path: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    is_init: bool,
    errs: &mut Errs,
) {
    let name_path = child(path, "name");
    if c.name.is_empty() {
        errs.push(FieldError::required(name_path, ""));
    } else {
        for msg in dns1123_label_errors(&c.name) {
            errs.push(FieldError::invalid(name_path.clone(), q(&c.name), &msg));
        }
        if !names.insert(c.name.clone()) {
            errs.push(FieldError::duplicate(name_path, q(&c.name), ""));
        }
    }
    match c.image.as_deref() {
        None | Some("") => errs.push(FieldError::required(child(path, "image"), "")),
        Some(image) if image.trim() != image => errs.push(FieldError::invalid(
            child(path, "image"),
            q(image),
            "must not have leading or trailing whitespace",
        )),
        Some(_) => {}
    }
    if let Some(policy) = c.image_pull_policy.as_deref().filter(|p| !p.is_empty()) {
        const VALID: [&str; 3] = ["Always", "IfNotPresent", "Never"];
        if !VALID.contains(&policy) {
            errs.push(FieldError::not_supported(
                child(path, "imagePullPolicy"),
                q(policy),
                &VALID,
            ));
        }
    }
    if let Some(policy) = c
        .termination_message_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        const VALID: [&str; 2] = ["File", "FallbackToLogsOnError"];
        if !VALID.contains(&policy) {
            errs.push(FieldError::not_supported(
                child(path, "terminationMessagePolicy"),
                q(policy),
                &VALID,
            ));
        }
    }
    if let Some(policy) = c.restart_policy.as_deref() {
        if !is_init {
            errs.push(FieldError::forbidden(
                child(path, "restartPolicy"),
                "may not be set for non-init containers",
            ));
        } else if policy != "Always" {
            errs.push(FieldError::not_supported(
                child(path, "restartPolicy"),
                q(policy),
                &["Always"],
            ));
        }
    }
    // A plain init container runs to completion: no probes, no lifecycle hooks (a sidecar,
    // an init container with restartPolicy Always, may have them).
    let sidecar = is_init && c.restart_policy.as_deref() == Some("Always");
    if is_init && !sidecar {
        for (field, set) in [
            ("lifecycle", c.lifecycle.is_some()),
            ("livenessProbe", c.liveness_probe.is_some()),
            ("readinessProbe", c.readiness_probe.is_some()),
            ("startupProbe", c.startup_probe.is_some()),
        ] {
            if set {
                errs.push(FieldError::forbidden(
                    child(path, field),
                    "may not be set for init containers without restartPolicy=Always",
                ));
            }
        }
    } else {
        for (field, probe, one_success) in [
            ("livenessProbe", &c.liveness_probe, true),
            ("readinessProbe", &c.readiness_probe, false),
            ("startupProbe", &c.startup_probe, true),
        ] {
            if let Some(probe) = probe {
                validate_probe(probe, &child(path, field), one_success, errs);
            }
        }
    }
    validate_ports(
        c.ports.as_deref().unwrap_or_default(),
        &child(path, "ports"),
        errs,
    );
    validate_env(
        c.env.as_deref().unwrap_or_default(),
        &child(path, "env"),
        errs,
    );
    validate_env_from(
        c.env_from.as_deref().unwrap_or_default(),
        &child(path, "envFrom"),
        errs,
    );
    if let Some(res) = &c.resources {
        validate_resources(res, &child(path, "resources"), errs);
    }
    validate_volume_mounts(
        c.volume_mounts.as_deref().unwrap_or_default(),
        volumes,
        &child(path, "volumeMounts"),
        errs,
    );
}

/// A probe as kube's `validateProbe`: one handler exactly, non-negative timings; a liveness
/// or startup probe succeeds once (`successThreshold` 1).
pub(crate) fn validate_probe(probe: &core::Probe, path: &str, one_success: bool, errs: &mut Errs) {
    let handlers = [
        ("exec", probe.exec.is_some()),
        ("httpGet", probe.http_get.is_some()),
        ("tcpSocket", probe.tcp_socket.is_some()),
        ("grpc", probe.grpc.is_some()),
    ];
    let mut seen = 0;
    for (name, set) in handlers {
        if !set {
            continue;
        }
        if seen > 0 {
            errs.push(FieldError::forbidden(
                child(path, name),
                "may not specify more than 1 handler type",
            ));
        }
        seen += 1;
    }
    if seen == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    for (field, value) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if let Some(v) = value.filter(|v| *v < 0) {
            errs.push(FieldError::invalid(
                child(path, field),
                v.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    if one_success {
        if let Some(v) = probe.success_threshold.filter(|v| *v != 1) {
            errs.push(FieldError::invalid(
                child(path, "successThreshold"),
                v.to_string(),
                "must be 1",
            ));
        }
    }
}

/// The downward API fields an env var may read (kube's
/// `validEnvDownwardAPIFieldPathExpressions`, sorted as its error lists them).
pub(crate) const ENV_FIELD_PATHS: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// An env var's `fieldRef.fieldPath`: one of [`ENV_FIELD_PATHS`], or a label or annotation
/// by key (`metadata.labels['app']`).
pub(crate) fn validate_env_field_path(field_path: &str, path: &str, errs: &mut Errs) {
    if let Some((base, rest)) = field_path.split_once('[') {
        let key = rest
            .strip_suffix(']')
            .and_then(|k| k.strip_prefix('\''))
            .and_then(|k| k.strip_suffix('\''));
        match (base, key) {
            ("metadata.labels" | "metadata.annotations", Some(k)) if !k.is_empty() => {}
            ("metadata.labels" | "metadata.annotations", _) => errs.push(FieldError::invalid(
                child(path, "fieldPath"),
                q(field_path),
                "invalid subscript",
            )),
            _ => errs.push(FieldError::invalid(
                path.to_string(),
                q(base),
                "does not support subscript",
            )),
        }
    } else if !ENV_FIELD_PATHS.contains(&field_path) {
        errs.push(FieldError::not_supported(
            child(path, "fieldPath"),
            q(field_path),
            &ENV_FIELD_PATHS,
        ));
    }
}

pub(crate) fn validate_ports(ports: &[core::ContainerPort], path: &str, errs: &mut Errs) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index(path, i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = port_name_errors(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    errs.push(FieldError::invalid(child(&p, "name"), q(name), &msg));
                }
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&p, "name"), q(name), ""));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(child(&p, "containerPort"), ""));
        } else if !(1..=65535).contains(&port.container_port) {
            errs.push(FieldError::invalid(
                child(&p, "containerPort"),
                port.container_port.to_string(),
                &inclusive_range_error(1, 65535),
            ));
        }
        if let Some(host_port) = port.host_port.filter(|&h| h != 0) {
            if !(1..=65535).contains(&host_port) {
                errs.push(FieldError::invalid(
                    child(&p, "hostPort"),
                    host_port.to_string(),
                    &inclusive_range_error(1, 65535),
                ));
            }
        }
        if let Some(proto) = port.protocol.as_deref().filter(|p| !p.is_empty()) {
            const VALID: [&str; 3] = ["SCTP", "TCP", "UDP"];
            if !VALID.contains(&proto) {
                errs.push(FieldError::not_supported(
                    child(&p, "protocol"),
                    q(proto),
                    &VALID,
                ));
            }
        }
    }
}

pub(crate) fn validate_env(env: &[core::EnvVar], path: &str, errs: &mut Errs) {
    for (i, ev) in env.iter().enumerate() {
        let p = index(path, i);
        if ev.name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else {
            for msg in env_var_name_errors(&ev.name) {
                errs.push(FieldError::invalid(child(&p, "name"), q(&ev.name), &msg));
            }
        }
        let Some(from) = &ev.value_from else { continue };
        let fp = child(&p, "valueFrom");
        let mut sources = 0;
        if let Some(f) = &from.field_ref {
            sources += 1;
            if f.field_path.is_empty() {
                errs.push(FieldError::required(
                    child(&child(&fp, "fieldRef"), "fieldPath"),
                    "",
                ));
            } else {
                validate_env_field_path(&f.field_path, &child(&fp, "fieldRef"), errs);
            }
        }
        if let Some(r) = &from.resource_field_ref {
            sources += 1;
            if r.resource.is_empty() {
                errs.push(FieldError::required(
                    child(&child(&fp, "resourceFieldRef"), "resource"),
                    "",
                ));
            }
        }
        if let Some(r) = &from.config_map_key_ref {
            sources += 1;
            validate_key_selector(&r.name, &r.key, &child(&fp, "configMapKeyRef"), errs);
        }
        if let Some(r) = &from.secret_key_ref {
            sources += 1;
            validate_key_selector(&r.name, &r.key, &child(&fp, "secretKeyRef"), errs);
        }
        let has_value = ev.value.as_deref().is_some_and(|v| !v.is_empty());
        if sources == 0 {
            errs.push(FieldError::invalid(
                fp,
                q(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if has_value {
            errs.push(FieldError::invalid(
                fp,
                q(""),
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                fp,
                q(""),
                "may not have more than one field specified at a time",
            ));
        }
    }
}

pub(crate) fn validate_key_selector(name: &str, k: &str, path: &str, errs: &mut Errs) {
    for msg in dns1123_subdomain_errors(name) {
        errs.push(FieldError::invalid(child(path, "name"), q(name), &msg));
    }
    if k.is_empty() {
        errs.push(FieldError::required(child(path, "key"), ""));
    } else {
        for msg in config_map_key_errors(k) {
            errs.push(FieldError::invalid(child(path, "key"), q(k), &msg));
        }
    }
}

pub(crate) fn validate_env_from(env_from: &[core::EnvFromSource], path: &str, errs: &mut Errs) {
    for (i, ev) in env_from.iter().enumerate() {
        let p = index(path, i);
        if let Some(prefix) = ev.prefix.as_deref().filter(|p| !p.is_empty()) {
            for msg in env_var_name_errors(prefix) {
                errs.push(FieldError::invalid(child(&p, "prefix"), q(prefix), &msg));
            }
        }
        let sources =
            usize::from(ev.config_map_ref.is_some()) + usize::from(ev.secret_ref.is_some());
        for (field, name) in [
            ("configMapRef", ev.config_map_ref.as_ref().map(|r| &r.name)),
            ("secretRef", ev.secret_ref.as_ref().map(|r| &r.name)),
        ] {
            if let Some(name) = name {
                for msg in dns1123_subdomain_errors(name) {
                    errs.push(FieldError::invalid(
                        child(&child(&p, field), "name"),
                        q(name),
                        &msg,
                    ));
                }
            }
        }
        if sources == 0 {
            errs.push(FieldError::invalid(
                p,
                q(""),
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                p,
                q(""),
                "may not have more than one field specified at a time",
            ));
        }
    }
}

pub(crate) fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

pub(crate) fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

pub(crate) fn is_extended_resource(name: &str) -> bool {
    !is_native_resource(name)
        && !name.starts_with("requests.")
        && qualified_name_errors(&format!("requests.{name}")).is_empty()
}

pub(crate) fn validate_resource_name(name: &str, path: &str, errs: &mut Errs) {
    for msg in qualified_name_errors(name) {
        errs.push(FieldError::invalid(path, q(name), &msg));
    }
    if !name.contains('/') {
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !is_hugepages(name) {
            errs.push(FieldError::invalid(
                path,
                q(name),
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native_resource(name) && !is_extended_resource(name) {
        errs.push(FieldError::invalid(
            path,
            q(name),
            "doesn't follow extended resource name standard",
        ));
    }
}

/// Checks one resource quantity and returns it when it parsed.
pub(crate) fn validate_quantity(
    name: &str,
    raw: &str,
    path: &str,
    errs: &mut Errs,
) -> Option<Quantity> {
    let Some(quantity) = parse_quantity(raw) else {
        errs.push(FieldError::invalid(path, q(raw), QUANTITY_ERR));
        return None;
    };
    if quantity.is_negative() {
        errs.push(FieldError::invalid(
            path,
            q(raw),
            "must be greater than or equal to 0",
        ));
    }
    if is_extended_resource(name) && !quantity.is_integer() {
        errs.push(FieldError::invalid(path, q(raw), "must be an integer"));
    }
    Some(quantity)
}

pub(crate) fn validate_resources(res: &core::ResourceRequirements, path: &str, errs: &mut Errs) {
    let limits_path = child(path, "limits");
    let requests_path = child(path, "requests");
    let mut limits: BTreeMap<&str, (Quantity, &str)> = BTreeMap::new();
    for (name, value) in res.limits.iter().flatten() {
        let p = key(&limits_path, name);
        validate_resource_name(name, &p, errs);
        if let Some(qty) = validate_quantity(name, &value.0, &p, errs) {
            limits.insert(name.as_str(), (qty, value.0.as_str()));
        }
    }
    for (name, value) in res.requests.iter().flatten() {
        let p = key(&requests_path, name);
        validate_resource_name(name, &p, errs);
        let Some(request) = validate_quantity(name, &value.0, &p, errs) else {
            continue;
        };
        let Some((limit, limit_raw)) = limits.get(name.as_str()) else {
            continue;
        };
        let overcommit = is_native_resource(name) && !is_hugepages(name);
        let ord = request.cmp_value(limit);
        if !overcommit && ord != std::cmp::Ordering::Equal {
            errs.push(FieldError::invalid(
                p,
                q(&value.0),
                &format!("must be equal to {name} limit of {limit_raw}"),
            ));
        } else if ord == std::cmp::Ordering::Greater {
            errs.push(FieldError::invalid(
                p,
                q(&value.0),
                &format!("must be less than or equal to {name} limit of {limit_raw}"),
            ));
        }
    }
}

pub(crate) fn validate_volume_mounts(
    mounts: &[core::VolumeMount],
    volumes: &HashSet<String>,
    path: &str,
    errs: &mut Errs,
) {
    let mut mount_points = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = index(path, i);
        if m.name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else if !volumes.contains(&m.name) {
            errs.push(FieldError::not_found(child(&p, "name"), q(&m.name)));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(child(&p, "mountPath"), ""));
        } else if !mount_points.insert(m.mount_path.clone()) {
            errs.push(FieldError::invalid(
                child(&p, "mountPath"),
                q(&m.mount_path),
                "must be unique",
            ));
        }
    }
}

pub(crate) const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

pub(crate) fn validate_tolerations(tolerations: &[core::Toleration], path: &str, errs: &mut Errs) {
    for (i, t) in tolerations.iter().enumerate() {
        let p = index(path, i);
        let k = t.key.as_deref().unwrap_or_default();
        let op = t.operator.as_deref().unwrap_or_default();
        let value = t.value.as_deref().unwrap_or_default();
        let effect = t.effect.as_deref().unwrap_or_default();
        if !k.is_empty() {
            for msg in qualified_name_errors(k) {
                errs.push(FieldError::invalid(child(&p, "key"), q(k), &msg));
            }
        }
        if k.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                child(&p, "operator"),
                q(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                child(&p, "effect"),
                q(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "" | "Equal" => {
                for msg in label_value_errors(value) {
                    errs.push(FieldError::invalid(child(&p, "operator"), q(value), &msg));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(FieldError::invalid(
                        child(&p, "operator"),
                        render_ser(t),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                child(&p, "operator"),
                q(other),
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            errs.push(FieldError::not_supported(
                child(&p, "effect"),
                q(effect),
                &TAINT_EFFECTS,
            ));
        }
    }
}

/// Checks the selector and pod template shared by ReplicaSet and Deployment.
pub(crate) fn validate_workload(
    obj: &Value,
    selector: &meta::LabelSelector,
    template: Option<&core::PodTemplateSpec>,
    errs: &mut Errs,
) {
    let selector_given = obj
        .get("spec")
        .and_then(|s| s.get("selector"))
        .is_some_and(|s| !s.is_null());
    let mut selector_usable = false;
    if !selector_given {
        errs.push(FieldError::required("spec.selector", ""));
    } else {
        let valid = validate_label_selector(selector, "spec.selector", errs);
        if selector_is_empty(selector) {
            errs.push(FieldError::invalid(
                "spec.selector",
                render_ser(selector),
                "empty selector is invalid for deployment",
            ));
        } else {
            selector_usable = valid;
        }
    }

    let default_template = core::PodTemplateSpec::default();
    let template = template.unwrap_or(&default_template);
    let empty = BTreeMap::new();
    let template_meta = template.metadata.as_ref();
    let labels = template_meta
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&empty);
    if selector_usable && !selector_matches(selector, labels) {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            render_string_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
    validate_labels(
        template_meta.and_then(|m| m.labels.as_ref()),
        "spec.template.metadata.labels",
        errs,
    );
    validate_annotations(
        template_meta.and_then(|m| m.annotations.as_ref()),
        "spec.template.metadata.annotations",
        errs,
    );
    let default_spec = core::PodSpec::default();
    let spec = template.spec.as_ref().unwrap_or(&default_spec);
    validate_pod_spec(spec, "spec.template.spec", errs);
    if let Some(policy) = spec.restart_policy.as_deref() {
        if policy != "Always" && !policy.is_empty() {
            errs.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                q(policy),
                &["Always"],
            ));
        }
    }
    if spec.active_deadline_seconds.is_some() {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
}

/// Fills the fields Kubernetes defaults in a pod spec when they are absent.
pub(crate) fn default_pod_spec_json(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    for (k, v) in [
        ("restartPolicy", "Always"),
        ("dnsPolicy", "ClusterFirst"),
        ("schedulerName", "default-scheduler"),
    ] {
        s.entry(k).or_insert_with(|| Value::String(v.into()));
    }
    s.entry("enableServiceLinks").or_insert(Value::Bool(true));
    for flag in ["hostNetwork", "hostPID", "hostIPC"] {
        if s.get(flag) == Some(&Value::Bool(false)) {
            s.remove(flag);
        }
    }
    for list in ["containers", "initContainers"] {
        let Some(containers) = s.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            c.entry("terminationMessagePath")
                .or_insert_with(|| Value::String("/dev/termination-log".into()));
            c.entry("terminationMessagePolicy")
                .or_insert_with(|| Value::String("File".into()));
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let last = image.rsplit('/').next().unwrap_or_default();
            let pull = if !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"))
            {
                "Always"
            } else {
                "IfNotPresent"
            };
            c.entry("imagePullPolicy")
                .or_insert_with(|| Value::String(pull.into()));
            for flag in ["stdin", "stdinOnce", "tty"] {
                if c.get(flag) == Some(&Value::Bool(false)) {
                    c.remove(flag);
                }
            }
            for port in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                port.entry("protocol")
                    .or_insert_with(|| Value::String("TCP".into()));
            }
        }
    }
}

/// Drops nulls, empty lists and empty maps from objects, recursively.
pub(crate) fn normalize_json(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for child in m.values_mut() {
                normalize_json(child);
            }
            m.retain(|_, child| match child {
                Value::Null => false,
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                _ => true,
            });
        }
        Value::Array(a) => a.iter_mut().for_each(normalize_json),
        _ => {}
    }
}

/// Collects the paths where two JSON values differ.
pub(crate) fn json_diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    if out.len() > 10 || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let in_map = MAP_FIELDS.contains(&path.rsplit('.').next().unwrap_or_default());
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if in_map { key(path, k) } else { child(path, k) };
                json_diff(
                    x.get(k.as_str()).unwrap_or(&Value::Null),
                    y.get(k.as_str()).unwrap_or(&Value::Null),
                    &p,
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (ea, eb)) in x.iter().zip(y).enumerate() {
                json_diff(ea, eb, &index(path, i), out);
            }
        }
        _ => out.push(path.to_string()),
    }
}
