//! The HTTPS front: the Kubernetes REST API that kubectl and other clients speak, served by
//! actix-web over rustls. Every request becomes the same `Call` the NATS bridge makes, so
//! authentication, validation and storage have one path; this module only translates URLs,
//! query parameters, JSON and Tables.

mod discovery;
mod openapi_proto;
pub mod protobuf;
mod protobuf_omitempty;
mod protobuf_schema;
mod reviews;
pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use super::auth::UserInfo;
use super::certs::Pki;
use super::openapi;
use super::{ApiHandle, Call, Credentials, Reply, WatchItem, WatchStream};
use crate::api::codec;
use crate::api::resource::ResourceInfo;
use crate::api::wire::{event_type, DeleteOptions, ListOptions, PatchType, Request, Verb};
use crate::api::Status;

/// Largest request body accepted (kube-apiserver's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What the HTTPS front needs.
#[derive(Clone)]
pub struct HttpOptions {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Certificates.
    pub pki: Pki,
    /// Worker threads.
    pub workers: usize,
}

/// Shared state of the handlers.
struct State {
    api: ApiHandle,
    /// `host:port` clients use, for `/api`'s serverAddressByClientCIDRs.
    server_address: String,
}

/// The verified client certificate of a connection, if it presented one.
#[derive(Clone)]
struct PeerIdentity(UserInfo);

/// Reads CN (user) and O (groups) from a client certificate already verified by rustls.
fn identity_of(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
    })
}

/// Builds the rustls configuration: our serving certificate, and client certificates
/// verified against our CA when presented (optional: tokens work too).
fn tls_config(pki: &Pki) -> anyhow::Result<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(pki.server_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes())?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca_cert.as_bytes()) {
        roots.add(ca?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    Ok(config)
}

/// Starts the HTTPS server (inside a running actix System). Returns the server handle and
/// the address it bound (port 0 picks a free one).
pub fn serve_https(
    api: ApiHandle,
    options: HttpOptions,
) -> anyhow::Result<(actix_web::dev::Server, SocketAddr)> {
    let config = tls_config(&options.pki)?;
    let listener = std::net::TcpListener::bind(options.bind)?;
    let addr = listener.local_addr()?;
    let server_address = format!("{}:{}", addr.ip(), addr.port());
    let state = web::Data::new(State {
        api,
        server_address,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .default_service(web::to(dispatch))
    })
    .on_connect(|conn, ext| {
        use actix_tls::accept::rustls_0_23::TlsStream;
        if let Some(tls) = conn.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() {
            let (_, session) = tls.get_ref();
            if let Some(id) = session
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| identity_of(c))
            {
                ext.insert(PeerIdentity(id));
            }
        }
    })
    .workers(options.workers.max(1))
    .shutdown_timeout(5)
    .disable_signals()
    .listen_rustls_0_23(listener, config)?
    .run();
    Ok((server, addr))
}

/// The OpenAPI v3 index ("") and group-version documents ("api/v1", "apis/apps/v1") of
/// the kinds served now, serialised once per set of kinds (a CRD changes it).
fn openapi_docs(rows: &[&'static ResourceInfo]) -> Arc<OpenApiDocs> {
    static DOCS: std::sync::Mutex<Option<(Vec<usize>, Arc<OpenApiDocs>)>> =
        std::sync::Mutex::new(None);
    let key: Vec<usize> = rows
        .iter()
        .map(|r| *r as *const ResourceInfo as usize)
        .collect();
    let mut cached = DOCS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, docs)) = cached.as_ref() {
        if *k == key {
            return docs.clone();
        }
    }
    let served = served(rows);
    let mut docs = std::collections::HashMap::new();
    let bytes = |v: &Value| Bytes::from(serde_json::to_vec(v).unwrap_or_default());
    docs.insert(String::new(), bytes(&openapi::index(&served)));
    for r in rows {
        let key = if r.group.is_empty() {
            format!("api/{}", r.version)
        } else {
            format!("apis/{}/{}", r.group, r.version)
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = docs.entry(key) {
            if let Some(doc) = openapi::document(&served, r.group, r.version) {
                slot.insert(bytes(&doc));
            }
        }
    }
    let swagger = openapi::swagger(&served);
    let docs = Arc::new(OpenApiDocs {
        v3: docs,
        v2: Bytes::from(serde_json::to_vec(&swagger).unwrap_or_default()),
        v2_protobuf: Bytes::from(openapi_proto::document(&swagger)),
    });
    *cached = Some((key, docs.clone()));
    docs
}

/// The OpenAPI documents of one set of served kinds.
struct OpenApiDocs {
    /// v3: the index under "" and one document per group version.
    v3: std::collections::HashMap<String, Bytes>,
    /// The Swagger 2.0 document.
    v2: Bytes,
    /// The same, as gnostic's protobuf `openapi.v2.Document`.
    v2_protobuf: Bytes,
}

/// `/openapi/v2`: the Swagger 2.0 document, as JSON or (for client-go's `OpenAPISchema`) as
/// gnostic protobuf, whichever the Accept header names first; 406 for anything else.
fn openapi_v2(req: &HttpRequest, rows: &[&'static ResourceInfo]) -> HttpResponse {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let wanted = if accept.trim().is_empty() {
        Some(false)
    } else {
        accept.split(',').find_map(|a| {
            let a = a.split(';').next().unwrap_or("").trim();
            if a == openapi_proto::MEDIA_TYPE || a == openapi_proto::MEDIA_TYPE_ASKED {
                Some(true)
            } else if a.starts_with("application/json") || a == "*/*" || a == "application/*" {
                Some(false)
            } else {
                None
            }
        })
    };
    let docs = openapi_docs(rows);
    let (body, content_type) = match wanted {
        Some(true) => (docs.v2_protobuf.clone(), openapi_proto::MEDIA_TYPE),
        Some(false) => (docs.v2.clone(), "application/json"),
        None => {
            return status_response(&Status::failure(
                406,
                "NotAcceptable",
                format!(
                    "/openapi/v2 is served as application/json or {} (asked for {accept:?})",
                    openapi_proto::MEDIA_TYPE
                ),
            ))
        }
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache, private"))
        .body(body)
}

/// The served kinds, as the OpenAPI module wants them.
pub fn served(rows: &[&'static ResourceInfo]) -> Vec<openapi::Served> {
    rows.iter()
        .map(|r| {
            let custom = crate::apiserver::custom::strategy::of(r);
            openapi::Served {
                group: r.group,
                version: r.version,
                kind: r.kind,
                plural: r.plural,
                namespaced: r.namespaced,
                schema: custom.map(|c| &c.schema),
                scale: r.has_scale,
            }
        })
        .collect()
}

/// A Status as an HTTP response.
fn status_response(s: &Status) -> HttpResponse {
    let code = StatusCode::from_u16(s.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(code);
    // client-go and kubectl wait this long before retrying a 429 or 503.
    if let Some(after) = s.details.as_ref().and_then(|d| d.retry_after_seconds) {
        response.insert_header(("Retry-After", after.to_string()));
    }
    response
        .content_type("application/json")
        .body(serde_json::to_vec(s).unwrap_or_default())
}

fn json_response(code: StatusCode, v: &Value) -> HttpResponse {
    HttpResponse::build(code)
        .content_type("application/json")
        .body(serde_json::to_vec(v).unwrap_or_default())
}

/// The parsed target of a resource URL.
struct Target {
    info: &'static ResourceInfo,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/<group>/<version>/...` resource paths.
fn parse_path(
    path: &str,
    find: impl Fn(&str, &str, &str) -> Option<&'static ResourceInfo>,
) -> Result<Option<Target>, Status> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(None),
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let not_found = || {
        Status::failure(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, tail @ ..] if !matches!(*r, "status" | "finalize") => (
            Some(ns.to_string()),
            std::iter::once(*r)
                .chain(tail.iter().copied())
                .collect::<Vec<_>>(),
        ),
        other => (None, other.to_vec()),
    };
    let info = find(group, version, rest[0]).ok_or_else(not_found)?;
    if namespace.is_some() && !info.namespaced {
        return Err(not_found());
    }
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return Err(not_found());
    }
    Ok(Some(Target {
        info,
        namespace,
        name,
        subresource,
    }))
}

fn query(req: &HttpRequest) -> Vec<(String, String)> {
    url_decode_pairs(req.query_string())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1" | "True" | "TRUE"))
}

/// Reads the body up to MAX_BODY; 413 beyond.
/// How long a request body may take to arrive: kube-apiserver's request timeout (60 s), so a
/// client trickling bytes cannot hold a connection and its buffer for ever.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn read_body(payload: web::Payload) -> Result<Bytes, Status> {
    tokio::time::timeout(BODY_TIMEOUT, read_body_untimed(payload))
        .await
        .map_err(|_| {
            Status::timeout(format!(
                "Timeout: the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ))
        })?
}

async fn read_body_untimed(mut payload: web::Payload) -> Result<Bytes, Status> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Status::bad_request(format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(Status::too_large(format!(
                "Request entity too large: limit is {MAX_BODY}"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// `Impersonate-User` and `Impersonate-Group` (kubectl `--as`, `--as-group`), if asked for.
fn impersonation(req: &HttpRequest) -> Option<super::Impersonation> {
    let text = |v: &HeaderValue| v.to_str().ok().map(str::to_string);
    let user = req.headers().get("impersonate-user").and_then(text);
    let groups: Vec<String> = req
        .headers()
        .get_all("impersonate-group")
        .filter_map(text)
        .collect();
    if user.is_none() && groups.is_empty() {
        return None;
    }
    Some(super::Impersonation {
        user: user.unwrap_or_default(),
        groups,
    })
}

fn content_type(req: &HttpRequest) -> &str {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Reads a create or update body: Kubernetes protobuf (what kubectl's typed generators send),
/// YAML (`application/yaml`, as kube-apiserver takes it) or JSON.
fn parse_object(req: &HttpRequest, body: &[u8]) -> Result<Value, Status> {
    let ctype = content_type(req);
    if ctype.starts_with("application/vnd.kubernetes.protobuf") {
        return protobuf::decode(body).map_err(|e| Status::bad_request(e.to_string()));
    }
    if ctype.starts_with("application/yaml") {
        return parse_yaml(body);
    }
    parse_json(body)
}

/// A YAML body as the JSON it stands for (one document; anchors are expanded, within the
/// parser's limits, and the body is already bounded by [`MAX_BODY`]).
fn parse_yaml(body: &[u8]) -> Result<Value, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Status::bad_request("a request body is required"));
    }
    // The parser refuses nesting past 128 levels, but only after scanning flow collections
    // in time that grows with the square of their depth (3 MB of `[` would hold a worker for
    // seconds): anything twice as deep is refused before it gets there.
    if flow_depth(body) > 256 {
        return Err(Status::bad_request(
            "the YAML body nests flow collections deeper than 256 levels",
        ));
    }
    serde_yaml_ng::from_slice::<Value>(body).map_err(|e| {
        Status::bad_request(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})"
        ))
    })
}

/// The deepest nesting of YAML flow collections (`[`, `{`) in `body`, outside quoted
/// scalars and comments. A quote opens a quoted scalar only where a scalar may begin (so the
/// apostrophe in `it's` does not hide what follows), and `\` escapes inside double quotes.
fn flow_depth(body: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<u8> = None;
    let mut comment = false;
    let mut escaped = false;
    let mut prev = b'\n';
    for &b in body {
        match (quote, comment) {
            (_, true) => comment = b != b'\n',
            (Some(q), _) => {
                if escaped {
                    escaped = false;
                } else if q == b'"' && b == b'\\' {
                    escaped = true;
                } else if b == q {
                    quote = None;
                }
            }
            (None, false) => match b {
                b'"' | b'\''
                    if prev.is_ascii_whitespace()
                        || matches!(prev, b':' | b'[' | b'{' | b',' | b'-') =>
                {
                    quote = Some(b)
                }
                b'#' if prev.is_ascii_whitespace() => comment = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = b;
    }
    max
}

/// Whether the caller asks for YAML answers (`Accept: application/yaml` first).
fn wants_yaml(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split(',').next())
        .is_some_and(|first| first.trim().starts_with("application/yaml"))
}

fn parse_json(body: &[u8]) -> Result<Value, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Status::bad_request("a request body is required"));
    }
    serde_json::from_slice(body).map_err(|e| {
        Status::bad_request(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})"
        ))
    })
}

fn wants_table(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// Whether a GET of `path` is a non-resource request: discovery (`/api`, `/apis/<group>`,
/// `/apis/<group>/<version>`), OpenAPI, or `/metrics`.
fn is_non_resource(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    matches!(
        segments.as_slice(),
        ["api"]
            | ["api", _]
            | ["apis"]
            | ["apis", _]
            | ["apis", _, _]
            | ["openapi", ..]
            | ["metrics", ..]
    )
}

/// `/healthz`, `/livez`, `/readyz` as kube-apiserver answers them: `ok`, or 500 naming the
/// failed check; `?verbose` lists each check. The store (etcd) counts for readiness and
/// health, not liveness (a restart would not bring etcd back).
fn health(req: &HttpRequest, path: &str, store_ready: bool) -> HttpResponse {
    let endpoint = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let mut checks = vec![("ping", true)];
    if endpoint != "livez" {
        checks.push(("etcd", store_ready));
    }
    let passed = checks.iter().all(|(_, ok)| *ok);
    let verbose = req
        .query_string()
        .split('&')
        .any(|q| q == "verbose" || q.starts_with("verbose="));
    let body = if verbose || !passed {
        let mut lines: Vec<String> = checks
            .iter()
            .map(|(name, ok)| match ok {
                true => format!("[+]{name} ok"),
                false => format!("[-]{name} failed: reason withheld"),
            })
            .collect();
        lines.push(format!(
            "{endpoint} check {}",
            if passed { "passed" } else { "failed" }
        ));
        lines.join("\n") + "\n"
    } else {
        "ok".to_string()
    };
    let code = if passed {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    HttpResponse::build(code)
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

/// One request: discovery, health, or a resource call.
async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    let path = req.path().to_string();
    match (req.method(), path.trim_end_matches('/')) {
        (&Method::GET, "/version") => return json_response(StatusCode::OK, &discovery::version()),
        (&Method::GET, p)
            if ["/healthz", "/livez", "/readyz"]
                .iter()
                .any(|h| p == *h || p.starts_with(&format!("{h}/"))) =>
        {
            return health(&req, p, state.api.store_ready());
        }
        _ => {}
    }
    let credentials = Credentials {
        token: req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        identity: None,
        certificate: req.conn_data::<PeerIdentity>().map(|p| p.0.clone()),
        impersonate: impersonation(&req),
    };
    // Everything past health and version needs an authenticated caller.
    let user = match state.api.authenticate(&credentials) {
        Ok(u) => u,
        Err(s) => return status_response(&s),
    };
    // Paths outside the API (discovery, OpenAPI, `/metrics`) are authorized as kube does:
    // `get` on the path, which the bootstrap policy grants to every authenticated caller
    // except `/metrics` (system:monitoring, system:masters).
    if req.method() == Method::GET && is_non_resource(&path) {
        if let Err(s) = state.api.authorizer().authorize_path(&user, &path) {
            return status_response(&s);
        }
    }
    // Prometheus text for everything this process runs (under `skiff up`: every component).
    if req.method() == Method::GET && path.trim_end_matches('/') == "/metrics" {
        return HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(crate::metrics::render());
    }
    if req.method() == Method::POST {
        match path.trim_end_matches('/') {
            "/apis/authentication.k8s.io/v1/selfsubjectreviews" => {
                return json_response(StatusCode::CREATED, &reviews::who_am_i(&user));
            }
            review @ ("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
            | "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews") => {
                let resource = review.rsplit('/').next().unwrap_or("");
                let create = crate::apiserver::authz::Attributes {
                    verb: "create",
                    group: "authorization.k8s.io",
                    resource,
                    ..Default::default()
                };
                if let Err(s) = state.api.authorizer().check(&user, &create) {
                    return status_response(&s);
                }
                return match read_body(payload)
                    .await
                    .and_then(|b| parse_object(&req, &b))
                {
                    Ok(body) if resource == "selfsubjectaccessreviews" => {
                        reviews::can_i(&state.api, &user, body)
                    }
                    Ok(body) => reviews::rules(&state.api, &user, body),
                    Err(s) => status_response(&s),
                };
            }
            _ => {}
        }
    }
    if req.method() == Method::GET {
        let trimmed = path.trim_end_matches('/');
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let rows = state.api.resources();
        if matches!(trimmed, "/api" | "/apis") && discovery::wants_aggregated(accept) {
            return HttpResponse::Ok().content_type(discovery::AGGREGATED).body(
                serde_json::to_vec(&discovery::aggregated(&rows, trimmed == "/api"))
                    .unwrap_or_default(),
            );
        }
        let doc = match trimmed {
            "/api" => Some(discovery::api_versions(&state.server_address)),
            "/apis" => Some(discovery::api_group_list(&rows)),
            "/api/v1" => discovery::resource_list(&rows, "", "v1"),
            p => match p
                .strip_prefix("/apis/")
                .map(|r| r.split('/').collect::<Vec<_>>())
            {
                Some(parts) if parts.len() == 1 => discovery::api_group(&rows, parts[0]),
                Some(parts) if parts.len() == 2 => {
                    discovery::resource_list(&rows, parts[0], parts[1])
                }
                _ => None,
            },
        };
        if let Some(doc) = doc {
            return json_response(StatusCode::OK, &doc);
        }
        if trimmed == "/openapi/v2" {
            return openapi_v2(&req, &rows);
        }
        if let Some(gv) = trimmed.strip_prefix("/openapi/v3") {
            return match openapi_docs(&rows).v3.get(gv.trim_start_matches('/')) {
                Some(doc) => HttpResponse::Ok()
                    .content_type("application/json")
                    .insert_header((header::CACHE_CONTROL, "no-cache, private"))
                    .body(doc.clone()),
                None => status_response(&Status::failure(
                    404,
                    "NotFound",
                    format!("the server could not find the requested resource ({path})"),
                )),
            };
        }
    }
    let target = match parse_path(&path, |g, v, p| state.api.custom().find(g, v, p)) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return status_response(&Status::failure(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            ))
        }
        Err(s) => return status_response(&s),
    };
    match resource_call(&req, payload, &state, target, credentials).await {
        Ok(resp) => resp,
        Err(s) => status_response(&s),
    }
}

async fn resource_call(
    req: &HttpRequest,
    payload: web::Payload,
    state: &State,
    t: Target,
    credentials: Credentials,
) -> Result<HttpResponse, Status> {
    let q = query(req);
    if let Some(sub @ ("exec" | "attach" | "portforward")) = t.subresource.as_deref() {
        // Answered before the body is read: these requests upgrade the connection, and their
        // "body" would never end.
        return Err(Status::bad_request(format!(
            "pods/{sub} is not supported by Skiff yet: it needs a streaming connection to the \
             kubelet that Skiff does not provide (kubectl logs works)"
        )));
    }
    // A request that asks to upgrade the connection has no body to wait for.
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let body = if upgrade {
        Bytes::new()
    } else {
        read_body(payload).await?
    };
    let mut request = Request {
        group: t.info.group.into(),
        resource: t.info.plural.into(),
        version: Some(t.info.version.into()),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        subresource: t.subresource.clone(),
        dry_run: {
            let values: Vec<String> = q
                .iter()
                .filter(|(k, _)| k == "dryRun")
                .map(|(_, v)| v.clone())
                .collect();
            let mut causes = Vec::new();
            let dry = crate::api::wire::dry_run_values(&values, &mut causes);
            if !causes.is_empty() {
                let kind = match *req.method() {
                    Method::POST => "CreateOptions",
                    Method::PUT => "UpdateOptions",
                    Method::PATCH => "PatchOptions",
                    Method::DELETE => "DeleteOptions",
                    _ => "ListOptions",
                };
                return Err(Status::invalid("meta.k8s.io", kind, "", causes));
            }
            dry
        },
        container: param(&q, "container").map(String::from),
        tail_lines: param(&q, "tailLines").and_then(|v| v.parse().ok()),
        previous: truthy(param(&q, "previous")),
        limit_bytes: param(&q, "limitBytes").and_then(|v| v.parse().ok()),
        since_seconds: param(&q, "sinceSeconds").and_then(|v| v.parse().ok()),
        since_time: param(&q, "sinceTime").map(String::from),
        timestamps: truthy(param(&q, "timestamps")),
        follow: truthy(param(&q, "follow")),
        field_validation: param(&q, "fieldValidation").map(String::from),
        field_manager: param(&q, "fieldManager").map(String::from),
        force: param(&q, "force").map(|v| truthy(Some(v))),
        list: ListOptions {
            label_selector: param(&q, "labelSelector").map(String::from),
            field_selector: param(&q, "fieldSelector").map(String::from),
            limit: param(&q, "limit").and_then(|v| v.parse().ok()).unwrap_or(0),
            continue_token: param(&q, "continue").map(String::from),
            resource_version: param(&q, "resourceVersion").map(String::from),
            timeout_seconds: param(&q, "timeoutSeconds").and_then(|v| v.parse().ok()),
            allow_watch_bookmarks: truthy(param(&q, "allowWatchBookmarks")),
            resource_version_match: param(&q, "resourceVersionMatch")
                .filter(|v| !v.is_empty())
                .map(String::from),
            send_initial_events: param(&q, "sendInitialEvents").map(|v| truthy(Some(v))),
        },
        ..Default::default()
    };
    let verb = match (req.method().clone(), &t.name) {
        (Method::GET, None) if truthy(param(&q, "watch")) => Verb::Watch,
        (Method::GET, None) => Verb::List,
        (Method::GET, Some(_)) if truthy(param(&q, "watch")) => {
            // Watch of one object: a list watch narrowed by name.
            request.list.field_selector = Some(format!(
                "metadata.name={}",
                t.name.clone().unwrap_or_default()
            ));
            request.name = None;
            Verb::Watch
        }
        (Method::GET, Some(_)) => Verb::Get,
        // An object is created by POST to its collection; kube serves no POST on an object
        // (its subresources, such as binding or eviction, take one).
        (Method::POST, Some(_)) if t.subresource.is_none() => {
            return Err(Status::method_not_allowed(format!(
                "POST is not supported on {}",
                req.path()
            )))
        }
        (Method::POST, _) => {
            request.body = Some(parse_object(req, &body)?);
            Verb::Create
        }
        (Method::PUT, Some(_)) => {
            request.body = Some(parse_object(req, &body)?);
            Verb::Update
        }
        (Method::PATCH, Some(_)) => {
            let ctype = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            request.patch_type = Some(match ctype.split(';').next().unwrap_or("").trim() {
                "application/merge-patch+json" => PatchType::Merge,
                "application/json-patch+json" => PatchType::Json,
                "application/strategic-merge-patch+json" => PatchType::Strategic,
                "application/apply-patch+yaml" => PatchType::Apply,
                other => {
                    return Err(Status::failure(
                        415,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
                    ))
                }
            });
            request.body = Some(if request.patch_type == Some(PatchType::Apply) {
                parse_yaml(&body)?
            } else {
                parse_json(&body)?
            });
            Verb::Patch
        }
        // A namespaced kind's collection is deleted per namespace only (kube registers no
        // cluster-wide DELETE for it).
        (Method::DELETE, None) if t.info.namespaced && t.namespace.is_none() => {
            return Err(Status::method_not_allowed(format!(
                "DELETE is not supported on {}",
                req.path()
            )))
        }
        (Method::DELETE, name) => {
            let mut opts: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
                DeleteOptions::default()
            } else if content_type(req).contains("protobuf") {
                return Err(Status::failure(
                    415,
                    "UnsupportedMediaType",
                    "DeleteOptions are read from JSON only (got application/vnd.kubernetes.protobuf)",
                ));
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| Status::bad_request(format!("invalid DeleteOptions: {e}")))?
            };
            if let Some(g) = param(&q, "gracePeriodSeconds").and_then(|v| v.parse().ok()) {
                opts.grace_period_seconds = Some(g);
            }
            if let Some(p) = param(&q, "propagationPolicy") {
                opts.propagation_policy = Some(p.into());
            }
            request.delete = Some(opts);
            if name.is_some() {
                Verb::Delete
            } else {
                Verb::DeleteCollection
            }
        }
        (m, _) => {
            return Err(Status::method_not_allowed(format!(
                "{m} is not supported on {}",
                req.path()
            )))
        }
    };
    let table = wants_table(req);
    let yaml = wants_yaml(req) && !table;
    let include = table::Include::parse(param(&q, "includeObject"));
    let call = Call {
        credentials,
        verb,
        request,
        max_bytes: 0,
        trace: req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::trace::TraceContext::parse),
        origin: Some((
            req.headers()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .filter(|p| !p.is_empty())
                .unwrap_or("http")
                .to_string(),
            format!("{} {}", req.method(), req.path()),
        )),
    };
    let answer = state.api.call(call).await;
    // kube-apiserver answers a watch from a revision it no longer has with a 200 stream holding
    // one ERROR event (410 Expired); clients relist on it.
    if let (Verb::Watch, Err(status)) = (verb, &answer) {
        if status.code == 410 {
            let line = json!({"type": event_type::ERROR, "object": status});
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            return Ok(HttpResponse::Ok()
                .content_type("application/json")
                .body(bytes));
        }
    }
    let (reply, warnings) = match answer? {
        Reply::Warned(reply, warnings) => (*reply, warnings),
        reply => (reply, Vec::new()),
    };
    let mut response = match reply {
        Reply::Warned(..) => Err(Status::internal("warnings nested in warnings")),
        Reply::Object(bytes) => {
            let mut v = codec::msgpack_to_value(&bytes)
                .map_err(|e| Status::internal(format!("encoding the answer: {e}")))?;
            // Custom objects are stored in their CRD's storage version; shown in the one asked.
            if t.subresource.as_deref().is_none_or(|s| s == "status") {
                served_version(t.info, &mut v);
            }
            if table && matches!(verb, Verb::Get | Verb::List) && t.subresource.is_none() {
                let (objects, meta) = match verb {
                    Verb::List => (
                        v.get_mut("items")
                            .map(Value::take)
                            .and_then(|i| match i {
                                Value::Array(a) => Some(a),
                                _ => None,
                            })
                            .unwrap_or_default(),
                        v.get("metadata").cloned().unwrap_or(json!({})),
                    ),
                    _ => (
                        vec![v.clone()],
                        json!({"resourceVersion": v.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))}),
                    ),
                };
                v = table::table(t.info, &objects, meta, include);
            }
            let code = if verb == Verb::Create {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            if yaml {
                let text = serde_yaml_ng::to_string(&v)
                    .map_err(|e| Status::internal(format!("encoding the answer: {e}")))?;
                Ok(HttpResponse::build(code)
                    .content_type("application/yaml")
                    .body(text))
            } else {
                Ok(json_response(code, &v))
            }
        }
        Reply::Watch(stream) => Ok(watch_response(*stream, table, include)),
        Reply::Text(text) => Ok(HttpResponse::Ok().content_type("text/plain").body(text)),
        Reply::TextStream(first, sub) => {
            let rest = futures::stream::unfold(Some(*sub), |sub| async move {
                let mut sub = sub?;
                loop {
                    let msg = sub.next().await?;
                    let has =
                        |name: &str| msg.headers.as_ref().is_some_and(|h| h.get(name).is_some());
                    if has(crate::api::subject::HEADER_END) {
                        return None;
                    }
                    // The kubelet asking whether anyone still listens: this subscription
                    // existing is the answer.
                    if has(crate::api::subject::HEADER_PING) {
                        continue;
                    }
                    return Some((Ok::<_, actix_web::Error>(msg.payload), Some(sub)));
                }
            });
            let body =
                futures::stream::once(async move { Ok::<_, actix_web::Error>(first) }).chain(rest);
            Ok(HttpResponse::Ok()
                .content_type("text/plain")
                .streaming(body))
        }
    }?;
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {w:?}")) {
            response
                .headers_mut()
                .append(header::HeaderName::from_static("warning"), v);
        }
    }
    Ok(response)
}

/// An answer (object or list) in the version `info` serves: see `registry::to_served`.
fn served_version(info: &ResourceInfo, v: &mut Value) {
    if crate::apiserver::custom::strategy::of(info).is_none() {
        return; // a built-in kind: one version, as stored
    }
    crate::apiserver::registry::to_served(info, v);
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            crate::apiserver::registry::to_served(info, item);
        }
    }
}

/// Streams a watch as JSON lines, flushed per event.
fn watch_response(stream: WatchStream, table: bool, include: table::Include) -> HttpResponse {
    let bookmarks = stream.allow_bookmarks;
    let info = stream.shown_as();
    let body = futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        loop {
            let item = stream.next().await?;
            let line = match item {
                WatchItem::Object {
                    event_type, object, ..
                } => {
                    let mut obj = codec::msgpack_to_value(&object).unwrap_or(Value::Null);
                    crate::apiserver::registry::to_served(info, &mut obj);
                    if table {
                        obj = table::table(
                            info,
                            std::slice::from_ref(&obj),
                            json!({"resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))}),
                            include,
                        );
                    }
                    json!({"type": event_type, "object": obj})
                }
                item @ (WatchItem::Bookmark(_) | WatchItem::InitialEventsEnd(_)) => {
                    if !bookmarks {
                        continue;
                    }
                    json!({"type": event_type::BOOKMARK, "object": item.bookmark(info)})
                }
                WatchItem::Error(status) => json!({"type": event_type::ERROR, "object": *status}),
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            return Some((Ok::<_, actix_web::Error>(Bytes::from(bytes)), Some(stream)));
        }
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        ))
        .streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::resource;

    fn parse_path_static(path: &str) -> Result<Option<Target>, Status> {
        parse_path(path, |g, v, p| {
            resource::RESOURCES
                .iter()
                .find(|r| r.group == g && r.version == v && r.plural == p)
        })
    }

    #[test]
    fn yaml_bodies_are_read_and_bombs_are_refused() {
        let v =
            parse_yaml(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  a: b\n")
                .unwrap();
        assert_eq!(v["data"]["a"], "b");
        // A billion laughs: each level repeats the one before ten times.
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let (prev, this) = (w[0], w[1]);
            let refs = vec![format!("*{prev}"); 10].join(", ");
            bomb.push_str(&format!("{this}: &{this} [{refs}]\n"));
        }
        let started = std::time::Instant::now();
        let e = parse_yaml(bomb.as_bytes()).unwrap_err();
        assert_eq!(e.code, 400, "{e:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Deep nesting is refused at once, whatever the body's size.
        let started = std::time::Instant::now();
        let deep = "[".repeat(MAX_BODY);
        assert_eq!(parse_yaml(deep.as_bytes()).unwrap_err().code, 400);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // A quote inside a plain scalar opens nothing: what follows still counts.
        let hidden = format!("a: it's\nb: {}", "[".repeat(MAX_BODY - 16));
        assert_eq!(parse_yaml(hidden.as_bytes()).unwrap_err().code, 400);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Brackets in quoted scalars and comments are not nesting.
        let quoted = format!(
            "a: \"{}\\\" {}\"\nb: 1 # {}\n",
            "[".repeat(1000),
            "[".repeat(1000),
            "{".repeat(1000)
        );
        assert_eq!(parse_yaml(quoted.as_bytes()).unwrap()["b"], 1);
        assert_eq!(parse_yaml(b"  \n").unwrap_err().code, 400);
    }

    #[test]
    fn paths_parse_like_kube_apiserver() {
        let t = parse_path_static("/api/v1/namespaces/default/pods/web/status")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                t.info.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = parse_path_static("/api/v1/namespaces/kube-system")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.info.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = parse_path_static("/api/v1/namespaces/x/status")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.info.plural, t.name.as_deref(), t.subresource.as_deref()),
            ("namespaces", Some("x"), Some("status"))
        );
        let t = parse_path_static("/apis/apps/v1/deployments")
            .unwrap()
            .unwrap();
        assert_eq!((t.info.plural, t.namespace), ("deployments", None));
        assert!(parse_path_static("/api/v1/widgets").is_err());
        assert!(parse_path_static("/api/v1/namespaces/a/nodes").is_err());
        assert!(parse_path_static("/metrics").unwrap().is_none());
        assert_eq!(
            url_decode_pairs("labelSelector=app%3Dweb&watch=1&x"),
            vec![
                ("labelSelector".into(), "app=web".into()),
                ("watch".into(), "1".into()),
                ("x".into(), "".into())
            ]
        );
    }
}
