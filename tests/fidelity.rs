//! Controllers that behave as Kubernetes' do, checked with the real kubectl against a real
//! `skiff up` (process runtime): a Deployment re-created after an orphaning delete adopts
//! its ReplicaSet and its pods instead of starting over; a pod relabelled out of its
//! ReplicaSet's selector is released (its controller reference removed) and replaced.

mod common;

use serde_json::Value;

use common::SkiffUp;

const DEPLOYMENT: &str = r#"{
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "keep", "namespace": "default"},
  "spec": {
    "replicas": 2,
    "selector": {"matchLabels": {"app": "keep"}},
    "template": {
      "metadata": {"labels": {"app": "keep"}},
      "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}
    }
  }
}"#;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The live pods with label app=<app>: (name, controller uid).
fn pods(up: &SkiffUp, app: &str) -> Vec<(String, Option<String>)> {
    let list = json(&up.ok(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]));
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .map(|p| {
            let controller = p
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|rs| rs.iter().find(|r| r["controller"] == true))
                .and_then(|r| r["uid"].as_str())
                .map(String::from);
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                controller,
            )
        })
        .collect()
}

fn apply(up: &SkiffUp, manifest: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.json");
    std::fs::write(&f, manifest).unwrap();
    up.ok(&["apply", "-f", f.to_str().unwrap()]);
}

#[test]
fn a_deployment_recreated_after_an_orphaning_delete_adopts_its_replicaset_and_pods() {
    let up = SkiffUp::start(2);
    apply(&up, DEPLOYMENT);
    up.ok(&["rollout", "status", "deployment/keep", "--timeout=60s"]);
    let before = pods(&up, "keep");
    assert_eq!(before.len(), 2, "{before:?}");
    let rs = json(&up.ok(&["get", "rs", "-l", "app=keep", "-o", "json"]));
    let rs_name = rs["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();

    up.ok(&["delete", "deployment", "keep", "--cascade=orphan"]);
    up.eventually("the ReplicaSet orphaned", 30, |u| {
        let rs = json(&u.ok(&["get", "rs", &rs_name, "-o", "json"]));
        rs.pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_none_or(|r| r.is_empty())
    });

    apply(&up, DEPLOYMENT);
    let out = up.run(&["rollout", "status", "deployment/keep", "--timeout=60s"]);
    assert!(
        out.status.success(),
        "rollout after re-create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = json(&up.ok(&["get", "deployment", "keep", "-o", "json"]));
    let uid = d["metadata"]["uid"].as_str().unwrap().to_string();
    up.eventually("the ReplicaSet adopted", 30, |u| {
        let rs = json(&u.ok(&["get", "rs", &rs_name, "-o", "json"]));
        rs.pointer("/metadata/ownerReferences/0/uid")
            .and_then(Value::as_str)
            == Some(&uid)
    });
    // The same ReplicaSet, the same two pods: nothing started over.
    let rss = json(&up.ok(&["get", "rs", "-l", "app=keep", "-o", "json"]));
    assert_eq!(rss["items"].as_array().unwrap().len(), 1, "{rss}");
    assert_eq!(d["status"]["readyReplicas"], 2, "{d}");
    let mut after: Vec<String> = pods(&up, "keep").into_iter().map(|p| p.0).collect();
    let mut before: Vec<String> = before.into_iter().map(|p| p.0).collect();
    after.sort();
    before.sort();
    assert_eq!(after, before);
}

#[test]
fn a_pod_relabelled_out_of_its_replicaset_is_released_and_replaced() {
    let up = SkiffUp::start(2);
    apply(&up, &DEPLOYMENT.replace("keep", "rel"));
    up.ok(&["rollout", "status", "deployment/rel", "--timeout=60s"]);
    let owned = pods(&up, "rel");
    assert_eq!(owned.len(), 2, "{owned:?}");
    let (victim, rs_uid) = owned[0].clone();
    up.ok(&["label", "pod", &victim, "app=elsewhere", "--overwrite"]);
    up.eventually("a replacement and the relabelled pod released", 60, |u| {
        let now = pods(u, "rel");
        let released = pods(u, "elsewhere");
        now.len() == 2
            && now.iter().all(|(n, c)| n != &victim && c == &rs_uid)
            && released == vec![(victim.clone(), None)]
    });
    // Released, not deleted: it keeps running.
    let pod = json(&up.ok(&["get", "pod", &victim, "-o", "json"]));
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");

    // An annotation copied to the ReplicaSet is not a scaling Event.
    let scaled = |u: &SkiffUp| {
        json(&u.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=rel,reason=ScalingReplicaSet",
            "-o",
            "json",
        ]))["items"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = scaled(&up);
    for i in 0..3 {
        up.ok(&[
            "annotate",
            "deployment",
            "rel",
            &format!("note=v{i}"),
            "--overwrite",
        ]);
        up.eventually("the annotation on the ReplicaSet", 20, |u| {
            u.ok(&[
                "get",
                "rs",
                "-l",
                "app=rel",
                "-o",
                "jsonpath={.items[0].metadata.annotations.note}",
            ]) == format!("v{i}")
        });
    }
    assert_eq!(
        scaled(&up),
        before,
        "annotating emitted ScalingReplicaSet events"
    );
}

fn configmap(name: &str, owner: Option<(&str, &str, &str, &str)>, finalizers: &[&str]) -> String {
    let mut cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"k": "v"}});
    if let Some((api_version, kind, owner_name, uid)) = owner {
        cm["metadata"]["ownerReferences"] = serde_json::json!([{"apiVersion": api_version,
            "kind": kind, "name": owner_name, "uid": uid, "blockOwnerDeletion": true}]);
    }
    if !finalizers.is_empty() {
        cm["metadata"]["finalizers"] = serde_json::json!(finalizers);
    }
    cm.to_string()
}

fn uid_of(up: &SkiffUp, kind: &str, name: &str) -> String {
    up.ok(&["get", kind, name, "-o", "jsonpath={.metadata.uid}"])
}

fn exists(up: &SkiffUp, kind: &str, name: &str) -> bool {
    up.run(&["get", kind, name]).status.success()
}

/// Any owner kind, any dependent kind: background, foreground and orphan propagation, and
/// dependents whose owner never existed.
#[test]
fn the_garbage_collector_follows_owner_references_of_every_kind() {
    let up = SkiffUp::start(1);

    // Background: a ConfigMap owned by a ConfigMap goes with it; so does a Secret owned by
    // a Pod.
    apply(&up, &configmap("owner-a", None, &[]));
    let a = uid_of(&up, "configmap", "owner-a");
    apply(
        &up,
        &configmap("dep-a", Some(("v1", "ConfigMap", "owner-a", &a)), &[]),
    );
    up.ok(&["delete", "configmap", "owner-a"]);
    up.eventually("dep-a collected", 30, |u| !exists(u, "configmap", "dep-a"));

    // Never existed: collected too.
    apply(
        &up,
        &configmap(
            "dep-ghost",
            Some((
                "v1",
                "ConfigMap",
                "ghost",
                "00000000-0000-0000-0000-000000000000",
            )),
            &[],
        ),
    );
    up.eventually("dep-ghost collected", 30, |u| {
        !exists(u, "configmap", "dep-ghost")
    });

    // A live owner keeps its dependent (the collector must not act on a lagging cache).
    apply(&up, &configmap("owner-live", None, &[]));
    let live = uid_of(&up, "configmap", "owner-live");
    apply(
        &up,
        &configmap(
            "dep-live",
            Some(("v1", "ConfigMap", "owner-live", &live)),
            &[],
        ),
    );

    // Foreground: the owner waits, with the foregroundDeletion finalizer, while a blocking
    // dependent (held here by a finalizer of its own) remains; then both go.
    apply(&up, &configmap("owner-f", None, &[]));
    let f = uid_of(&up, "configmap", "owner-f");
    apply(
        &up,
        &configmap(
            "dep-f",
            Some(("v1", "ConfigMap", "owner-f", &f)),
            &["example.com/hold"],
        ),
    );
    up.ok(&[
        "delete",
        "configmap",
        "owner-f",
        "--cascade=foreground",
        "--wait=false",
    ]);
    up.eventually("dep-f being deleted", 30, |u| {
        let d = json(&u.ok(&["get", "configmap", "dep-f", "-o", "json"]));
        d.pointer("/metadata/deletionTimestamp").is_some()
    });
    let owner = json(&up.ok(&["get", "configmap", "owner-f", "-o", "json"]));
    assert!(
        owner["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion")),
        "the owner waits for its dependents: {owner}"
    );
    up.ok(&[
        "patch",
        "configmap",
        "dep-f",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    up.eventually("owner-f gone after its dependent", 30, |u| {
        !exists(u, "configmap", "dep-f") && !exists(u, "configmap", "owner-f")
    });

    // Orphan: the dependent stays, without its reference to the owner.
    apply(&up, &configmap("owner-o", None, &[]));
    let o = uid_of(&up, "configmap", "owner-o");
    apply(
        &up,
        &configmap("dep-o", Some(("v1", "ConfigMap", "owner-o", &o)), &[]),
    );
    up.ok(&["delete", "configmap", "owner-o", "--cascade=orphan"]);
    up.eventually("owner-o gone, dep-o released", 30, |u| {
        !exists(u, "configmap", "owner-o")
            && json(&u.ok(&["get", "configmap", "dep-o", "-o", "json"]))
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_none_or(|r| r.is_empty())
    });

    assert!(
        exists(&up, "configmap", "dep-live"),
        "a live owner's dependent kept"
    );
}

/// `env` from ConfigMap and Secret keys, `envFrom` with a prefix, a field and a resource,
/// `$(VAR)` in a later value and in the command; a missing ConfigMap holds the container in
/// CreateContainerConfigError until it exists.
#[test]
fn a_pod_reads_its_configmap_and_secret_from_env_and_files() {
    let up = SkiffUp::start(1);
    up.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    let pod = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "reader", "namespace": "default"},
      "spec": {
        "restartPolicy": "Never",
        "containers": [{
          "name": "c", "image": "busybox",
          "command": ["sh", "-c", "echo greeting=$GREETING; echo password=$PASSWORD; echo from=$CFG_colour; echo pod=$POD; echo mem=$MEM_MI; echo both=$BOTH; echo arg=$(GREETING); echo file=$(cat $SKIFF_CONTAINER_ROOT/etc/cfg/greeting)"],
          "resources": {"limits": {"memory": "64Mi"}},
          "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
          "env": [
            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "BOTH", "value": "$(GREETING)-$(POD)"},
            {"name": "ABSENT", "valueFrom": {"configMapKeyRef": {"name": "nowhere", "key": "k", "optional": true}}}
          ],
          "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]
        }],
        "volumes": [{"name": "cfg", "configMap": {"name": "settings"}}]
      }
    }"#;
    apply(&up, pod);
    up.eventually(
        "CreateContainerConfigError while the ConfigMap is missing",
        30,
        |u| {
            let p = json(&u.ok(&["get", "pod", "reader", "-o", "json"]));
            p.pointer("/status/containerStatuses/0/state/waiting/reason")
                .and_then(Value::as_str)
                .is_some_and(|r| r == "CreateContainerConfigError" || r == "ContainerCreating")
                && p["status"]["phase"] == "Pending"
        },
    );
    up.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=greeting=hello",
        "--from-literal=colour=blue",
    ]);
    up.eventually("the pod ran to completion", 60, |u| {
        u.ok(&["get", "pod", "reader", "-o", "jsonpath={.status.phase}"]) == "Succeeded"
    });
    let logs = up.ok(&["logs", "reader"]);
    for line in [
        "greeting=hello",
        "password=s3cret",
        "from=blue",
        "pod=reader",
        "mem=64",
        "both=hello-reader",
        "arg=hello",
        "file=hello",
    ] {
        assert!(logs.lines().any(|l| l == line), "{line} in:\n{logs}");
    }
}

#[test]
fn a_missing_configmap_key_is_create_container_config_error_with_the_kubelet_message() {
    let up = SkiffUp::start(1);
    up.ok(&["create", "configmap", "partial", "--from-literal=present=1"]);
    let pod = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "lacking", "namespace": "default"},
      "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "partial", "key": "absent"}}}]}]}
    }"#;
    apply(&up, pod);
    up.eventually("CreateContainerConfigError with kube's message", 30, |u| {
        let p = json(&u.ok(&["get", "pod", "lacking", "-o", "json"]));
        p.pointer("/status/containerStatuses/0/state/waiting")
            .is_some_and(|w| {
                w["reason"] == "CreateContainerConfigError"
                    && w["message"] == "couldn't find key absent in ConfigMap default/partial"
            })
    });
    let table = up.ok(&["get", "pod", "lacking"]);
    assert!(table.contains("CreateContainerConfigError"), "{table}");
    // The kubelet records it, once.
    up.eventually("the kubelet's Failed event", 20, |u| {
        u.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=lacking,reason=Failed",
            "-o",
            "json",
        ])
        .contains("Error: couldn't find key absent in ConfigMap default/partial")
    });
    let failed = json(&up.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=lacking,reason=Failed",
        "-o",
        "json",
    ]));
    assert_eq!(failed["items"].as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed["items"][0]["source"]["component"], "kubelet");
}

fn sleeper(name: &str, tolerations: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "default"}},
          "spec": {{"tolerations": {tolerations},
            "containers": [{{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}}]}}}}"#
    )
}

fn deleting_or_gone(up: &SkiffUp, pod: &str) -> bool {
    let out = up.run(&["get", "pod", pod, "-o", "json"]);
    !out.status.success()
        || json(&String::from_utf8_lossy(&out.stdout))
            .pointer("/metadata/deletionTimestamp")
            .is_some()
}

/// A NoExecute taint evicts the pods that do not tolerate it at once, those that tolerate it
/// for 5 s after 5 s, and leaves those that tolerate it for good; cordon taints the node
/// unschedulable and uncordon takes the taint away.
#[test]
fn a_noexecute_taint_evicts_by_toleration_and_cordon_taints_the_node() {
    let up = SkiffUp::start(1);
    let node = "skiff-node-1";
    apply(&up, &sleeper("untolerating", "[]"));
    apply(
        &up,
        &sleeper(
            "five",
            r#"[{"key": "dedicated", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]"#,
        ),
    );
    apply(
        &up,
        &sleeper("forever", r#"[{"key": "dedicated", "operator": "Exists"}]"#),
    );
    up.eventually("three pods Running", 60, |u| {
        u.ok(&["get", "pods", "-o", "jsonpath={.items[*].status.phase}"])
            .split_whitespace()
            .filter(|p| *p == "Running")
            .count()
            == 3
    });
    let t0 = std::time::Instant::now();
    up.ok(&["taint", "node", node, "dedicated=x:NoExecute"]);
    up.eventually("the untolerating pod evicted", 20, |u| {
        deleting_or_gone(u, "untolerating")
    });
    let mut five_at = None;
    up.eventually("the pod tolerating 5 s evicted", 30, |u| {
        let gone = deleting_or_gone(u, "five");
        if gone && five_at.is_none() {
            five_at = Some(t0.elapsed());
        }
        gone
    });
    let five_at = five_at.unwrap();
    assert!(
        five_at >= std::time::Duration::from_millis(4500),
        "evicted {five_at:?} after the taint, before its 5 s"
    );
    assert!(
        !deleting_or_gone(&up, "forever"),
        "tolerating for good: stays"
    );

    up.ok(&["cordon", node]);
    up.eventually("the unschedulable taint", 20, |u| {
        u.ok(&["get", "node", node, "-o", "jsonpath={.spec.taints[*].key}"])
            .contains("node.kubernetes.io/unschedulable")
    });
    up.ok(&["uncordon", node]);
    up.eventually("the unschedulable taint gone", 20, |u| {
        !u.ok(&["get", "node", node, "-o", "jsonpath={.spec.taints[*].key}"])
            .contains("node.kubernetes.io/unschedulable")
    });
}

/// Three replicas that must not share a node, on two nodes: two run, one stays Pending
/// with kube's FailedScheduling reason.
#[test]
fn required_anti_affinity_leaves_the_third_replica_pending() {
    let up = SkiffUp::start(2);
    let d = r#"{
      "apiVersion": "apps/v1", "kind": "Deployment",
      "metadata": {"name": "apart", "namespace": "default"},
      "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "apart"}},
        "template": {
          "metadata": {"labels": {"app": "apart"}},
          "spec": {
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
              {"labelSelector": {"matchLabels": {"app": "apart"}}, "topologyKey": "kubernetes.io/hostname"}]}},
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]
          }
        }
      }
    }"#;
    apply(&up, d);
    up.eventually("2 Running on different nodes, 1 Pending", 60, |u| {
        let list = json(&u.ok(&["get", "pods", "-l", "app=apart", "-o", "json"]));
        let items = list["items"].as_array().unwrap().clone();
        let running: Vec<&Value> = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .collect();
        let pending = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Pending" && p["spec"]["nodeName"].is_null())
            .count();
        running.len() == 2
            && running[0]["spec"]["nodeName"] != running[1]["spec"]["nodeName"]
            && pending == 1
    });
    up.eventually("a FailedScheduling event naming the rule", 30, |u| {
        u.ok(&[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling",
            "-o",
            "json",
        ])
        .contains("0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.")
    });
}

fn init_pod(name: &str, init_exit: u8, policy: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "default"}},
          "spec": {{"restartPolicy": "{policy}",
            "initContainers": [
              {{"name": "prepare", "image": "busybox", "command": ["sh", "-c", "echo preparing; echo ready > $SKIFF_CONTAINER_ROOT/work/flag"],
               "volumeMounts": [{{"name": "work", "mountPath": "/work"}}]}},
              {{"name": "check", "image": "busybox", "command": ["sh", "-c", "echo checking; exit {init_exit}"]}}
            ],
            "containers": [{{"name": "main", "image": "busybox",
              "command": ["sh", "-c", "echo main saw $(cat $SKIFF_CONTAINER_ROOT/work/flag); sleep 3600"],
              "volumeMounts": [{{"name": "work", "mountPath": "/work"}}]}}],
            "volumes": [{{"name": "work", "emptyDir": {{}}}}]}}}}"#
    )
}

/// Init containers run in order to success before the main container, which sees what they
/// left in a shared volume; a failing one under restartPolicy Never fails the pod
/// (Init:Error) and the main container never starts; under Always it is retried
/// (Init:CrashLoopBackOff). `kubectl logs -c <init>` reads an init container's output.
#[test]
fn init_containers_run_in_order_and_a_failing_one_holds_the_pod() {
    let up = SkiffUp::start(1);
    apply(&up, &init_pod("inits", 0, "Always"));
    up.eventually(
        "the main container running after both init containers",
        60,
        |u| {
            let p = json(&u.ok(&["get", "pod", "inits", "-o", "json"]));
            p["status"]["phase"] == "Running"
                && p.pointer("/status/initContainerStatuses/1/state/terminated/exitCode")
                    == Some(&Value::from(0))
        },
    );
    up.eventually("main saw the flag", 30, |u| {
        u.ok(&["logs", "inits", "-c", "main"])
            .contains("main saw ready")
    });
    assert!(up
        .ok(&["logs", "inits", "-c", "prepare"])
        .contains("preparing"));
    let p = json(&up.ok(&["get", "pod", "inits", "-o", "json"]));
    let initialized = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Initialized")
        .unwrap()
        .clone();
    assert_eq!(initialized["status"], "True", "{p}");
    for c in p["status"]["conditions"].as_array().unwrap() {
        assert!(
            c["lastTransitionTime"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "every condition has its transition time: {c}"
        );
    }

    apply(&up, &init_pod("init-fails", 1, "Never"));
    up.eventually("Init:Error and Failed", 60, |u| {
        let row = u.ok(&["get", "pod", "init-fails", "--no-headers"]);
        row.contains("Init:Error")
            && u.ok(&["get", "pod", "init-fails", "-o", "jsonpath={.status.phase}"]) == "Failed"
    });
    let p = json(&up.ok(&["get", "pod", "init-fails", "-o", "json"]));
    let initialized = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Initialized")
        .unwrap()
        .clone();
    assert_eq!(
        (
            initialized["status"].as_str(),
            initialized["reason"].as_str(),
            initialized["message"].as_str()
        ),
        (
            Some("False"),
            Some("ContainersNotInitialized"),
            Some("containers with incomplete status: [check]")
        ),
        "{p}"
    );
    assert_eq!(
        p.pointer("/status/containerStatuses/0/state/waiting/reason"),
        Some(&Value::from("PodInitializing")),
        "the main container never started: {p}"
    );
    let err = up.run(&["logs", "init-fails", "-c", "main"]);
    assert!(
        !String::from_utf8_lossy(&err.stdout).contains("main saw"),
        "main ran: {err:?}"
    );

    apply(&up, &init_pod("init-retries", 1, "Always"));
    up.eventually("Init:CrashLoopBackOff", 60, |u| {
        u.ok(&["get", "pod", "init-retries", "--no-headers"])
            .contains("Init:CrashLoopBackOff")
    });
}

/// activeDeadlineSeconds: past it the kubelet stops the containers and the pod fails with
/// DeadlineExceeded.
#[test]
fn a_pod_past_its_active_deadline_fails_with_deadline_exceeded() {
    let up = SkiffUp::start(1);
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bounded", "namespace": "default"},
      "spec": {"activeDeadlineSeconds": 3, "restartPolicy": "Always",
        "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}"#;
    apply(&up, pod);
    up.eventually("Failed with DeadlineExceeded", 30, |u| {
        let p = json(&u.ok(&["get", "pod", "bounded", "-o", "json"]));
        p["status"]["phase"] == "Failed" && p["status"]["reason"] == "DeadlineExceeded"
    });
    // The kubelet's Events of its start.
    let events = up.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=bounded",
        "-o",
        "json",
    ]);
    for reason in ["Pulled", "Created", "Started"] {
        assert!(
            events.contains(&format!("\"reason\": \"{reason}\"")),
            "{reason} in {events}"
        );
    }
    let p = json(&up.ok(&["get", "pod", "bounded", "-o", "json"]));
    assert!(
        p.pointer("/status/containerStatuses/0/state/terminated")
            .is_some(),
        "the container was stopped: {p}"
    );
}

/// minReadySeconds: a Ready pod counts as available only after it has been Ready that long.
#[test]
fn min_ready_seconds_delays_availability() {
    let up = SkiffUp::start(1);
    apply(
        &up,
        &DEPLOYMENT.replace("keep", "slow").replace(
            r#""replicas": 2,"#,
            r#""replicas": 1, "minReadySeconds": 4,"#,
        ),
    );
    let rs_counts = |u: &SkiffUp| {
        let rs = json(&u.ok(&["get", "rs", "-l", "app=slow", "-o", "json"]));
        let s = &rs["items"][0]["status"];
        (
            s["readyReplicas"].as_i64().unwrap_or(0),
            s["availableReplicas"].as_i64().unwrap_or(0),
        )
    };
    let mut ready_at = None;
    up.eventually("the pod Ready", 60, |u| {
        let ready = rs_counts(u).0 == 1;
        if ready {
            ready_at = Some(std::time::Instant::now());
        }
        ready
    });
    assert_eq!(rs_counts(&up).1, 0, "available before minReadySeconds");
    up.eventually("available after minReadySeconds", 30, |u| {
        rs_counts(u).1 == 1
    });
    let waited = ready_at.unwrap().elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(2500),
        "available {waited:?} after Ready"
    );
    up.ok(&["rollout", "status", "deployment/slow", "--timeout=30s"]);
}

/// `kubectl logs --previous` reads the instance before the current one, `--limit-bytes`
/// cuts the answer, and options kube refuses are 422.
#[test]
fn logs_options_previous_limit_bytes_and_validation() {
    let up = SkiffUp::start(1);
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "counter", "namespace": "default"},
      "spec": {"containers": [{"name": "c", "image": "busybox",
        "command": ["sh", "-c", "f=$SKIFF_CONTAINER_ROOT/work/n; n=$(cat $f 2>/dev/null || echo 0); n=$((n+1)); echo $n > $f; echo run $n; sleep 2; exit 1"],
        "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
        "volumes": [{"name": "work", "emptyDir": {}}]}}"#;
    apply(&up, pod);
    up.eventually("a restart", 60, |u| {
        u.ok(&[
            "get",
            "pod",
            "counter",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ])
        .parse::<u32>()
        .is_ok_and(|n| n >= 1)
    });
    up.eventually("the current and previous runs", 30, |u| {
        let now = u.ok(&["logs", "counter"]);
        let before = u.ok(&["logs", "counter", "--previous"]);
        let n = |t: &str| {
            t.trim()
                .strip_prefix("run ")
                .and_then(|n| n.parse::<u32>().ok())
        };
        matches!((n(&now), n(&before)), (Some(a), Some(b)) if a == b + 1)
    });
    let cut = up.ok(&["logs", "counter", "--limit-bytes=3"]);
    assert_eq!(cut, "run", "{cut:?}");
    let bad = up.run(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/counter/log?tailLines=-1",
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "tailLines=-1 accepted");
    assert!(
        err.contains("tailLines: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );
}

fn pinned(name: &str, app: &str, node: &str, cpu: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "default", "labels": {{"app": "{app}"}}}},
          "spec": {{"nodeName": "{node}", "containers": [{{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
            "resources": {{"requests": {{"cpu": "{cpu}"}}}}}}]}}}}"#
    )
}

/// A DoNotSchedule topology spread constraint overrides what the scores prefer: with two
/// `app=spread` pods on node 1 and a heavy pod on node 2, the scores would pick node 1, the
/// constraint (maxSkew 1 per host) allows only node 2.
#[test]
fn topology_spread_do_not_schedule_is_a_filter() {
    let up = SkiffUp::start(2);
    apply(&up, &pinned("s-1", "spread", "skiff-node-1", "10m"));
    apply(&up, &pinned("s-2", "spread", "skiff-node-1", "10m"));
    apply(&up, &pinned("heavy", "other", "skiff-node-2", "1500m"));
    let pod = |name: &str, constrained: bool| {
        let spread = if constrained {
            r#", "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]"#
        } else {
            ""
        };
        format!(
            // Another label besides app=spread: the scheduler's spreading score groups pods
            // without a controller by all their labels, so it does not see the pinned ones.
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "default", "labels": {{"app": "spread", "v": "{name}"}}}},
              "spec": {{"containers": [{{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                "resources": {{"requests": {{"cpu": "100m"}}}}}}]{spread}}}}}"#
        )
    };
    let node_of =
        |u: &SkiffUp, name: &str| u.ok(&["get", "pod", name, "-o", "jsonpath={.spec.nodeName}"]);
    apply(&up, &pod("free", false));
    up.eventually("the unconstrained pod scheduled", 30, |u| {
        !node_of(u, "free").is_empty()
    });
    assert_eq!(
        node_of(&up, "free"),
        "skiff-node-1",
        "the scores prefer node 1"
    );
    up.ok(&["delete", "pod", "free", "--grace-period=0", "--force"]);
    apply(&up, &pod("spread", true));
    up.eventually("the constrained pod scheduled", 30, |u| {
        !node_of(u, "spread").is_empty()
    });
    assert_eq!(node_of(&up, "spread"), "skiff-node-2");
}
