//! RBAC with the real kubectl against `skiff up` (whose scheduler and controller-manager run
//! on their bootstrap roles, not `system:masters`): the bootstrap policy, roles and bindings
//! made with `kubectl create`, default deny, escalation prevention, aggregation,
//! `kubectl auth can-i --list` and `kubectl auth reconcile`.

mod common;

use std::process::Output;

use common::*;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs kubectl, which must fail with a message containing `want`.
fn refused(up: &SkiffUp, args: &[&str], want: &str) {
    let out = up.run(args);
    assert!(
        !out.status.success(),
        "kubectl {args:?} succeeded: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(want),
        "kubectl {args:?}: want {want:?} in {}",
        text(&out)
    );
}

/// `kubectl auth can-i …`'s answer (kubectl exits 1 on "no").
fn can_i(up: &SkiffUp, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&up.run(&all).stdout)
        .trim()
        .to_string()
}

/// What Kubernetes 1.33 answers for a fresh namespace's `default` ServiceAccount with the
/// bootstrap policy: the self-reviews and the discovery, health and issuer paths.
const SA_CAN_I_LIST: &str = "\
Resources                                       Non-Resource URLs                      Resource Names   Verbs
selfsubjectreviews.authentication.k8s.io        []                                     []               [create]
selfsubjectaccessreviews.authorization.k8s.io   []                                     []               [create]
selfsubjectrulesreviews.authorization.k8s.io    []                                     []               [create]
                                                [/.well-known/openid-configuration/]   []               [get]
                                                [/.well-known/openid-configuration]    []               [get]
                                                [/api/*]                               []               [get]
                                                [/api]                                 []               [get]
                                                [/apis/*]                              []               [get]
                                                [/apis]                                []               [get]
                                                [/healthz]                             []               [get]
                                                [/healthz]                             []               [get]
                                                [/livez]                               []               [get]
                                                [/livez]                               []               [get]
                                                [/openapi/*]                           []               [get]
                                                [/openapi]                             []               [get]
                                                [/openid/v1/jwks/]                     []               [get]
                                                [/openid/v1/jwks]                      []               [get]
                                                [/readyz]                              []               [get]
                                                [/readyz]                              []               [get]
                                                [/version/]                            []               [get]
                                                [/version/]                            []               [get]
                                                [/version]                             []               [get]
                                                [/version]                             []               [get]
";

#[test]
fn rbac_with_kubectl_default_deny_bindings_escalation_and_aggregation() {
    let up = SkiffUp::start(1);

    // The components work on their own roles: a Deployment is scheduled and run.
    up.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
        "--",
        "sleep",
        "3600",
    ]);
    up.eventually("2 running pods", 60, |u| {
        String::from_utf8_lossy(&u.run(&["get", "pods", "--no-headers"]).stdout)
            .lines()
            .filter(|l| l.contains("Running"))
            .count()
            == 2
    });
    let tokens = std::fs::read_to_string(up.dir.path().join("tokens.csv")).unwrap();
    for line in tokens.lines().filter(|l| l.contains("system:kube-")) {
        assert!(
            !line.contains("system:masters"),
            "component in system:masters: {line}"
        );
    }
    for component in ["system:kube-scheduler", "system:kube-controller-manager"] {
        let who = format!("--as={component}");
        assert_eq!(
            can_i(&up, &["create", "clusterrolebindings", &who]),
            "no",
            "{component}"
        );
    }
    assert_eq!(
        can_i(
            &up,
            &["list", "secrets", "-A", "--as=system:kube-scheduler"]
        ),
        "no"
    );

    // Bootstrap policy, as kube's.
    let roles = up.ok(&["get", "clusterroles"]);
    assert!(
        roles.starts_with("NAME") && roles.contains("CREATED AT"),
        "{roles}"
    );
    for r in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:kube-scheduler",
        "system:kube-controller-manager",
        "system:node-proxier",
    ] {
        assert!(
            roles
                .lines()
                .any(|l| l.split_whitespace().next() == Some(r)),
            "{r} in {roles}"
        );
    }
    assert_eq!(
        up.ok(&[
            "auth",
            "can-i",
            "--list",
            "--as=system:serviceaccount:default:default"
        ]),
        SA_CAN_I_LIST
    );

    // Default deny: a user nobody bound may do nothing with resources.
    refused(&up, &["get", "pods", "--as=jane"], "User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"");
    // `view` in default: reads, but no Secrets and no writes.
    up.ok(&[
        "create",
        "rolebinding",
        "jane-view",
        "--clusterrole=view",
        "--user=jane",
    ]);
    let wide = up.ok(&["get", "rolebinding", "jane-view", "-o", "wide"]);
    assert!(
        wide.contains("ClusterRole/view") && wide.contains("jane"),
        "{wide}"
    );
    assert!(up.ok(&["get", "pods", "--as=jane"]).contains("web-"));
    refused(
        &up,
        &["get", "secrets", "--as=jane"],
        "cannot list resource \"secrets\"",
    );
    refused(
        &up,
        &["create", "configmap", "x", "--as=jane"],
        "cannot create resource \"configmaps\"",
    );
    refused(&up, &["delete", "pod", "--all", "--as=jane"], "Forbidden");
    refused(
        &up,
        &["get", "pods", "-n", "kube-system", "--as=jane"],
        "in the namespace \"kube-system\"",
    );
    refused(
        &up,
        &["get", "--raw", "/metrics", "--as=jane"],
        "cannot get path \"/metrics\"",
    );
    assert!(up
        .ok(&[
            "get",
            "--raw",
            "/metrics",
            "--as=jane",
            "--as-group=system:monitoring"
        ])
        .contains("# TYPE"));
    // A binding's role is fixed.
    refused(
        &up,
        &[
            "patch",
            "rolebinding",
            "jane-view",
            "--type=merge",
            "-p",
            r#"{"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"edit"}}"#,
        ],
        "cannot change roleRef",
    );

    // Escalation: an admin of `team` may grant what they hold there, and nothing more.
    up.ok(&["create", "namespace", "team"]);
    up.ok(&[
        "create",
        "rolebinding",
        "jane-admin",
        "--clusterrole=admin",
        "--user=jane",
        "-n",
        "team",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
        "-n",
        "team",
        "--as=jane",
    ]);
    up.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
        "-n",
        "team",
        "--as=jane",
    ]);
    refused(
        &up,
        &[
            "create",
            "rolebinding",
            "esc",
            "--clusterrole=cluster-admin",
            "--user=jane",
            "-n",
            "team",
            "--as=jane",
        ],
        "is attempting to grant RBAC permissions not currently held",
    );
    refused(
        &up,
        &[
            "create",
            "role",
            "nodes",
            "--verb=*",
            "--resource=nodes",
            "-n",
            "team",
            "--as=jane",
        ],
        r#"{APIGroups:[""], Resources:["nodes"], Verbs:["*"]}"#,
    );
    refused(
        &up,
        &[
            "create",
            "clusterrolebinding",
            "mine",
            "--clusterrole=view",
            "--user=jane",
            "--as=jane",
        ],
        "is forbidden",
    );
    // ... unless they may `bind` the role.
    up.ok(&[
        "create",
        "clusterrole",
        "bind-edit",
        "--verb=bind",
        "--resource=clusterroles",
        "--resource-name=edit",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "jane-bind",
        "--clusterrole=bind-edit",
        "--user=jane",
        "-n",
        "team",
    ]);
    refused(
        &up,
        &[
            "create",
            "rolebinding",
            "esc",
            "--clusterrole=cluster-admin",
            "--user=jane",
            "-n",
            "team",
            "--as=jane",
        ],
        "not currently held",
    );
    up.ok(&[
        "create",
        "rolebinding",
        "bob-edit",
        "--clusterrole=edit",
        "--user=bob",
        "-n",
        "team",
        "--as=jane",
    ]);
    assert_eq!(
        can_i(&up, &["create", "secrets", "-n", "team", "--as=bob"]),
        "yes"
    );
    assert_eq!(
        can_i(&up, &["escalate", "roles", "-n", "team", "--as=jane"]),
        "no"
    );

    // Aggregation: a ClusterRole labelled for `view` adds its rules to view, admin and edit.
    let widgets = up.dir.path().join("widgets.yaml");
    std::fs::write(&widgets, "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: widgets\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  resourceNames: [widget]\n  verbs: [get]\n").unwrap();
    up.ok(&["create", "-f", widgets.to_str().unwrap()]);
    up.ok(&[
        "label",
        "clusterrole",
        "widgets",
        "rbac.authorization.k8s.io/aggregate-to-view=true",
    ]);
    up.eventually("view aggregates widgets", 20, |u| {
        can_i(u, &["get", "secret/widget", "--as=jane"]) == "yes"
    });
    assert_eq!(
        can_i(&up, &["get", "secret/widget", "-n", "team", "--as=bob"]),
        "yes"
    );
    up.ok(&["delete", "clusterrole", "widgets"]);
    up.eventually("view drops widgets", 20, |u| {
        can_i(u, &["get", "secret/widget", "--as=jane"]) == "no"
    });
    // Only who holds everything may write an aggregated role.
    let agg = up.dir.path().join("agg.yaml");
    std::fs::write(&agg, "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: mine\naggregationRule:\n  clusterRoleSelectors:\n  - matchLabels:\n      x: z\n").unwrap();
    up.ok(&[
        "create",
        "clusterrolebinding",
        "jane-cr",
        "--clusterrole=cluster-admin",
        "--user=carol",
    ]);
    up.ok(&[
        "create",
        "clusterrole",
        "cr-writer",
        "--verb=create",
        "--resource=clusterroles",
    ]);
    up.ok(&[
        "create",
        "clusterrolebinding",
        "dave-cr",
        "--clusterrole=cr-writer",
        "--user=dave",
    ]);
    refused(
        &up,
        &["create", "-f", agg.to_str().unwrap(), "--as=dave"],
        "must have cluster-admin privileges to use the aggregationRule",
    );
    up.ok(&["create", "-f", agg.to_str().unwrap(), "--as=carol"]);

    // Validation as kube's.
    let bad = up.dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: bad\nrules:\n- apiGroups: [\"\"]\n  resources: [pods]\n- verbs: [get]\n  nonResourceURLs: [/x]\n").unwrap();
    let out = up.run(&["create", "-f", bad.to_str().unwrap()]);
    let t = text(&out);
    assert!(
        t.contains("rules[0].verbs: Required value: verbs must contain at least one value"),
        "{t}"
    );
    assert!(t.contains("rules[1].nonResourceURLs: Invalid value: []string{\"/x\"}: namespaced rules cannot apply to non-resource URLs"), "{t}");
    refused(
        &up,
        &[
            "create",
            "rolebinding",
            "x",
            "--role=r",
            "--group=g",
            "-n",
            "team",
            "--dry-run=server",
            "-o",
            "yaml",
            "--as=nobody",
        ],
        "is forbidden",
    );

    // `kubectl auth reconcile`: creates, then adds what is missing.
    let policy = up.dir.path().join("policy.yaml");
    std::fs::write(&policy, "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: rec\n  namespace: team\nrules:\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: rec\n  namespace: team\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: rec\nsubjects:\n- kind: User\n  name: erin\n  apiGroup: rbac.authorization.k8s.io\n").unwrap();
    let out = up.ok(&["auth", "reconcile", "-f", policy.to_str().unwrap()]);
    assert!(
        out.contains("role.rbac.authorization.k8s.io/rec")
            && out.contains("rolebinding.rbac.authorization.k8s.io/rec"),
        "{out}"
    );
    assert_eq!(
        can_i(&up, &["get", "configmaps", "-n", "team", "--as=erin"]),
        "yes"
    );
    assert_eq!(can_i(&up, &["get", "configmaps", "--as=erin"]), "no");
    up.ok(&["auth", "reconcile", "-f", policy.to_str().unwrap()]);
}

/// ServiceAccounts: a `default` one in every namespace, `kubectl create token` (a JWT the
/// API server signs), the token authenticated as the ServiceAccount with exactly its RBAC
/// rights, and no longer once the ServiceAccount or the pod it is bound to is gone.
#[test]
fn service_account_tokens_carry_their_account_and_die_with_it() {
    let up = SkiffUp::start(1);
    up.ok(&["create", "namespace", "apps"]);
    up.eventually("a default ServiceAccount in the new namespace", 20, |u| {
        u.run(&["get", "serviceaccount", "default", "-n", "apps"])
            .status
            .success()
    });
    up.ok(&["delete", "serviceaccount", "default", "-n", "apps"]);
    up.eventually("the default ServiceAccount back", 20, |u| {
        u.run(&["get", "serviceaccount", "default", "-n", "apps"])
            .status
            .success()
    });
    let listed = up.ok(&["get", "sa", "-n", "apps"]);
    assert!(
        listed.starts_with("NAME") && listed.contains("SECRETS"),
        "{listed}"
    );

    up.ok(&["create", "serviceaccount", "robot", "-n", "apps"]);
    let token = up
        .ok(&["create", "token", "robot", "-n", "apps"])
        .trim()
        .to_string();
    assert_eq!(token.matches('.').count(), 2, "a JWT: {token}");
    let as_robot = |args: &[&str]| {
        let mut all = vec!["--token", token.as_str()];
        all.extend_from_slice(args);
        up.run(&all)
    };
    let me = text(&as_robot(&["auth", "whoami"]));
    assert!(
        me.contains("system:serviceaccount:apps:robot")
            && me.contains("system:serviceaccounts:apps")
            && me.contains("system:authenticated"),
        "{me}"
    );
    // Exactly its rights: nothing, then what a binding to its ServiceAccount subject grants.
    let out = as_robot(&["get", "pods", "-n", "apps"]);
    assert!(
        !out.status.success() && text(&out).contains("cannot list resource \"pods\""),
        "{}",
        text(&out)
    );
    up.ok(&[
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=apps:robot",
        "-n",
        "apps",
    ]);
    assert!(as_robot(&["get", "pods", "-n", "apps"]).status.success());
    assert!(!as_robot(&["get", "pods", "-n", "default"]).status.success());
    assert!(!as_robot(&["get", "secrets", "-n", "apps"]).status.success());
    // A tampered token is nobody.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let out = up.run(&["--token", &forged, "get", "pods", "-n", "apps"]);
    assert!(text(&out).contains("Unauthorized"), "{}", text(&out));

    // Bound to a pod running as that account: valid while the pod is.
    up.ok(&[
        "run",
        "p",
        "-n",
        "apps",
        "--image=busybox",
        "--overrides",
        r#"{"spec": {"serviceAccountName": "robot"}}"#,
        "--",
        "sleep",
        "3600",
    ]);
    // A pod running as another account cannot carry robot's token (kube: 400).
    up.ok(&[
        "run",
        "q",
        "-n",
        "apps",
        "--image=busybox",
        "--",
        "sleep",
        "3600",
    ]);
    refused(
        &up,
        &[
            "create",
            "token",
            "robot",
            "-n",
            "apps",
            "--bound-object-kind=Pod",
            "--bound-object-name=q",
        ],
        "cannot bind token for serviceaccount \"robot\" to pod running with different serviceaccount name",
    );
    let bound = up
        .ok(&[
            "create",
            "token",
            "robot",
            "-n",
            "apps",
            "--bound-object-kind=Pod",
            "--bound-object-name=p",
        ])
        .trim()
        .to_string();
    assert!(up
        .run(&["--token", &bound, "get", "pods", "-n", "apps"])
        .status
        .success());
    up.ok(&[
        "delete",
        "pod",
        "p",
        "-n",
        "apps",
        "--grace-period=0",
        "--force",
    ]);
    up.eventually("the pod-bound token refused", 20, |u| {
        text(&u.run(&["--token", &bound, "get", "pods", "-n", "apps"])).contains("Unauthorized")
    });
    refused(
        &up,
        &[
            "create",
            "token",
            "robot",
            "-n",
            "apps",
            "--bound-object-kind=Pod",
            "--bound-object-name=nope",
        ],
        "not found",
    );
    refused(
        &up,
        &["create", "token", "robot", "-n", "apps", "--duration=5m"],
        "may not specify a duration less than 10 minutes",
    );
    refused(
        &up,
        &["create", "token", "nobody", "-n", "apps"],
        "serviceaccounts \"nobody\" not found",
    );

    // Gone with its ServiceAccount.
    up.ok(&["delete", "serviceaccount", "robot", "-n", "apps"]);
    assert!(text(&as_robot(&["get", "pods", "-n", "apps"])).contains("Unauthorized"));
    // The signing key is the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(up.dir.path().join("sa-signing.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
