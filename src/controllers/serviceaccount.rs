//! The service account controller: every namespace that is not being deleted has a
//! ServiceAccount `default` (re-created if deleted), as kube's controller-manager keeps it.

use serde_json::json;

use super::per_namespace::{Kept, PerNamespaceController};
use crate::client::ApiClient;

/// The ServiceAccount every namespace has.
pub const DEFAULT: &str = "default";

/// Starts the controller, acting while `leading` is true.
pub fn controller(
    client: ApiClient,
    leading: tokio::sync::watch::Receiver<bool>,
) -> actix::Addr<PerNamespaceController> {
    super::per_namespace::start(
        client,
        leading,
        Kept {
            controller: "ServiceAccountController",
            group: "",
            plural: "serviceaccounts",
            name: DEFAULT,
            desired: json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT}}),
            field: None,
        },
    )
}
