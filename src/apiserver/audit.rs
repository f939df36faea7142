//! The audit log (`--audit-log-path`): one JSON line per mutating request, in
//! kube-apiserver's `audit.k8s.io/v1` Event shape at level `Metadata` and stage
//! `ResponseComplete` — who (user, groups, user agent), what (verb, object, request URI),
//! the answer's code, and when — refused requests included.
//!
//! Lines are written by a thread of their own, so a slow disk never holds up the ApiServer
//! actor; the file is created 0600 (it names users and objects) and appended to.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

use serde_json::{json, Value};

use super::{Call, UserInfo};
use crate::api::wire::Verb;

/// Writes audit events to a file.
pub struct Auditor {
    tx: mpsc::Sender<String>,
}

/// What is known of a request when it arrives; finished with its answer's code.
pub struct Entry {
    tx: mpsc::Sender<String>,
    audit_id: String,
    verb: &'static str,
    uri: String,
    user_agent: String,
    object: Value,
    received: String,
}

/// kube's audit timestamps: RFC 3339 with microseconds.
fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Whether kube audits a verb at this level: every request that may change something.
fn mutating(verb: Verb) -> bool {
    matches!(
        verb,
        Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
    )
}

impl Auditor {
    /// Opens (creating 0600) `path` for appending, and starts the writer thread.
    pub fn open(path: &Path) -> std::io::Result<Auditor> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_private_dir(dir)?;
        }
        crate::files::private_file(path)?;
        let mut file =
            std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(path)?);
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("skiff-audit".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let _ = writeln!(file, "{line}");
                    // Lines that queued up meanwhile go out in the same write.
                    while let Ok(more) = rx.try_recv() {
                        let _ = writeln!(file, "{more}");
                    }
                    if let Err(e) = file.flush() {
                        tracing::warn!(error = %e, "writing the audit log");
                    }
                }
            })?;
        Ok(Auditor { tx })
    }

    /// The entry of a call, if its verb is audited.
    pub fn begin(&self, call: &Call) -> Option<Entry> {
        if !mutating(call.verb) {
            return None;
        }
        let r = &call.request;
        let mut object = json!({"resource": r.resource});
        let o = object.as_object_mut().expect("an object");
        for (k, v) in [
            ("namespace", r.namespace.clone()),
            (
                "name",
                r.name.clone().or_else(|| {
                    r.body
                        .as_ref()
                        .map(|b| crate::api::meta::name(b).to_string())
                        .filter(|n| !n.is_empty())
                }),
            ),
            ("subresource", r.subresource.clone()),
        ] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                o.insert(k.into(), json!(v));
            }
        }
        if !r.group.is_empty() {
            o.insert("apiGroup".into(), json!(r.group));
        }
        if let Some(v) = &r.version {
            o.insert("apiVersion".into(), json!(v));
        }
        let (user_agent, uri) = match &call.origin {
            Some((agent, line)) => (
                agent.clone(),
                line.split_once(' ')
                    .map_or(line.as_str(), |(_, p)| p)
                    .to_string(),
            ),
            None => (String::from("nats"), format!("nats:{}", call.verb.as_str())),
        };
        Some(Entry {
            tx: self.tx.clone(),
            audit_id: uuid::Uuid::new_v4().to_string(),
            verb: call.verb.as_str(),
            uri,
            user_agent,
            object,
            received: now(),
        })
    }
}

impl Entry {
    /// Writes the event: `user` is None when the caller was not authenticated.
    pub fn finish(&self, user: Option<&UserInfo>, code: u16) {
        let user = match user {
            Some(u) => json!({"username": u.name, "uid": u.uid, "groups": u.groups}),
            None => json!({}),
        };
        let decision = match code {
            401 => None,
            403 => Some("forbid"),
            _ => Some("allow"),
        };
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": self.audit_id,
            "stage": "ResponseComplete",
            "requestURI": self.uri,
            "verb": self.verb,
            "user": user,
            "userAgent": self.user_agent,
            "objectRef": self.object,
            "responseStatus": {"metadata": {}, "code": code},
            "requestReceivedTimestamp": self.received,
            "stageTimestamp": now(),
        });
        if let Some(d) = decision {
            event["annotations"] = json!({"authorization.k8s.io/decision": d});
        }
        let _ = self.tx.send(event.to_string());
    }
}
