//! Structured logs: `--log-format json` gives one JSON object per line, the API server's
//! request logs carry the trace id, and no token or password ever appears, even at debug
//! level.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_trace_ids_and_no_credentials() {
    let nats = NatsServer::start_with(&["--user", "apiserver", "--pass", "nats-secret-pw"]);
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let child = Command::new(skiff_bin())
        .args(["--log-format", "json", "apiserver", "--nats-url", &url])
        .args([
            "--nats-user",
            "apiserver",
            "--nats-password",
            "nats-secret-pw",
        ])
        .args([
            "--https-bind",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--token-file")
        .arg(&tokens)
        .env("SKIFF_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut options = skiff::client::ClientOptions::new(&url, "admin", "admin-token");
    options.nats_user = Some(("apiserver".into(), "nats-secret-pw".into()));
    let admin = wait_for(Duration::from_secs(20), "the API server answers", || {
        let options = options.clone();
        async move {
            let c = skiff::client::ApiClient::connect(options).await.ok()?;
            c.api("", "namespaces", None).get("default").await.ok()?;
            Some(c)
        }
    })
    .await;
    admin
        .api("", "configmaps", Some("default"))
        .create(&json!({"metadata": {"name": "c"}, "data": {"k": "v"}}))
        .await
        .unwrap();
    // A refused token must not be echoed either.
    let stranger = client_for_with(&url, "admin", "wrong-token-value", "nats-secret-pw").await;
    let refused = stranger
        .api("", "namespaces", None)
        .get("default")
        .await
        .expect_err("a wrong token is refused");
    assert_eq!(
        (refused.code, refused.reason.as_str()),
        (401, "Unauthorized"),
        "{refused:?}"
    );

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 5, "{text}");
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "served"
            && l["fields"]["trace_id"]
                .as_str()
                .is_some_and(|t| t.len() == 32)
            && l["fields"]["resource"] == "configmaps"),
        "a request log with its trace id: {text}"
    );
    for secret in [
        "admin-token",
        "wrong-token-value",
        "nats-secret-pw",
        "node1-token",
    ] {
        assert!(!text.contains(secret), "{secret} logged:\n{text}");
    }
}

async fn client_for_with(
    url: &str,
    user: &str,
    token: &str,
    nats_pw: &str,
) -> skiff::client::ApiClient {
    let mut o = skiff::client::ClientOptions::new(url, user, token);
    o.nats_user = Some(("apiserver".into(), nats_pw.into()));
    skiff::client::ApiClient::connect(o).await.unwrap()
}
