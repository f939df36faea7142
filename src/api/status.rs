//! The error model: a Kubernetes `Status` (code, reason, message, details.causes).
//!
//! Every error that leaves the API server — over NATS or HTTP — is one of these, so a client
//! matches on `reason` and `code`, never on message text. Constructors mirror the helpers of
//! Kubernetes' `apimachinery/pkg/api/errors`.

use serde::{Deserialize, Serialize};

/// `metav1.Status`, as kubectl and the Python client parse it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always "Status": lets a client tell an error body from an object.
    #[serde(default = "status_kind")]
    pub kind: String,
    /// Always "v1".
    #[serde(default = "v1")]
    pub api_version: String,
    /// Empty list metadata; present because clients expect the key.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// "Failure" for errors, "Success" for the few verbs that answer a Status on success.
    #[serde(default)]
    pub status: String,
    /// Human-readable description, printed by kubectl after the reason.
    #[serde(default)]
    pub message: String,
    /// Machine-readable cause: NotFound, AlreadyExists, Conflict, Invalid, …
    #[serde(default)]
    pub reason: String,
    /// Which object the error is about, and the per-field causes for Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code, also used on NATS.
    #[serde(default)]
    pub code: u16,
}

/// `metav1.StatusDetails`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// Name of the object the error is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// API group of the object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind or resource of the object (Kubernetes puts the resource plural here).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// UID, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Field-level causes (validation errors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// Seconds after which a retry may succeed (429, 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// `metav1.StatusCause`: one invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// FieldValueRequired, FieldValueInvalid, …
    #[serde(default)]
    pub reason: String,
    /// What is wrong with the field.
    #[serde(default)]
    pub message: String,
    /// Path of the field, e.g. `metadata.name`.
    #[serde(default)]
    pub field: String,
}

fn status_kind() -> String {
    "Status".into()
}
fn v1() -> String {
    "v1".into()
}

/// The reasons Skiff answers with (the `metav1.StatusReason` values).
pub mod reason {
    pub const NOT_FOUND: &str = "NotFound";
    pub const ALREADY_EXISTS: &str = "AlreadyExists";
    pub const CONFLICT: &str = "Conflict";
    pub const INVALID: &str = "Invalid";
    pub const EXPIRED: &str = "Expired";
    pub const GONE: &str = "Gone";
    pub const BAD_REQUEST: &str = "BadRequest";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const FORBIDDEN: &str = "Forbidden";
    pub const METHOD_NOT_ALLOWED: &str = "MethodNotAllowed";
    pub const TOO_LARGE: &str = "RequestEntityTooLarge";
    pub const TOO_MANY_REQUESTS: &str = "TooManyRequests";
    pub const INTERNAL: &str = "InternalError";
    pub const UNAVAILABLE: &str = "ServiceUnavailable";
    pub const TIMEOUT: &str = "Timeout";
}

impl Status {
    /// A failure Status with no details.
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            kind: status_kind(),
            api_version: v1(),
            metadata: Default::default(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            details: None,
            code,
        }
    }

    /// The Status a successful delete of a collection or a finished stream answers with.
    pub fn success() -> Self {
        Status {
            status: "Success".into(),
            ..Status::failure(200, "", "")
        }
    }

    /// Names the object a failure is about (`details`: name, group, kind).
    pub fn with_details(mut self, group: &str, resource: &str, name: &str) -> Self {
        self.details = Some(StatusDetails {
            name: name.into(),
            group: group.into(),
            kind: resource.into(),
            ..Default::default()
        });
        self
    }

    /// 404: `pods "x" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::failure(
            404,
            reason::NOT_FOUND,
            format!("{} \"{name}\" not found", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 409: `pods "x" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::failure(
            409,
            reason::ALREADY_EXISTS,
            format!("{} \"{name}\" already exists", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 409: the object changed since the caller read it.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        Self::failure(
            409,
            reason::CONFLICT,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, resource)
            ),
        )
        .with_details(group, resource, name)
    }

    /// The conflict of an update carrying a stale resourceVersion.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 with one cause per invalid field: `Kind "name" is invalid: field: message, …`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<StatusCause>) -> Self {
        let list = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect::<Vec<_>>();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let qual = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut s = Self::failure(
            422,
            reason::INVALID,
            format!("{qual} \"{name}\" is invalid: {joined}"),
        )
        .with_details(group, kind, name);
        if let Some(d) = s.details.as_mut() {
            d.causes = causes;
        }
        s
    }

    /// 410: the requested resourceVersion is older than the history kept.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::failure(410, reason::EXPIRED, message)
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::failure(400, reason::BAD_REQUEST, message)
    }

    /// 401: no or unknown credentials.
    pub fn unauthorized() -> Self {
        Self::failure(401, reason::UNAUTHORIZED, "Unauthorized")
    }

    /// 403: a known caller that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::failure(403, reason::FORBIDDEN, message)
    }

    /// 403 about one object: `namespaces "default" is forbidden: <why>`.
    pub fn forbidden_on(group: &str, resource: &str, name: &str, why: &str) -> Self {
        Self::failure(
            403,
            reason::FORBIDDEN,
            format!(
                "{} \"{name}\" is forbidden: {why}",
                qualified(group, resource)
            ),
        )
        .with_details(group, resource, name)
    }

    /// 405: the verb is not served on this resource.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::failure(405, reason::METHOD_NOT_ALLOWED, message)
    }

    /// 413: the object or body is larger than the store takes.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::failure(413, reason::TOO_LARGE, message)
    }

    /// 500: a fault of the server, never of the request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::failure(500, reason::INTERNAL, message)
    }

    /// 429: the server sheds load; the caller should retry later.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::failure(429, reason::TOO_MANY_REQUESTS, message)
    }

    /// 503: a dependency (the store, a kubelet) is not there.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::failure(503, reason::UNAVAILABLE, message)
    }

    /// 504: the server gave up waiting.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::failure(504, reason::TIMEOUT, message)
    }

    /// True for the given reason.
    pub fn is(&self, reason: &str) -> bool {
        self.reason == reason
    }
}

/// `pods` or `deployments.apps`, as Kubernetes qualifies a resource in messages.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_reads_like_kubectl() {
        let s = Status::invalid(
            "",
            "Pod",
            "Bad_Name",
            vec![StatusCause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: \"Bad_Name\": bad".into(),
                field: "metadata.name".into(),
            }],
        );
        assert_eq!(s.code, 422);
        assert_eq!(
            s.message,
            "Pod \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": bad"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["kind"], "Status");
        assert_eq!(json["details"]["causes"][0]["field"], "metadata.name");
    }

    #[test]
    fn not_found_qualifies_group() {
        let s = Status::not_found("apps", "deployments", "web");
        assert_eq!(s.message, "deployments.apps \"web\" not found");
        assert_eq!(s.code, 404);
    }
}
