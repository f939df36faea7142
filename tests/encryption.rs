//! Secrets at rest: a real `skiff apiserver` process with the embedded store encrypts them
//! (aesgcm, its own key written 0600 into the data dir on first start, or the
//! EncryptionConfiguration `--encryption-provider-config` names), reads them back after a
//! restart, and refuses to start on a config it cannot use.

mod common;

use std::path::Path;

use serde_json::json;

use common::*;

/// Whether any file under `dir` holds `needle`.
fn on_disk(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            on_disk(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

/// A value LZ4 cannot shorten, so that a plain copy of it would be found verbatim.
fn incompressible(tag: &str) -> String {
    let mut s = String::from(tag);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ tag.len() as u64;
    while s.len() < 96 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(char::from(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[(x % 62) as usize],
        ));
    }
    s
}

/// A Secret's value as the API server stores it (`stringData` becomes base64 `data`).
fn b64(v: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(v)
}

async fn write_secret(url: &str, name: &str, value: &str) {
    let admin = admin_when_ready(url).await;
    admin
        .api("", "secrets", Some("default"))
        .create(&json!({"metadata": {"name": name}, "stringData": {"v": value}}))
        .await
        .expect("secret created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest_and_read_back_after_a_restart() {
    let nats = NatsServer::start();
    let url = nats.url();

    // The control: with the identity provider the value is on disk as it was written, so
    // the searches below can find what is there.
    let plain_dir = tempfile::tempdir().unwrap();
    let identity = plain_dir.path().join("identity.yaml");
    std::fs::write(&identity, "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n").unwrap();
    let data = plain_dir.path().join("data");
    let mut api = ApiProcess::start(
        &url,
        &data,
        &["--encryption-provider-config", identity.to_str().unwrap()],
    );
    let open = incompressible("open");
    write_secret(&url, "plain", &open).await;
    api.kill9();
    assert!(
        on_disk(&data, b64(&open).as_bytes()),
        "the control finds the plain value"
    );

    // The default: Secrets encrypted with a key of the data dir's own.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut api = ApiProcess::start(&url, &data, &[]);
    let hidden = incompressible("hidden");
    write_secret(&url, "hidden", &hidden).await;
    let cm = incompressible("configmap");
    admin_when_ready(&url)
        .await
        .api("", "configmaps", Some("default"))
        .create(&json!({"metadata": {"name": "c"}, "data": {"v": cm}}))
        .await
        .unwrap();
    api.kill9();
    assert!(
        !on_disk(&data, b64(&hidden).as_bytes()),
        "the Secret's value is not on disk"
    );
    assert!(!on_disk(&data, hidden.as_bytes()), "nor as it was sent");
    assert!(
        on_disk(&data, cm.as_bytes()),
        "ConfigMaps are not encrypted"
    );
    assert!(
        on_disk(&data, b"k8s:enc:aesgcm:v1:key1:"),
        "kube's envelope"
    );
    let config = data.join("encryption-config.yaml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // After a restart the Secret reads as written.
    let mut api = ApiProcess::start(&url, &data, &[]);
    let admin = admin_when_ready(&url).await;
    let got = admin
        .api("", "secrets", Some("default"))
        .get("hidden")
        .await
        .unwrap();
    let v = got["data"]["v"].as_str().unwrap();
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD.decode(v).unwrap(),
        hidden.as_bytes()
    );
    api.kill9();

    // A config naming a provider Skiff does not have stops the start, with a clear line.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - secretbox:\n      keys: []\n").unwrap();
    let out = std::process::Command::new(skiff_bin())
        .args(["apiserver", "--nats-url", &url, "--https-bind"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data)
        .arg("--encryption-provider-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only the aesgcm and identity providers are supported"),
        "{err}"
    );
}
