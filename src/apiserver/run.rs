//! The API server process (`skiff apiserver`, and the API server inside `skiff up`): the
//! cluster files it needs (token file, component credentials, PKI, encryption config) made
//! or read, the store opened (embedded, memory or etcd), NATS connected, HTTPS served, node
//! bootstrap answered; then it runs until SIGTERM or SIGINT, stops taking requests, finishes
//! those in flight and drains NATS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::apiserver::certs::{self, Pki};
use crate::apiserver::{self, Authenticator};
use crate::config::{ApiServerConfig, FileConfig};
use crate::process::wait_for_signal;

/// Writes a token file with a fresh admin token when there is none (like k3s' first start).
pub fn ensure_token_file(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        crate::files::create_private_dir(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    write_private(path, &format!("{token},admin,admin,\"system:masters\"\n"))?;
    tracing::info!(path = %path.display(), "wrote a token file with an admin token");
    Ok(())
}

/// The components whose tokens `--credentials-dir` holds: (file stem, user, groups). The
/// scheduler and controller-manager hold their bootstrap roles (`authz::policy`), not
/// `system:masters`.
pub const COMPONENT_CREDENTIALS: [(&str, &str, &str); 3] = [
    ("scheduler", "system:kube-scheduler", ""),
    ("controller-manager", "system:kube-controller-manager", ""),
    (
        "kubelet",
        "system:node-bootstrap",
        apiserver::NODE_BOOTSTRAP_GROUP,
    ),
];

/// Makes sure the token file has a token for each component and writes each to
/// `<dir>/<component>/<component>.token` (0600 in a 0700 directory of its own: compose mounts
/// each directory from its own volume into that component's containers alone).
pub fn write_component_credentials(token_file: &Path, dir: &Path) -> anyhow::Result<()> {
    let users: Vec<(String, &str)> = COMPONENT_CREDENTIALS
        .iter()
        .map(|(_, user, groups)| (user.to_string(), *groups))
        .collect();
    let tokens = ensure_tokens(token_file, &users)?;
    crate::files::private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (stem, user, _) in COMPONENT_CREDENTIALS {
        let own = dir.join(stem);
        crate::files::private_dir(&own).with_context(|| format!("creating {}", own.display()))?;
        write_private(&own.join(format!("{stem}.token")), &tokens[user])?;
    }
    tracing::info!(dir = %dir.display(), "wrote component credentials");
    Ok(())
}

/// Makes sure the token file holds a token for each (user, groups); returns user → token.
pub fn ensure_tokens(
    path: &Path,
    users: &[(String, &str)],
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut tokens = std::collections::HashMap::new();
    let mut out = String::new();
    for line in text.lines() {
        let f: Vec<&str> = line.splitn(4, ',').collect();
        if f.len() >= 3 {
            tokens.insert(f[1].to_string(), f[0].to_string());
            // A component's groups are what this version gives it: a data dir from an
            // earlier one loses the `system:masters` its components used to have.
            if let Some((_, groups)) = users.iter().find(|(u, _)| u == f[1]) {
                out.push_str(&format!("{},{},{},\"{groups}\"\n", f[0], f[1], f[2]));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    for (i, (user, groups)) in users.iter().enumerate() {
        if !tokens.contains_key(user) {
            let token = uuid::Uuid::new_v4().simple().to_string();
            out.push_str(&format!("{token},{user},{},\"{groups}\"\n", 100 + i));
            tokens.insert(user.clone(), token);
        }
    }
    write_private(path, &out)?;
    Ok(tokens)
}

/// The EncryptionConfiguration the API server runs with: the one configured, else (for the
/// embedded store) `<data-dir>/encryption-config.yaml`, written with a fresh key on first
/// start, so Secrets never reach the disk in the clear.
pub(crate) fn encryption_config(config: &ApiServerConfig) -> anyhow::Result<Option<PathBuf>> {
    if let Some(p) = &config.encryption_provider_config {
        return Ok(Some(p.clone()));
    }
    if config.store == "memory" {
        return Ok(None);
    }
    let path = config.data_dir.join("encryption-config.yaml");
    if !path.exists() {
        crate::files::create_private_dir(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let text = apiserver::store_encryption_config().context("generating an encryption key")?;
        write_private(&path, &text)?;
        tracing::info!(path = %path.display(), "wrote an encryption config: Secrets are encrypted at rest");
    }
    Ok(Some(path))
}

/// Writes a file only its owner can read (kubeconfigs hold credentials).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::files::write_private(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs the API server until SIGTERM or SIGINT.
pub fn run(config: FileConfig) -> anyhow::Result<()> {
    run_with(config, |_| async { anyhow::Ok(Extras::default()) })
}

/// What `skiff up` starts next to the API server: kept alive until shutdown, then stopped.
#[derive(Default)]
pub struct Extras {
    /// Actors and handles to keep alive.
    pub keep: Vec<Box<dyn std::any::Any>>,
    /// Run on shutdown before the API server stops (e.g. stop every pod process).
    pub on_shutdown: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>,
}

/// Runs the API server and, once it serves, whatever `extras` starts in the same System.
pub fn run_with<F, Fut>(tree: FileConfig, extras: F) -> anyhow::Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Extras>>,
{
    let FileConfig {
        nats: bus,
        apiserver: config,
        etcd,
        ..
    } = tree;
    let token_file = config.token_file();
    if config.token_file.is_none() {
        ensure_token_file(&token_file)?;
    }
    if let Some(dir) = &config.credentials_dir {
        write_component_credentials(&token_file, dir)?;
    }
    let authenticator = Authenticator::from_file(&token_file)?;
    let options = apiserver::ApiServerOptions {
        // etcd keeps the objects; the data dir still holds the keys (tokens, signing key).
        data_dir: (config.store != "memory").then(|| config.data_dir.clone()),
        etcd: (config.store == "etcd").then(|| apiserver::EtcdOptions {
            endpoints: etcd.servers.clone(),
            ca_file: etcd.cafile.clone(),
            cert_file: etcd.certfile.clone(),
            key_file: etcd.keyfile.clone(),
            compaction_interval: Duration::from_secs(etcd.compaction_interval_seconds),
        }),
        authenticator,
        history: config.history,
        bookmark_interval: Duration::from_secs(config.bookmark_interval_seconds),
        max_requests_inflight: config.max_requests_inflight,
        max_queue_wait: Duration::from_secs(config.max_queue_wait_seconds),
        event_ttl: Duration::from_secs(config.event_ttl_seconds.max(1)),
        audit_log: config.audit_log_path.clone(),
        encryption_config: encryption_config(&config)?,
        checkpoint_bytes: config.checkpoint_bytes,
        admission: apiserver::kinds::Admission {
            toleration_seconds: i64::try_from(config.default_toleration_seconds)
                .unwrap_or(i64::MAX),
            service_account: !disabled_plugins(&config.disable_admission_plugins)?,
        },
        ..Default::default()
    };
    let https = if config.https_bind.is_empty() {
        None
    } else {
        let pki =
            Pki::ensure(&config.data_dir, &config.tls_sans).context("preparing certificates")?;
        // The controller-manager publishes the CA to pods (`kube-root-ca.crt`): it finds it
        // beside its token.
        if let Some(dir) = &config.credentials_dir {
            let to = dir.join("controller-manager").join("ca.crt");
            std::fs::copy(pki.dir.join("ca.crt"), &to)
                .with_context(|| format!("writing {}", to.display()))?;
        }
        let bind: std::net::SocketAddr = config.https_bind.parse()?;
        Some(apiserver::http::HttpOptions {
            bind,
            pki,
            workers: 2,
        })
    };
    let admin = options
        .authenticator
        .token_for_group(apiserver::ADMIN_GROUP)
        .map(|(t, _)| t.to_string());
    let system = actix::System::new();
    system.block_on(async move {
        let mut connect = async_nats::ConnectOptions::new()
            .name("skiff apiserver")
            .custom_inbox_prefix(crate::api::subject::APISERVER_INBOX)
            .event_callback(crate::client::nats_events("apiserver".into()));
        if let (Some(u), Some(p)) = (&config.nats_user, &config.nats_password) {
            connect = connect.user_and_password(u.clone(), p.clone());
        }
        if let Some(ca) = &bus.ca_file {
            connect = connect.add_root_certificates(ca.clone()).require_tls(true);
        }
        // On the intake's thread: the socket is read and written off the request path.
        let nats = apiserver::intake::connect(connect.clone(), bus.url.clone())
            .await
            .with_context(|| format!("connecting to NATS at {}", bus.url))?;
        let mut options = options;
        let bootstrap_auth = Arc::new(options.authenticator.clone());
        options.node_nats = Some(nats.clone());
        // Spans on a connection of their own, read and written on the trace thread.
        match crate::trace::connect(connect.name("skiff apiserver spans"), bus.url.clone()).await {
            Ok(spans) => options.trace_nats = Some(spans),
            Err(e) => tracing::warn!(error = %e, "no connection of its own for spans: they share the API server's"),
        }
        options.otlp_endpoint = config.otlp_endpoint.clone();
        let api = apiserver::start(options).await?;
        if let Some(path) = &config.nats_config {
            let handle = api.clone();
            actix::spawn(crate::cmd::natsconf::serve_bootstrap(
                nats.clone(),
                bootstrap_auth,
                config.data_dir.clone(),
                path.clone(),
                move |node: &str| handle.exists("", "nodes", None, node),
            ));
        }
        let http = match https {
            None => None,
            Some(opts) => {
                let ca = opts.pki.ca_cert.clone();
                let (server, addr) = apiserver::http::serve_https(api.clone(), opts)
                    .context("starting the HTTPS API")?;
                let url = config
                    .server_url
                    .clone()
                    .unwrap_or_else(|| format!("https://127.0.0.1:{}", addr.port()));
                let path = config.data_dir.join("kubeconfig");
                let text = certs::kubeconfig(&url, &ca, admin.as_deref(), None);
                write_private(&path, &text)?;
                tracing::info!(%addr, kubeconfig = %path.display(), "Kubernetes API (HTTPS) ready");
                let handle = server.handle();
                actix::spawn(server);
                Some(handle)
            }
        };
        let bridge = apiserver::serve_nats(api, nats)
            .await
            .context("subscribing the request subjects")?;
        tracing::info!(nats = %bus.url, store = %config.store, data_dir = %config.data_dir.display(), "skiff apiserver ready");
        let extras = extras(bus.url.clone()).await?;
        wait_for_signal().await;
        for f in extras.on_shutdown {
            f.await;
        }
        drop(extras.keep);
        tracing::info!("shutting down: finishing in-flight requests");
        if let Some(h) = http {
            h.stop(true).await;
        }
        bridge
            .send(apiserver::Shutdown {
                grace: Duration::from_secs(config.shutdown_grace_seconds),
            })
            .await
            .ok();
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// Whether `--disable-admission-plugins` turns the ServiceAccount plugin off; any other
/// name is refused (the rest of Skiff's admission is not optional).
fn disabled_plugins(names: &[String]) -> anyhow::Result<bool> {
    let mut service_account = false;
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match name {
            "ServiceAccount" => service_account = true,
            other => anyhow::bail!(
                "--disable-admission-plugins: {other:?} cannot be disabled (only \"ServiceAccount\" can)"
            ),
        }
    }
    Ok(service_account)
}
