//! kube-rs 5, unmodified, against a real `skiff up` over HTTPS: lists and watches through
//! kube-runtime's watcher (plain and streaming lists), server-side apply, a CRD derived and
//! installed from Rust, and a kube-runtime `Controller` that reconciles it with the
//! `finalizer()` helper, records Events with `events::Recorder` and writes its status.
//!
//! `SKIFF_BIN` names the skiff binary (default: the main crate's `target/debug/skiff`);
//! nats-server must be on PATH (`scripts/test` installs it).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Config, CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A `skiff up` of its own, stopped when dropped.
struct Skiff {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Skiff {
    fn drop(&mut self) {
        // SIGTERM, so that it stops the nats-server it started.
        terminate(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn terminate(pid: u32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn skiff_bin() -> PathBuf {
    std::env::var_os("SKIFF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/skiff")
        })
}

impl Skiff {
    fn start() -> Skiff {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(skiff_bin())
            .arg("up")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--nats-port", &free_port().to_string()])
            .args(["--https-bind", &format!("127.0.0.1:{}", free_port())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (build skiff first)", skiff_bin().display()));
        Skiff { child, dir }
    }

    /// A kube client from the kubeconfig `skiff up` writes, once the API server answers.
    async fn client(&self) -> Client {
        let path = self.dir.path().join("kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(kc) = Kubeconfig::read_from(&path) {
                let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .expect("kubeconfig loads");
                let client = Client::try_from(config).expect("client");
                if client.apiserver_version().await.is_ok() {
                    return client;
                }
            }
            assert!(Instant::now() < deadline, "skiff up did not come up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits until `check` says yes, or fails naming `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_and_server_side_apply() {
    let skiff = Skiff::start();
    let client = skiff.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // Server-side apply creates, then a second manager conflicts until it forces.
    let params = PatchParams::apply("kube-rs-one");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied"}, "data": {"a": "1"}});
    let got = cms
        .patch("applied", &params, &Patch::Apply(&cm))
        .await
        .expect("apply creates");
    assert_eq!(got.data.unwrap()["a"], "1");
    let managers: Vec<String> = got
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["kube-rs-one"]);
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied"}, "data": {"a": "2"}});
    let err = cms
        .patch(
            "applied",
            &PatchParams::apply("kube-rs-two"),
            &Patch::Apply(&other),
        )
        .await
        .expect_err("a conflict");
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 409, "{s:?}"),
        e => panic!("{e:?}"),
    }
    let got = cms
        .patch(
            "applied",
            &PatchParams::apply("kube-rs-two").force(),
            &Patch::Apply(&other),
        )
        .await
        .expect("forced apply");
    assert_eq!(got.data.unwrap()["a"], "2");

    // Server-side apply through a Deployment's scale subresource: the replicas belong to the
    // manager that applied the Deployment until another one forces them through the Scale.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "scaled"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "scaled"}},
            "template": {"metadata": {"labels": {"app": "scaled"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    deploys
        .patch("scaled", &params, &Patch::Apply(&deployment))
        .await
        .expect("deployment applied");
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "scaled"}, "spec": {"replicas": 3}});
    match deploys
        .patch_scale(
            "scaled",
            &PatchParams::apply("kube-rs-scaler"),
            &Patch::Apply(&scale),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("replicas belong to kube-rs-one: {other:?}"),
    }
    let scaled = deploys
        .patch_scale(
            "scaled",
            &PatchParams::apply("kube-rs-scaler").force(),
            &Patch::Apply(&scale),
        )
        .await
        .expect("forced apply through the scale");
    assert_eq!(scaled.spec.unwrap().replicas, Some(3));
    let d = deploys.get("scaled").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    let scaler = d
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("kube-rs-scaler"))
        .expect("the scaler manages the replicas");
    assert_eq!(scaler.subresource.as_deref(), Some("scale"));
    assert_eq!(scaler.operation.as_deref(), Some("Apply"));

    // Lists, and the default watcher and the streaming-list watcher both see the objects
    // there before them and a change after.
    assert!(cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|c| c.name_any() == "applied"));
    for streaming in [false, true] {
        let config = if streaming {
            watcher::Config::default().streaming_lists()
        } else {
            watcher::Config::default()
        };
        // The initial objects end with InitDone: for a streaming list, only once the server
        // sends the `k8s.io/initial-events-end` bookmark.
        let mut events = watcher(cms.clone(), config).boxed();
        let mut initial = Vec::new();
        let done = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(e) = events.try_next().await.unwrap() {
                match e {
                    watcher::Event::InitApply(cm) => initial.push(cm.name_any()),
                    watcher::Event::InitDone => return,
                    _ => {}
                }
            }
        })
        .await;
        assert!(
            done.is_ok(),
            "initial list done (streaming lists: {streaming})"
        );
        assert!(initial.contains(&"applied".to_string()), "{initial:?}");
        let mut seen = events.applied_objects().boxed();
        let name = format!("late-{streaming}");
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(cm) = seen.try_next().await.unwrap() {
                if cm.name_any() == name {
                    return;
                }
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "watcher saw {name} (streaming lists: {streaming})"
        );
    }
}

/// The CRD the controller reconciles.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "kube-rs.example.com",
    version = "v1",
    kind = "Document",
    namespaced,
    status = "DocumentStatus",
    printcolumn = r#"{"name":"Title", "type":"string", "jsonPath":".spec.title"}"#
)]
pub struct DocumentSpec {
    title: String,
    pages: u32,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct DocumentStatus {
    reconciled: bool,
    pages_seen: u32,
}

const FINALIZER: &str = "kube-rs.example.com/cleanup";

#[derive(Debug)]
struct ReconcileError(String);

impl std::fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReconcileError {}

struct Ctx {
    client: Client,
    recorder: Recorder,
}

async fn reconcile(
    doc: Arc<Document>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<ReconcileError>> {
    let ns = doc.namespace().unwrap_or_default();
    let docs: Api<Document> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&docs, FINALIZER, doc, |event| async {
        match event {
            Finalizer::Apply(doc) => {
                let reference = doc.object_ref(&());
                ctx.recorder
                    .publish(
                        &Event {
                            type_: EventType::Normal,
                            reason: "Reconciled".into(),
                            note: Some(format!("{} pages", doc.spec.pages)),
                            action: "Reconcile".into(),
                            secondary: None,
                        },
                        &reference,
                    )
                    .await
                    .map_err(|e| ReconcileError(format!("event: {e}")))?;
                let status = json!({"apiVersion": "kube-rs.example.com/v1", "kind": "Document",
                    "status": {"reconciled": true, "pages_seen": doc.spec.pages}});
                docs.patch_status(
                    &doc.name_any(),
                    &PatchParams::apply("kube-rs-controller").force(),
                    &Patch::Apply(&status),
                )
                .await
                .map_err(|e| ReconcileError(format!("status: {e}")))?;
                Ok(Action::requeue(Duration::from_secs(300)))
            }
            Finalizer::Cleanup(doc) => {
                ctx.recorder
                    .publish(
                        &Event {
                            type_: EventType::Normal,
                            reason: "CleanedUp".into(),
                            note: None,
                            action: "Cleanup".into(),
                            secondary: None,
                        },
                        &doc.object_ref(&()),
                    )
                    .await
                    .map_err(|e| ReconcileError(format!("event: {e}")))?;
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(
    _doc: Arc<Document>,
    err: &kube::runtime::finalizer::Error<ReconcileError>,
    _ctx: Arc<Ctx>,
) -> Action {
    eprintln!("reconcile failed: {err}");
    Action::requeue(Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_reconciles_a_crd_installed_from_rust() {
    let skiff = Skiff::start();
    let client = skiff.client().await;

    // The CRD, derived and installed from Rust, and established.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "documents.kube-rs.example.com",
        &PatchParams::apply("kube-rs-test").force(),
        &Patch::Apply(Document::crd()),
    )
    .await
    .expect("CRD applied");
    tokio::time::timeout(
        Duration::from_secs(20),
        await_condition(
            crds.clone(),
            "documents.kube-rs.example.com",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("established in time")
    .unwrap();

    // The controller.
    let docs: Api<Document> = Api::namespaced(client.clone(), "default");
    let reporter = Reporter {
        controller: "kube-rs-check".into(),
        instance: Some("test".into()),
    };
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
    });
    let controller = tokio::spawn(
        Controller::new(docs.clone(), watcher::Config::default())
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {}),
    );

    let doc = Document::new(
        "manual",
        DocumentSpec {
            title: "The Manual".into(),
            pages: 12,
        },
    );
    docs.create(&PostParams::default(), &doc)
        .await
        .expect("document created");
    eventually("the document reconciled", || {
        let docs = docs.clone();
        async move {
            docs.get("manual").await.is_ok_and(|d| {
                d.finalizers().iter().any(|f| f == FINALIZER)
                    && d.status
                        .as_ref()
                        .is_some_and(|s| s.reconciled && s.pages_seen == 12)
            })
        }
    })
    .await;
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), "default");
    eventually("the Reconciled event", || {
        let events = events.clone();
        async move {
            events.list(&ListParams::default()).await.is_ok_and(|l| {
                l.items.iter().any(|e| {
                    e.reason.as_deref() == Some("Reconciled")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("manual")
                        && e.reporting_controller.as_deref() == Some("kube-rs-check")
                })
            })
        }
    })
    .await;

    // A spec change is reconciled again; a delete waits for the finalizer's cleanup.
    docs.patch(
        "manual",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"pages": 20}})),
    )
    .await
    .unwrap();
    eventually("the change reconciled", || {
        let docs = docs.clone();
        async move {
            docs.get("manual")
                .await
                .is_ok_and(|d| d.status.is_some_and(|s| s.pages_seen == 20))
        }
    })
    .await;
    docs.delete("manual", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the document gone after cleanup", || {
        let docs = docs.clone();
        async move { matches!(docs.get("manual").await, Err(kube::Error::Api(s)) if s.code == 404) }
    })
    .await;
    eventually("the CleanedUp event", || {
        let events = events.clone();
        async move {
            events.list(&ListParams::default()).await.is_ok_and(|l| {
                l.items
                    .iter()
                    .any(|e| e.reason.as_deref() == Some("CleanedUp"))
            })
        }
    })
    .await;
    controller.abort();
}
