//! NATS identities: with the config `skiff nats-config` writes, each component has its own
//! NATS user; a kubelet may publish only requests made as its own node and subscribe only to
//! its own inbox and node subjects, and only the API server subscribes to request subjects.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use skiff::client::{ApiClient, ClientOptions};

use common::*;

/// Server errors a connection was sent (permission violations arrive this way).
async fn connect_as(
    url: &str,
    user: &str,
    password: &str,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    connect_with(url, user, password, None).await
}

/// [`connect_as`] over TLS, verifying the server against `ca`.
async fn connect_as_tls(
    url: &str,
    user: &str,
    password: &str,
    ca: &std::path::Path,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    connect_with(url, user, password, Some(ca)).await
}

async fn connect_with(
    url: &str,
    user: &str,
    password: &str,
    ca: Option<&std::path::Path>,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let mut options = async_nats::ConnectOptions::new();
    if let Some(ca) = ca {
        options = options
            .add_root_certificates(ca.to_path_buf())
            .require_tls(true);
    }
    let client = options
        .user_and_password(user.into(), password.into())
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .expect("connects with its own user");
    (client, errors)
}

async fn violation(errors: &Arc<Mutex<Vec<String>>>, what: &str) -> String {
    wait_for(Duration::from_secs(5), what, || {
        let errors = errors.clone();
        async move {
            let mut e = errors.lock().unwrap();
            (!e.is_empty()).then(|| e.remove(0))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_is_refused_when_it_publishes_as_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    let output = std::process::Command::new(skiff_bin())
        .args(["nats-config", "--node", "n1=pw-n1", "--node", "n2=pw-n2"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    std::fs::write(&conf, &output.stdout).unwrap();
    let env = [
        ("SKIFF_NATS_APISERVER_PASSWORD", "pw-api"),
        ("SKIFF_NATS_SCHEDULER_PASSWORD", "pw-s"),
        ("SKIFF_NATS_CONTROLLER_MANAGER_PASSWORD", "pw-cm"),
        ("SKIFF_NATS_TRACE_PASSWORD", "pw-t"),
    ];
    let nats = NatsServer::start_with_env(&["-c", conf.to_str().unwrap()], &env);
    let url = nats.url();

    // Without its user the API server cannot even connect; with it, it serves.
    let api = ApiProcess::start(
        &url,
        &dir.path().join("api"),
        &["--nats-user", "apiserver", "--nats-password", "pw-api"],
    );

    // Node n1, with its own NATS user and token, works end to end.
    let mut options = ClientOptions::new(&url, "system:node:n1", "node1-token");
    options.nats_user = Some(("system:node:n1".into(), "pw-n1".into()));
    let n1 = wait_for(Duration::from_secs(20), "the API server answers n1", || {
        let options = options.clone();
        async move {
            let c = ApiClient::connect(options).await.ok()?;
            c.api("", "nodes", None)
                .create(&json!({"metadata": {"name": "n1"}}))
                .await
                .ok()?;
            Some(c)
        }
    })
    .await;
    assert_eq!(
        n1.api("", "nodes", None).get("n1").await.unwrap()["metadata"]["name"],
        "n1"
    );

    // The same NATS user publishing a request as n2 (even with n2's token) is refused by
    // nats-server, and the API server never sees it.
    let (raw, errors) = connect_as(&url, "system:node:n1", "pw-n1").await;
    let (api_side, _) = connect_as(&url, "apiserver", "pw-api").await;
    let mut spy = api_side
        .subscribe("skiff.req.system%3Anode%3An2.>")
        .await
        .unwrap();
    api_side.flush().await.unwrap();
    raw.publish("skiff.req.system%3Anode%3An2.create", "x".into())
        .await
        .unwrap();
    raw.flush().await.unwrap();
    let e = violation(&errors, "a publish violation").await;
    assert!(
        e.to_lowercase().contains("permissions violation") && e.contains("n2"),
        "{e}"
    );
    // Had nats-server passed the refused message on, it would reach the spy before this
    // sentinel, published afterwards by n2's own user (the API server's may publish only to
    // inboxes, node and trace subjects, never a request).
    let (n2_side, _) = connect_as(&url, "system:node:n2", "pw-n2").await;
    n2_side
        .publish("skiff.req.system%3Anode%3An2.sentinel", "s".into())
        .await
        .unwrap();
    n2_side.flush().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut spy))
        .await
        .expect("the sentinel arrives")
        .unwrap();
    assert_eq!(
        first.subject.as_str(),
        "skiff.req.system%3Anode%3An2.sentinel",
        "the request must not reach the API server's subject"
    );

    // Nor may it listen to another node's subjects or to the request subjects.
    for subject in [
        "skiff.node.n2.logs",
        "_INBOX.system%3Anode%3An2.x",
        "skiff.req.>",
    ] {
        let _sub = raw.subscribe(subject).await.unwrap();
        raw.flush().await.unwrap();
        let e = violation(&errors, "a subscribe violation").await;
        assert!(
            e.to_lowercase().contains("permissions violation"),
            "{subject}: {e}"
        );
    }

    // A wrong password is refused outright.
    let refused = async_nats::ConnectOptions::new()
        .user_and_password("system:node:n2".into(), "pw-n1".into())
        .max_reconnects(1)
        .connection_timeout(Duration::from_secs(2));
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::ConnectOptions::connect(refused, url.as_str()),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "wrong password must not connect"
    );
    drop(api);
}

/// Docker compose's way: kubelets share only a bootstrap NATS user that may do nothing but
/// ask the API server (with a node-bootstrap token) for a user of their own, which the API
/// server writes into the config `skiff nats-run` reloads. The issued user is held to its node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrapped_kubelet_gets_a_nats_user_held_to_its_own_node() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    let (port, monitor) = (free_port(), free_port());
    let env = [
        ("SKIFF_NATS_APISERVER_PASSWORD", "pw-api"),
        ("SKIFF_NATS_SCHEDULER_PASSWORD", "pw-s"),
        ("SKIFF_NATS_CONTROLLER_MANAGER_PASSWORD", "pw-cm"),
        ("SKIFF_NATS_TRACE_PASSWORD", "pw-t"),
        ("SKIFF_NATS_KUBELET_BOOTSTRAP_PASSWORD", "pw-boot"),
    ];
    let mut nats = std::process::Command::new(skiff_bin())
        .args(["nats-run", "--config"])
        .arg(&conf)
        .args([
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor.to_string(),
        ])
        .envs(env)
        .env("SKIFF_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    wait_for(
        Duration::from_secs(10),
        "nats-server listening",
        || async move { std::net::TcpStream::connect(("127.0.0.1", port)).ok() },
    )
    .await;
    let api_dir = dir.path().join("api");
    let _api = ApiProcess::start(
        &url,
        &api_dir,
        &[
            "--nats-user",
            "apiserver",
            "--nats-password",
            "pw-api",
            "--nats-config",
            conf.to_str().unwrap(),
        ],
    );
    let root = dir.path().join("kubelet");
    let start_kubelet = || {
        std::process::Command::new(skiff_bin())
            .args([
                "kubelet",
                "--nats-url",
                &url,
                "--nats-user",
                "kubelet-bootstrap",
            ])
            .args([
                "--nats-password",
                "pw-boot",
                "--nats-bootstrap",
                "--token",
                "bootstrap-token",
            ])
            .args([
                "--node-name",
                "b1",
                "--runtime",
                "fake",
                "--metrics-bind",
                "",
                "--root",
            ])
            .arg(&root)
            .env("SKIFF_LOG", "warn")
            .spawn()
            .unwrap()
    };
    let mut kubelet = start_kubelet();

    // The node registers and turns Ready through its own NATS user.
    let kubeconfig = api_dir.join("kubeconfig");
    wait_for(Duration::from_secs(40), "node b1 Ready", || {
        let kubeconfig = kubeconfig.clone();
        async move {
            let out = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args([
                    "get",
                    "node",
                    "b1",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .output()
                .ok()?;
            (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
        }
    })
    .await;
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains(r#"user: "system:node:b1""#), "{text}");
    let issued = std::fs::read_to_string(api_dir.join("nats-nodes.csv")).unwrap();
    let password = issued
        .lines()
        .find_map(|l| l.strip_prefix("b1,"))
        .expect("b1's password kept by the API server")
        .to_string();

    // The issued user may not publish as another node…
    let (own, errors) = connect_as(&url, "system:node:b1", &password).await;
    own.publish("skiff.req.system%3Anode%3Ab2.get", "x".into())
        .await
        .unwrap();
    own.flush().await.unwrap();
    let e = violation(&errors, "b1 publishing as b2").await;
    assert!(e.to_lowercase().contains("permissions violation"), "{e}");
    // …and the bootstrap user may not make requests at all, not even as b1.
    let (boot, errors) = connect_as(&url, "kubelet-bootstrap", "pw-boot").await;
    boot.publish("skiff.req.system%3Anode%3Ab1.get", "x".into())
        .await
        .unwrap();
    boot.flush().await.unwrap();
    let e = violation(&errors, "the bootstrap user making a request").await;
    assert!(e.to_lowercase().contains("permissions violation"), "{e}");

    // A token that is not a node-bootstrap token gets no user.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", "Bearer node1-token");
    let body = rmp_serde::to_vec_named(&skiff::cmd::natsconf::NodeBootstrap {
        node: "b9".into(),
        password: "0123456789abcdef0123".into(),
    })
    .unwrap();
    let boot_inbox = async_nats::ConnectOptions::new()
        .user_and_password("kubelet-bootstrap".into(), "pw-boot".into())
        .custom_inbox_prefix("_INBOX.skiff-bootstrap")
        .connect(url.as_str())
        .await
        .unwrap();
    let reply = boot_inbox
        .request_with_headers("skiff.bootstrap.node", headers, body.into())
        .await
        .unwrap();
    let answer: skiff::cmd::natsconf::BootstrapAnswer =
        rmp_serde::from_slice(&reply.payload).unwrap();
    assert!(answer
        .error
        .is_some_and(|e| e.contains("system:node-bootstrappers")));
    assert!(!std::fs::read_to_string(&conf)
        .unwrap()
        .contains("system:node:b9"));

    // A second bootstrapper claiming the live node's name is refused, and b1 keeps its user.
    let claim = |node: &str, password: &str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Authorization", "Bearer bootstrap-token");
        let body = rmp_serde::to_vec_named(&skiff::cmd::natsconf::NodeBootstrap {
            node: node.into(),
            password: password.into(),
        })
        .unwrap();
        let boot = boot_inbox.clone();
        async move {
            let reply = boot
                .request_with_headers("skiff.bootstrap.node", headers, body.into())
                .await
                .unwrap();
            rmp_serde::from_slice::<skiff::cmd::natsconf::BootstrapAnswer>(&reply.payload).unwrap()
        }
    };
    let answer = claim("b1", "attackerpassword0123").await;
    assert_eq!(answer.code, Some(403), "{answer:?}");
    assert!(
        answer
            .error
            .as_deref()
            .is_some_and(|e| e.contains("registered by another bootstrapper")),
        "{answer:?}"
    );
    let issued_after = std::fs::read_to_string(api_dir.join("nats-nodes.csv")).unwrap();
    assert!(
        issued_after.contains(&format!("b1,{password}")),
        "b1 keeps its password"
    );
    // The kubelet keeps its password (0600) and comes back with it after a restart.
    let kept = root.join("nats-node-b1.password");
    assert_eq!(std::fs::read_to_string(&kept).unwrap().trim(), password);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let _ = kubelet.kill();
    let _ = kubelet.wait();
    let mut kubelet = start_kubelet();
    wait_for(
        Duration::from_secs(30),
        "the restarted kubelet on its own user",
        || async move {
            let connz = monitoring_at(monitor, "/connz?auth=true");
            connz["connections"]
                .as_array()?
                .iter()
                .any(|c| c["authorized_user"] == "system:node:b1")
                .then_some(())
        },
    )
    .await;
    assert!(
        kubelet.try_wait().unwrap().is_none(),
        "the restarted kubelet runs"
    );

    let _ = kubelet.kill();
    let _ = kubelet.wait();
    unsafe { libc::kill(nats.id() as i32, libc::SIGTERM) };
    let _ = nats.wait();
}

/// `skiff up`'s own nats-server is never anonymous and never plain: every link is TLS with
/// the cluster CA's server certificate, every component and node has a user of its own
/// (passwords made on first start, kept 0600 in the data dir), held to its subjects, and
/// there is no monitoring port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_up_runs_nats_with_a_user_per_component_and_none_anonymous() {
    let up = tokio::task::spawn_blocking(|| SkiffUp::start(1))
        .await
        .unwrap();
    // Plain TCP is refused: every link is TLS, verified against the cluster CA.
    let plain = up.nats_url.replace("tls://", "nats://");
    let e = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(plain.as_str())
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    let e = e.to_lowercase();
    assert!(
        e.contains("tls") || e.contains("certificate"),
        "a connection that cannot verify the server is refused: {e}"
    );
    // A server certificate from another CA is not trusted.
    let other = tempfile::tempdir().unwrap();
    let other_ca = skiff::apiserver::certs::Pki::ensure(other.path(), &[]).unwrap();
    let e = async_nats::ConnectOptions::new()
        .add_root_certificates(other_ca.dir.join("ca.crt"))
        .require_tls(true)
        .connection_timeout(Duration::from_secs(5))
        .connect(up.nats_url.as_str())
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.to_lowercase().contains("certificate"),
        "a server another CA does not vouch for is refused: {e}"
    );
    let anonymous = async_nats::ConnectOptions::new()
        .add_root_certificates(up.nats_ca())
        .require_tls(true)
        .connection_timeout(Duration::from_secs(5))
        .connect(up.nats_url.as_str())
        .await;
    let refused = anonymous.map(|_| ()).unwrap_err().to_string();
    assert!(
        refused.to_lowercase().contains("authorization"),
        "an anonymous connection is refused: {refused}"
    );
    let users = std::fs::read_to_string(up.dir.path().join("nats-users.csv")).unwrap();
    let password = |user: &str| {
        users
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{user},")))
            .unwrap_or_else(|| panic!("{user} in {users}"))
            .to_string()
    };
    use std::os::unix::fs::PermissionsExt;
    for f in ["nats-users.csv", "nats-server.conf"] {
        let mode = std::fs::metadata(up.dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let conf = std::fs::read_to_string(up.dir.path().join("nats-server.conf")).unwrap();
    assert!(!conf.contains("http:"), "no monitoring port: {conf}");

    // The node's user may not read others' requests, nor answer into another's inbox.
    let node = "system:node:skiff-node-1";
    let (kubelet, errors) =
        connect_as_tls(&up.nats_url, node, &password(node), &up.nats_ca()).await;
    let _sub = kubelet.subscribe("skiff.req.>").await.unwrap();
    kubelet.flush().await.unwrap();
    let e = violation(&errors, "a kubelet subscribing to every request").await;
    assert!(e.to_lowercase().contains("permissions violation"), "{e}");
    kubelet
        .publish("_INBOX.system%3Akube-scheduler.x", "forged".into())
        .await
        .unwrap();
    kubelet.flush().await.unwrap();
    let e = violation(&errors, "a kubelet publishing into the scheduler's inbox").await;
    assert!(e.to_lowercase().contains("permissions violation"), "{e}");
    // A span the kubelet sends claiming to be the API server's names its real publisher in
    // the timeline; sending on the API server's span subject is refused outright.
    let forged = skiff::trace::SpanRecord {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        name: "ApiServer/create".into(),
        component: "apiserver".into(),
        verb: Some("create".into()),
        resource: Some("configmaps".into()),
        namespace: Some("default".into()),
        object: Some("forged".into()),
        outcome: "201".into(),
        start_unix_nanos: 1,
        duration_nanos: 1,
        ..Default::default()
    };
    let batch = rmp_serde::to_vec_named(&vec![forged]).unwrap();
    kubelet
        .publish(skiff::trace::spans_subject(node), batch.clone().into())
        .await
        .unwrap();
    kubelet
        .publish(skiff::trace::spans_subject("apiserver"), batch.into())
        .await
        .unwrap();
    kubelet.flush().await.unwrap();
    let e = violation(
        &errors,
        "a kubelet publishing on the API server's span subject",
    )
    .await;
    assert!(e.to_lowercase().contains("permissions violation"), "{e}");
    let dir = up.dir.path().to_path_buf();
    let url = up.nats_url.clone();
    let timeline = wait_for(
        Duration::from_secs(20),
        "the forged span in the timeline",
        || {
            let (dir, url) = (dir.clone(), url.clone());
            async move {
                let out = tokio::process::Command::new(skiff_bin())
                    .args([
                        "trace",
                        "configmap/forged",
                        "-n",
                        "default",
                        "--nats-url",
                        &url,
                    ])
                    .arg("--data-dir")
                    .arg(&dir)
                    .output()
                    .await
                    .ok()?;
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                text.contains("ApiServer/create").then_some(text)
            }
        },
    )
    .await;
    assert!(
        timeline.contains("kubelet:skiff-node-1 (claimed apiserver)"),
        "{timeline}"
    );
    // A wrong password is nobody.
    let wrong = async_nats::ConnectOptions::new()
        .add_root_certificates(up.nats_ca())
        .require_tls(true)
        .user_and_password(node.into(), "not-the-password".into())
        .connect(up.nats_url.as_str())
        .await;
    assert!(wrong.is_err(), "a wrong password is refused");
    drop(tokio::task::spawn_blocking(move || drop(up)));
}
