//! OTLP export: with an endpoint configured, the API server's collector POSTs spans as
//! OTLP/HTTP JSON to `<endpoint>/v1/traces` (Jaeger 2.x accepts this on :4318); here a
//! listener in the test plays the endpoint and reads what arrives.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

/// Accepts POSTs, answers 200, and forwards each (path, JSON body).
async fn endpoint(
    listener: tokio::net::TcpListener,
    tx: tokio::sync::mpsc::UnboundedSender<(String, Value)>,
) {
    while let Ok((mut s, _)) = listener.accept().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() < len {
                    continue;
                }
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    .await;
                let _ = tx.send((path, serde_json::from_str(body).unwrap_or(Value::Null)));
                return;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_when_an_endpoint_is_set() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(endpoint(listener, tx));

    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let otlp = format!("http://127.0.0.1:{port}");
    let _api = ApiProcess::start(&nats.url(), dir.path(), &["--otlp-endpoint", &otlp]);
    let admin = admin_when_ready(&nats.url()).await;
    admin
        .api("", "configmaps", Some("default"))
        .create(&json!({"metadata": {"name": "exported"}}))
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut names = Vec::new();
    while !names
        .iter()
        .any(|(n, o): &(String, String)| n == "Store/commit" && o == "exported")
    {
        let (path, body) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("spans exported in time")
            .unwrap();
        assert_eq!(path, "/v1/traces");
        for rs in body["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"][0]["value"]["stringValue"]
                .as_str()
                .unwrap();
            assert!(service.starts_with("skiff-"), "{service}");
            for span in rs["scopeSpans"][0]["spans"].as_array().unwrap() {
                assert_eq!(span["traceId"].as_str().unwrap().len(), 32);
                assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
                let object = span["attributes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["key"] == "k8s.object.name")
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .unwrap_or("")
                    .to_string();
                names.push((span["name"].as_str().unwrap().to_string(), object));
            }
        }
    }
}
