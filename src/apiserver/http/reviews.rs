//! The reviews a caller makes about itself: `SelfSubjectReview` (`kubectl auth whoami`: who
//! the server thinks I am), `SelfSubjectAccessReview` (`kubectl auth can-i`: may I do this?)
//! and `SelfSubjectRulesReview` (`kubectl auth can-i --list`: what may I do?). Neither is stored; each is answered from the authenticator and the authorizer
//! the real requests go through, so the answer is the one a request would get.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{json, Value};

use super::{json_response, status_response};
use crate::api::Status;
use crate::apiserver::auth::UserInfo;
use crate::apiserver::authz::Attributes;
use crate::apiserver::ApiHandle;

/// The `authentication.k8s.io/v1` SelfSubjectReview of `user`.
pub(super) fn who_am_i(user: &UserInfo) -> Value {
    json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {
            "username": user.name,
            "uid": user.uid,
            "groups": user.groups,
        }},
    })
}

/// Answers an `authorization.k8s.io/v1` SelfSubjectAccessReview: the review with its status,
/// from the authorizer chain requests go through (any verb: `escalate`, `bind`, `*` too).
pub(super) fn can_i(api: &ApiHandle, user: &UserInfo, body: Value) -> HttpResponse {
    fn field<'a>(v: &'a Value, k: &str) -> &'a str {
        v[k].as_str().unwrap_or("")
    }
    let (attrs, na) = (
        &body["spec"]["resourceAttributes"],
        &body["spec"]["nonResourceAttributes"],
    );
    let decision = if attrs.is_object() {
        api.authorizer().check(
            user,
            &Attributes {
                verb: field(attrs, "verb"),
                group: field(attrs, "group"),
                resource: field(attrs, "resource"),
                subresource: field(attrs, "subresource"),
                namespace: field(attrs, "namespace"),
                name: field(attrs, "name"),
                path: None,
            },
        )
    } else if na.is_object() {
        api.authorizer().check(
            user,
            &Attributes::non_resource(field(na, "verb"), field(na, "path")),
        )
    } else {
        return status_response(&Status::bad_request(
            "spec.resourceAttributes or spec.nonResourceAttributes is required",
        ));
    };
    answer(body, decision.map_err(|s| s.message))
}

/// Answers an `authorization.k8s.io/v1` SelfSubjectRulesReview (`kubectl auth can-i
/// --list`): the rules that apply to the caller in `spec.namespace`.
pub(super) fn rules(api: &ApiHandle, user: &UserInfo, body: Value) -> HttpResponse {
    let namespace = body["spec"]["namespace"].as_str().unwrap_or("");
    let review = json!({
        "kind": "SelfSubjectRulesReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {"namespace": namespace},
        "status": api.authorizer().rules_review(user, namespace),
    });
    json_response(StatusCode::CREATED, &review)
}

/// The review with its status. A denial carries no reason, as RBAC's do (kubectl prints a
/// reason after "no", and the request's own 403 already says it in full); it goes to the
/// debug log instead.
fn answer(mut body: Value, decision: Result<(), String>) -> HttpResponse {
    body["kind"] = json!("SelfSubjectAccessReview");
    body["apiVersion"] = json!("authorization.k8s.io/v1");
    body["metadata"] = json!({"creationTimestamp": null});
    body["status"] = match decision {
        Ok(()) => json!({"allowed": true}),
        Err(why) => {
            tracing::debug!(%why, "access review denied");
            json!({"allowed": false})
        }
    };
    json_response(StatusCode::CREATED, &body)
}
