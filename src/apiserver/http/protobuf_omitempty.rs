//! Integer and boolean fields that Go declares as plain values with `omitempty`: the
//! protobuf encoder writes them even when zero, JSON would leave them out, so the decoder
//! drops their zero. Pointer fields are not listed: their zero is a value the client set.

/// (message, JSON field name) pairs.
pub(super) static ZERO_OMITTED: &[(&str, &str)] = &[
    ("k8s.io.api.apps.v1.DeploymentSpec", "minReadySeconds"),
    ("k8s.io.api.apps.v1.DeploymentSpec", "paused"),
    ("k8s.io.api.apps.v1.DeploymentStatus", "availableReplicas"),
    ("k8s.io.api.apps.v1.DeploymentStatus", "observedGeneration"),
    ("k8s.io.api.apps.v1.DeploymentStatus", "readyReplicas"),
    ("k8s.io.api.apps.v1.DeploymentStatus", "replicas"),
    ("k8s.io.api.apps.v1.DeploymentStatus", "unavailableReplicas"),
    ("k8s.io.api.apps.v1.DeploymentStatus", "updatedReplicas"),
    ("k8s.io.api.apps.v1.ReplicaSetSpec", "minReadySeconds"),
    ("k8s.io.api.apps.v1.ReplicaSetStatus", "availableReplicas"),
    (
        "k8s.io.api.apps.v1.ReplicaSetStatus",
        "fullyLabeledReplicas",
    ),
    ("k8s.io.api.apps.v1.ReplicaSetStatus", "observedGeneration"),
    ("k8s.io.api.apps.v1.ReplicaSetStatus", "readyReplicas"),
    ("k8s.io.api.core.v1.Container", "stdin"),
    ("k8s.io.api.core.v1.Container", "stdinOnce"),
    ("k8s.io.api.core.v1.Container", "tty"),
    ("k8s.io.api.core.v1.ContainerPort", "hostPort"),
    ("k8s.io.api.core.v1.EphemeralContainerCommon", "stdin"),
    ("k8s.io.api.core.v1.EphemeralContainerCommon", "stdinOnce"),
    ("k8s.io.api.core.v1.EphemeralContainerCommon", "tty"),
    (
        "k8s.io.api.core.v1.PersistentVolumeClaimVolumeSource",
        "readOnly",
    ),
    ("k8s.io.api.core.v1.PodSpec", "hostIPC"),
    ("k8s.io.api.core.v1.PodSpec", "hostNetwork"),
    ("k8s.io.api.core.v1.PodSpec", "hostPID"),
    ("k8s.io.api.core.v1.Probe", "failureThreshold"),
    ("k8s.io.api.core.v1.Probe", "initialDelaySeconds"),
    ("k8s.io.api.core.v1.Probe", "periodSeconds"),
    ("k8s.io.api.core.v1.Probe", "successThreshold"),
    ("k8s.io.api.core.v1.Probe", "timeoutSeconds"),
    ("k8s.io.api.core.v1.VolumeMount", "readOnly"),
    (
        "k8s.io.apimachinery.pkg.apis.meta.v1.Condition",
        "observedGeneration",
    ),
    (
        "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "generation",
    ),
];
