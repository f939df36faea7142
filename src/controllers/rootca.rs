//! The root CA publisher (kube's `root-ca-cert-publisher`): every namespace that is not being
//! deleted has the ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA the API
//! server's certificate is signed by, put back when edited or deleted. Pods verify the API
//! server with it (the projected volume `apiserver::sa_admission` injects).

use serde_json::json;

use super::per_namespace::{Kept, PerNamespaceController};
use crate::apiserver::sa_admission::ROOT_CA_CONFIGMAP;
use crate::client::ApiClient;

/// The annotation kube's publisher sets.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Starts the controller publishing `ca_pem`, acting while `leading` is true.
pub fn controller(
    client: ApiClient,
    leading: tokio::sync::watch::Receiver<bool>,
    ca_pem: String,
) -> actix::Addr<PerNamespaceController> {
    super::per_namespace::start(
        client,
        leading,
        Kept {
            controller: "RootCACertPublisher",
            group: "",
            plural: "configmaps",
            name: ROOT_CA_CONFIGMAP,
            desired: json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA_CONFIGMAP,
                    "annotations": {"kubernetes.io/description": DESCRIPTION}},
                "data": {"ca.crt": ca_pem}}),
            field: Some("data"),
        },
    )
}
