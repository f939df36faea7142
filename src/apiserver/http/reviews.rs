//! The two reviews a caller makes about itself: `SelfSubjectReview` (`kubectl auth whoami`:
//! who the server thinks I am) and `SelfSubjectAccessReview` (`kubectl auth can-i`: may I do
//! this?). Neither is stored; each is answered from the authenticator and the authorizer
//! the real requests go through, so the answer is the one a request would get.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{json, Value};

use super::{json_response, status_response};
use crate::api::wire::{Request, Verb};
use crate::api::Status;
use crate::apiserver::auth::UserInfo;
use crate::apiserver::{ApiHandle, Credentials, Review, ADMIN_GROUP};

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

/// Answers an `authorization.k8s.io/v1` SelfSubjectAccessReview: the review with its status.
pub(super) async fn can_i(
    api: &ApiHandle,
    user: &UserInfo,
    credentials: Credentials,
    body: Value,
) -> HttpResponse {
    let attrs = &body["spec"]["resourceAttributes"];
    if !attrs.is_object() {
        // Non-resource URLs (`kubectl auth can-i get /healthz`): Skiff serves them to every
        // authenticated caller.
        if body["spec"]["nonResourceAttributes"].is_object() {
            return answer(body, Ok(()));
        }
        return status_response(&Status::bad_request(
            "spec.resourceAttributes or spec.nonResourceAttributes is required",
        ));
    }
    let field = |k: &str| {
        attrs[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let verb_name = field("verb").unwrap_or_default();
    let Some(verb) = Verb::parse(&verb_name) else {
        // A verb no request can have (`*`, `escalate`, …): only admins, whom the authorizer
        // allows everything, may.
        let admin = user.groups.iter().any(|g| g == ADMIN_GROUP);
        return answer(
            body,
            if admin {
                Ok(())
            } else {
                Err(format!("verb {verb_name:?} is not allowed"))
            },
        );
    };
    let request = Request {
        group: field("group").unwrap_or_default(),
        resource: field("resource").unwrap_or_default(),
        subresource: field("subresource"),
        namespace: field("namespace"),
        name: field("name"),
        ..Default::default()
    };
    let review = Review {
        credentials,
        verb,
        request,
    };
    match api.review(review).await {
        Ok(decision) => answer(body, decision.map_err(|s| s.message)),
        Err(s) => status_response(&s),
    }
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
