//! Service account tokens: `TokenRequest` (`POST …/serviceaccounts/<name>/token`, what
//! `kubectl create token` sends) issues a JWT signed with the API server's key (ES256, the
//! key kept 0600 in the data dir), and the authenticator accepts such a token as
//! `system:serviceaccount:<namespace>:<name>` for as long as it has not expired, its
//! ServiceAccount still exists with the same uid, and the object it is bound to (a Pod or a
//! Secret), if any, does too.
//!
//! The signature is `jsonwebtoken`'s over `ring`; only the claims are Skiff's, and they are
//! kube's: `iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti` and the `kubernetes.io` claim
//! naming the namespace, service account and bound object.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::store;
use super::UserInfo;
use crate::api::codec::msgpack_to_value;
use crate::api::meta;
use crate::api::resource;
use crate::api::status::Status;
use crate::api::wire::Request;

/// The issuer and default audience of every token (kube-apiserver's default
/// `--service-account-issuer`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Where the signing key lives in the data dir.
pub const KEY_FILE: &str = "sa-signing.key";

/// Token lifetime when the request names none (kube's: one hour), and the shortest allowed.
const DEFAULT_SECONDS: i64 = 3600;
const MIN_SECONDS: i64 = 600;
const MAX_SECONDS: i64 = 1 << 32;

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file.
    #[error("service account key {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file holds no P-256 PKCS#8 key.
    #[error("service account key {0}: not a P-256 PKCS#8 key")]
    Invalid(String),
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct KubeClaim {
    namespace: String,
    serviceaccount: Ref,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<Ref>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Ref {
    name: String,
    uid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    #[serde(rename = "kubernetes.io")]
    kube: KubeClaim,
}

/// Signs and verifies service account tokens.
pub struct Issuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    reader: store::Reader,
}

impl Issuer {
    /// The issuer with the key in `data_dir` (made on first start), or a key of this process
    /// only when there is no data dir.
    pub fn open(data_dir: Option<&Path>, reader: store::Reader) -> Result<Self, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = match data_dir {
            None => fresh_key()?,
            Some(dir) => ensure_key(dir)?,
        };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| KeyError::Invalid(KEY_FILE.into()))?;
        Ok(Issuer {
            encoding: EncodingKey::from_ec_der(&pkcs8),
            decoding: DecodingKey::from_ec_der(pair.public_key().as_ref()),
            reader,
        })
    }

    fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let info = resource::lookup("", plural)?;
        let kv = self.reader.get(&info.key(Some(namespace), name))?;
        msgpack_to_value(&kv.value).ok()
    }

    /// Answers a TokenRequest for the ServiceAccount `req` names: the request with its spec
    /// defaulted and its status (token and expiry).
    pub fn request_token(&self, req: &Request) -> Result<Value, Status> {
        let namespace = req.namespace.as_deref().unwrap_or("");
        let name = req.name.as_deref().unwrap_or("");
        let sa = self
            .object("serviceaccounts", namespace, name)
            .ok_or_else(|| Status::not_found("", "serviceaccounts", name))?;
        let body = req.body.clone().unwrap_or_else(|| json!({}));
        // What the caller's guard checks (NodeRestriction: a kubelet's token is bound to a
        // pod on its node), with the names the URL gives.
        if let (Some(guard), Some(info)) = (&req.guard, resource::lookup("", "serviceaccounts")) {
            let mut named = body.clone();
            if named.is_object() {
                named["metadata"] = json!({"name": name, "namespace": namespace});
            }
            guard.check(info, &named, None)?;
        }
        let spec = &body["spec"];
        let seconds = spec["expirationSeconds"]
            .as_i64()
            .unwrap_or(DEFAULT_SECONDS);
        let invalid = |field: &str, value: String, why: &str| {
            Status::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                name,
                vec![crate::api::status::StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: {value}: {why}"),
                    field: field.into(),
                }],
            )
        };
        if seconds < MIN_SECONDS {
            return Err(invalid(
                "spec.expirationSeconds",
                seconds.to_string(),
                "may not specify a duration less than 10 minutes",
            ));
        }
        if seconds > MAX_SECONDS {
            return Err(invalid(
                "spec.expirationSeconds",
                seconds.to_string(),
                "may not specify a duration larger than 2^32 seconds",
            ));
        }
        let audiences: Vec<String> = match spec["audiences"].as_array() {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => vec![ISSUER.to_string()],
        };
        let mut kube = KubeClaim {
            namespace: namespace.to_string(),
            serviceaccount: Ref {
                name: name.to_string(),
                uid: meta::uid(&sa).to_string(),
            },
            ..Default::default()
        };
        // The body may name the account, but only as the URL does.
        for (field, want) in [("name", name), ("namespace", namespace)] {
            if let Some(given) = body["metadata"][field].as_str().filter(|g| !g.is_empty()) {
                if given != want {
                    return Err(invalid(
                        &format!("metadata.{field}"),
                        format!("{given:?}"),
                        &format!("must match the service account {field} if specified"),
                    ));
                }
            }
        }
        let bound = &spec["boundObjectRef"];
        if bound.is_object() {
            let kind = bound["kind"].as_str().unwrap_or("");
            let api_version = bound["apiVersion"].as_str().unwrap_or("");
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let plural = match (group, kind) {
                ("", "Pod") => "pods",
                ("", "Secret") => "secrets",
                _ => {
                    return Err(Status::bad_request(format!(
                        "cannot bind token to object of type {group}/{version}, Kind={kind}"
                    )))
                }
            };
            let bound_name = bound["name"].as_str().unwrap_or("");
            let obj = self
                .object(plural, namespace, bound_name)
                .ok_or_else(|| Status::not_found("", plural, bound_name))?;
            let runs_as = obj["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default");
            if plural == "pods" && runs_as != name {
                return Err(Status::bad_request(format!(
                    "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name."
                )));
            }
            let uid = meta::uid(&obj).to_string();
            if bound["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty() && u != uid)
            {
                return Err(Status::conflict(
                    "",
                    plural,
                    bound_name,
                    &format!(
                        "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                        bound["uid"].as_str().unwrap_or("")
                    ),
                ));
            }
            let r = Some(Ref {
                name: bound_name.to_string(),
                uid,
            });
            match kind {
                "Pod" => kube.pod = r,
                _ => kube.secret = r,
            }
        }
        let now = jiff::Timestamp::now().as_second();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: format!("system:serviceaccount:{namespace}:{name}"),
            aud: audiences.clone(),
            exp: now + seconds,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            kube,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .map_err(|e| Status::internal(format!("signing the token: {e}")))?;
        let expires = jiff::Timestamp::from_second(now + seconds)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        let mut spec = spec.clone();
        if !spec.is_object() {
            spec = json!({});
        }
        spec["audiences"] = json!(audiences);
        spec["expirationSeconds"] = json!(seconds);
        if spec.get("boundObjectRef").is_none() {
            spec["boundObjectRef"] = Value::Null;
        }
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": expires},
        }))
    }

    /// Who a service account token names, if it is one of ours and still valid.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()?
            .claims;
        let k = &claims.kube;
        let live = |plural: &str, r: &Ref| {
            self.object(plural, &k.namespace, &r.name).is_some_and(|o| {
                meta::uid(&o) == r.uid && o.pointer("/metadata/deletionTimestamp").is_none()
            })
        };
        if !live("serviceaccounts", &k.serviceaccount) {
            return None;
        }
        if k.pod.as_ref().is_some_and(|p| !live("pods", p))
            || k.secret.as_ref().is_some_and(|s| !live("secrets", s))
        {
            return None;
        }
        if claims.sub
            != format!(
                "system:serviceaccount:{}:{}",
                k.namespace, k.serviceaccount.name
            )
        {
            return None;
        }
        Some(UserInfo {
            name: claims.sub,
            uid: k.serviceaccount.uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", k.namespace),
                "system:authenticated".into(),
            ],
        })
    }
}

/// Whether a bearer token has a JWT's shape (three base64url parts): only those are
/// checked against the service account key.
/// A new P-256 signing key (PKCS#8).
fn fresh_key() -> Result<Vec<u8>, KeyError> {
    EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .map(|d| d.as_ref().to_vec())
    .map_err(|_| KeyError::Invalid("(generated)".into()))
}

/// The signing key in `dir` (`sa-signing.key`, 0600), made there first if missing: API
/// servers sharing a store must share it (`skiff init` makes it once).
pub fn ensure_key(dir: &Path) -> Result<Vec<u8>, KeyError> {
    let path = dir.join(KEY_FILE);
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(&path) {
        Ok(der) => Ok(der),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let der = fresh_key()?;
            crate::files::write_private(&path, &der).map_err(io)?;
            Ok(der)
        }
        Err(e) => Err(io(e)),
    }
}

pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.matches('.').count() == 2
}
