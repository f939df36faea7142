//! `skiff nats-config`: the nats-server configuration that gives each component its own NATS
//! user and subject permissions. Only the API server may subscribe to request subjects; every
//! other component may publish only requests made under its own identity and subscribe only
//! to its own inbox (and a kubelet to its own node subjects). `deploy/nats/nats.conf` is this
//! command's output for docker compose (`--shared-kubelet`); bare hosts generate one with a
//! user per node (`--node n1=PASSWORD`).
//!
//! With `--bootstrap`, identical kubelet replicas get a user each at run time: they connect as
//! `kubelet-bootstrap`, which may only ask the API server for a node user on
//! [`BOOTSTRAP_SUBJECT`]; the API server (holding a valid node-bootstrap token) adds
//! `system:node:<name>` to this config and `skiff nats-run` has nats-server reload it. This is
//! what docker compose runs (`deploy/nats/nats.conf` is the starting file).
//!
//! Component passwords are environment references (`$SKIFF_NATS_<COMPONENT>_PASSWORD`),
//! resolved by nats-server when it starts, so the file holds no secret.

use clap::Args as ClapArgs;

use crate::api::subject::{self, APISERVER_INBOX, REQUEST_WILDCARD};
use crate::cmd::trace::TRACE_INBOX;
use crate::trace::{spans_subject, QUERY_SUBJECT, SPANS_WILDCARD};

/// Flags of `skiff nats-config`.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// A kubelet user for one node, `NAME=PASSWORD` (repeatable): it may act only as
    /// `system:node:NAME`.
    #[arg(long = "node", value_name = "NAME=PASSWORD")]
    pub nodes: Vec<String>,
    /// Add one `kubelet` user shared by identical kubelet replicas: it may publish requests
    /// under any identity (the API server still holds each to the node its token and identity
    /// name) and subscribe to any inbox and node subject. Prefer `--bootstrap`.
    #[arg(long)]
    pub shared_kubelet: bool,
    /// Add the `kubelet-bootstrap` user, which may only ask for a node user of its own.
    #[arg(long)]
    pub bootstrap: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The routes of one nats-server of a cluster (`skiff nats-config` prints the block,
/// `skiff nats-run` keeps it in `cluster.conf` beside its config).
#[derive(Debug, Clone, ClapArgs)]
pub struct ClusterArgs {
    /// The other servers of a NATS cluster (`host` or `host:port`, comma-separated; this
    /// server's own name may be in the list): a `cluster` block with these routes.
    #[arg(long = "routes", env = crate::config::env::NATS_ROUTES, value_delimiter = ',')]
    pub routes: Vec<String>,
    /// The cluster's name (the same on every server).
    #[arg(long, env = crate::config::env::NATS_CLUSTER_NAME, default_value = "skiff")]
    pub cluster_name: String,
    /// The port routes connect to.
    #[arg(long, default_value_t = 6222)]
    pub cluster_port: u16,
    /// The password routes log in with (the same on every server; required with
    /// `--routes`; must be letters and digits).
    #[arg(long, env = crate::config::env::NATS_ROUTE_PASSWORD, hide_env_values = true)]
    pub route_password: Option<String>,
}

impl ClusterArgs {
    /// The `cluster` block, or nothing without `--routes`.
    pub fn block(&self) -> anyhow::Result<Option<String>> {
        use anyhow::Context as _;
        if self.routes.is_empty() {
            return Ok(None);
        }
        let password = self
            .route_password
            .as_deref()
            .filter(|p| p.len() >= 16 && p.bytes().all(|b| b.is_ascii_alphanumeric()))
            .context("--routes needs --route-password (or SKIFF_NATS_ROUTE_PASSWORD): 16 or more letters and digits")?;
        Ok(Some(cluster_block(
            &self.cluster_name,
            self.cluster_port,
            &self.routes,
            password,
        )))
    }
}

/// The largest message nats-server takes (its default is 1 MB): a LIST page is as large as
/// this allows, so a LIST of 100,000 pods is ~20 messages, not ~170. Every nats-server Skiff
/// configures (compose, `skiff up`, the scale benchmark) uses it.
pub const MAX_PAYLOAD: &str = "8MB";

/// Where a bootstrapping kubelet asks the API server for its own NATS user.
pub const BOOTSTRAP_SUBJECT: &str = "skiff.bootstrap.node";
/// The inbox prefix of those requests' answers.
pub const BOOTSTRAP_INBOX: &str = "_INBOX.skiff-bootstrap";
/// The user bootstrapping kubelets share.
pub const BOOTSTRAP_USER: &str = "kubelet-bootstrap";

/// One NATS user: name, password (literal or `$ENV`), publish and subscribe allow lists.
struct User {
    name: String,
    password: String,
    publish: Vec<String>,
    subscribe: Vec<String>,
}

/// The environment variable holding a component's NATS password.
pub fn password_env(component: &str) -> String {
    use crate::config::env::{NATS_PASSWORD_PREFIX, NATS_PASSWORD_SUFFIX};
    format!(
        "{NATS_PASSWORD_PREFIX}{}{NATS_PASSWORD_SUFFIX}",
        component.to_ascii_uppercase().replace('-', "_")
    )
}

fn component(name: &str, identity: &str) -> User {
    User {
        name: name.into(),
        password: format!("${}", password_env(name)),
        publish: vec![
            format!("skiff.req.{}.>", subject::escape(identity)),
            spans_subject(identity),
        ],
        subscribe: vec![format!("{}.>", subject::inbox_prefix(identity))],
    }
}

/// A kubelet user held to one node.
fn node(name: &str, password: &str) -> User {
    let identity = format!("system:node:{name}");
    User {
        name: identity.clone(),
        password: password.into(),
        publish: vec![
            format!("skiff.req.{}.>", subject::escape(&identity)),
            format!("{APISERVER_INBOX}.>"),
            spans_subject(&identity),
        ],
        subscribe: vec![
            format!("{}.>", subject::inbox_prefix(&identity)),
            subject::node(name, ">"),
        ],
    }
}

/// Renders the configuration.
pub fn render(nodes: &[(String, String)], shared_kubelet: bool, bootstrap: bool) -> String {
    format_config(&users(nodes, shared_kubelet, bootstrap), true)
}

/// The configuration `skiff up` runs its own nats-server with: the same users and subject
/// permissions, every password written out (`passwords`: component user → password; node
/// users carry theirs), TLS with `tls` (certificate and key files: every client must use
/// TLS), no monitoring port, and no listen address (`skiff up` passes loopback and its port
/// on the command line).
pub fn render_local(
    passwords: &std::collections::BTreeMap<String, String>,
    nodes: &[(String, String)],
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> String {
    let mut all = users(nodes, false, false);
    for u in &mut all {
        if let Some(p) = passwords.get(&u.name) {
            u.password = p.clone();
        }
    }
    let mut out = format_config(&all, false);
    if let Some((cert, key)) = tls {
        out.push_str(&format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  timeout: 5\n}}\n",
            cert.display().to_string(),
            key.display().to_string()
        ));
    }
    out
}

/// Every user of a configuration.
fn users(nodes: &[(String, String)], shared_kubelet: bool, bootstrap: bool) -> Vec<User> {
    let mut users = vec![
        User {
            name: "apiserver".into(),
            password: format!("${}", password_env("apiserver")),
            // Answers and watch events go to callers' inboxes, log requests to nodes, spans
            // and timelines to the trace subjects: nothing else (never a request of anyone's).
            publish: vec![
                "_INBOX.>".into(),
                "skiff.node.>".into(),
                "skiff.trace.>".into(),
            ],
            subscribe: vec![
                REQUEST_WILDCARD.into(),
                format!("{APISERVER_INBOX}.>"),
                "skiff.trace.>".into(),
                format!("{TRACE_INBOX}.>"),
                BOOTSTRAP_SUBJECT.into(),
            ],
        },
        component("scheduler", "system:kube-scheduler"),
        component("controller-manager", "system:kube-controller-manager"),
        // `skiff trace`: reads the spans on the bus and asks the collector for timelines.
        User {
            name: "trace".into(),
            password: format!("${}", password_env("trace")),
            publish: vec![QUERY_SUBJECT.into()],
            subscribe: vec![SPANS_WILDCARD.into(), format!("{TRACE_INBOX}.>")],
        },
    ];
    if shared_kubelet {
        users.push(User {
            name: "kubelet".into(),
            password: format!("${}", password_env("kubelet")),
            publish: vec![
                "skiff.req.*.>".into(),
                format!("{APISERVER_INBOX}.>"),
                format!("{}.*", crate::trace::SPANS_SUBJECT),
            ],
            subscribe: vec!["_INBOX.*.>".into(), "skiff.node.*.>".into()],
        });
    }
    if bootstrap {
        users.push(User {
            name: BOOTSTRAP_USER.into(),
            password: format!("${}", password_env(BOOTSTRAP_USER)),
            publish: vec![BOOTSTRAP_SUBJECT.into()],
            subscribe: vec![format!("{BOOTSTRAP_INBOX}.>")],
        });
    }
    users.extend(nodes.iter().map(|(n, p)| node(n, p)));
    users
}

/// The config text for `users`; `listen` adds the listen and (loopback) monitoring addresses
/// a stand-alone nats-server needs.
fn format_config(users: &[User], listen: bool) -> String {
    // Passwords are quoted as JSON strings; a node name can hold only DNS characters.
    let quoted = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from(
        "# Generated by `skiff nats-config`: one NATS user per component, with subject\n\
         # permissions. Passwords written as $VARIABLES come from nats-server's environment.\n",
    );
    if listen {
        // Monitoring (connz names every client) answers on loopback only.
        out.push_str("listen: \"0.0.0.0:4222\"\nhttp: \"127.0.0.1:8222\"\n");
    }
    out.push_str(&format!(
        "max_payload: {MAX_PAYLOAD}\nauthorization {{\n  users: [\n"
    ));
    for u in users {
        let password = if u.password.starts_with('$') {
            u.password.clone()
        } else {
            format!("{:?}", u.password)
        };
        out.push_str(&format!(
            "    {{user: {:?}, password: {password}, permissions: {{\n      publish: {{allow: [{}]}},\n      subscribe: {{allow: [{}]}}}}}}\n",
            u.name,
            quoted(&u.publish),
            quoted(&u.subscribe),
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// Prints the configuration.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for n in &args.nodes {
        let Some((name, password)) = n.split_once('=') else {
            anyhow::bail!("--node {n:?}: want NAME=PASSWORD");
        };
        if name.is_empty() || password.is_empty() {
            anyhow::bail!("--node {n:?}: want NAME=PASSWORD");
        }
        nodes.push((name.to_string(), password.to_string()));
    }
    print!("{}", render(&nodes, args.shared_kubelet, args.bootstrap));
    if let Some(block) = args.cluster.block()? {
        print!("{block}");
    }
    Ok(())
}

/// A bootstrapping kubelet's request: the node it is, and the password it chose for its own
/// NATS user (the bootstrap subject is readable by the API server alone).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeBootstrap {
    /// Node name (a DNS-1123 subdomain).
    pub node: String,
    /// The password of `system:node:<node>`.
    pub password: String,
}

/// The answer: empty on success.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BootstrapAnswer {
    /// Why it was refused.
    #[serde(default)]
    pub error: Option<String>,
    /// The HTTP-style code of a refusal: 401 (not a node-bootstrap token), 403 (the name is
    /// another bootstrapper's, or the cap is reached), 400 (a malformed request), 500.
    #[serde(default)]
    pub code: Option<u16>,
}

/// The queue group the API servers serve [`BOOTSTRAP_SUBJECT`] in.
const BOOTSTRAP_QUEUE: &str = "skiff-apiserver-bootstrap";

/// How many node users one bootstrap credential may have issued (a leaked credential cannot
/// fill the NATS config).
pub const MAX_BOOTSTRAPPED_NODES: usize = 5_000;

/// Node users the API server has handed out, kept in `<data-dir>/nats-nodes.csv`
/// (`node,password`, mode 0600) and rendered into the nats-server config it maintains.
struct NodeUsers {
    file: std::path::PathBuf,
    config: std::path::PathBuf,
    users: std::collections::BTreeMap<String, String>,
}

impl NodeUsers {
    fn load(data_dir: &std::path::Path, config: &std::path::Path) -> NodeUsers {
        let file = data_dir.join("nats-nodes.csv");
        let mut users = NodeUsers {
            file,
            config: config.to_path_buf(),
            users: Default::default(),
        };
        users.reload();
        users
    }

    /// Reads the users file again: API servers sharing a data directory each issue users,
    /// so the file, read under [`NodeUsers::lock`], is the truth, not this copy.
    fn reload(&mut self) {
        self.users = read_users(&self.file);
    }

    /// Locks the users file against the other API servers on the same volume and reloads
    /// it: a read-modify-write held until the guard drops, off the actor's thread.
    async fn lock(&mut self) -> std::io::Result<std::fs::File> {
        let (lock, file) = (self.file.with_extension("lock"), self.file.clone());
        // Waiting for the lock and reading the file both happen off the actor's thread.
        let (guard, users) = tokio::task::spawn_blocking(move || {
            let guard = crate::files::lock(&lock)?;
            std::io::Result::Ok((guard, read_users(&file)))
        })
        .await
        .map_err(std::io::Error::other)??;
        self.users = users;
        Ok(guard)
    }

    /// Writes both files (each replaced whole, by rename, so nats-server never reads half),
    /// on a blocking thread: the bootstrap service runs on the API server's actor thread.
    async fn save(&self) -> std::io::Result<()> {
        let csv: String = self
            .users
            .iter()
            .map(|(n, p)| format!("{n},{p}\n"))
            .collect();
        let nodes: Vec<(String, String)> = self
            .users
            .iter()
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        let config = render(&nodes, false, true) + &tls_include(&self.config);
        let (file, path) = (self.file.clone(), self.config.clone());
        tokio::task::spawn_blocking(move || {
            write_atomically(&file, &csv)?;
            write_atomically(&path, &config)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// The `node,password` lines of the node users file (none when it is missing).
fn read_users(file: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(','))
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .collect()
}

/// The NATS config and its password file are secrets: owner-only, replaced atomically.
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    crate::files::write_private(path, text.as_bytes())
}

/// Serves [`BOOTSTRAP_SUBJECT`] in the API server: a caller whose token is in
/// `system:node-bootstrappers` gets `system:node:<node>` with the password it chose, written
/// into the nats-server config at `config` (which `skiff nats-run` reloads).
///
/// A node name belongs to the first bootstrapper that claimed it (its password, which the
/// kubelet keeps), as Kubernetes ties a node certificate's name to its requester: another
/// bootstrap of a name whose Node exists is refused (403) and the holder keeps its user; once
/// an admin deletes the Node, the name may be claimed again.
pub async fn serve_bootstrap(
    nats: async_nats::Client,
    auth: std::sync::Arc<crate::apiserver::Authenticator>,
    data_dir: std::path::PathBuf,
    config: std::path::PathBuf,
    node_exists: impl Fn(&str) -> bool,
) {
    use futures::StreamExt;
    let mut users = NodeUsers::load(&data_dir, &config);
    let written = match users.lock().await {
        Ok(_guard) => users.save().await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::warn!(path = %config.display(), error = %e, "cannot write the NATS config");
    }
    // One API server answers each bootstrap, whichever of the replicas NATS picks.
    let mut sub = match nats
        .queue_subscribe(BOOTSTRAP_SUBJECT, BOOTSTRAP_QUEUE.to_string())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot serve node bootstrap");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let token = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(crate::api::subject::HEADER_TOKEN))
            .map(|v| v.as_str().to_string());
        let answer: Result<(), (u16, String)> = async {
            let user = auth
                .authenticate(token.as_deref())
                .map_err(|_| (401, "unknown token".to_string()))?;
            if !user
                .groups
                .iter()
                .any(|g| g == crate::apiserver::NODE_BOOTSTRAP_GROUP)
            {
                return Err((
                    401,
                    format!(
                        "{} is not in {}",
                        user.name,
                        crate::apiserver::NODE_BOOTSTRAP_GROUP
                    ),
                ));
            }
            let req: NodeBootstrap = rmp_serde::from_slice(&msg.payload)
                .map_err(|e| (400, format!("malformed: {e}")))?;
            if !crate::apiserver::validation::is_dns1123_subdomain(&req.node) {
                return Err((400, format!("{:?} is not a valid node name", req.node)));
            }
            if req.password.len() < 16 || !req.password.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err((400, "the password must be 16 or more letters and digits".into()));
            }
            let _guard = users
                .lock()
                .await
                .map_err(|e| (500, format!("locking the NATS users: {e}")))?;
            match users.users.get(&req.node) {
                // The holder, restarted: nothing to change.
                Some(p) if *p == req.password => return Ok(()),
                Some(_) if node_exists(&req.node) => {
                    tracing::warn!(node = %req.node, bootstrapper = %user.name,
                        "refused a bootstrap of a node name another bootstrapper holds");
                    return Err((
                        403,
                        format!(
                            "node name {:?} is registered by another bootstrapper; delete the Node to release it",
                            req.node
                        ),
                    ));
                }
                Some(_) => {}
                None if users.users.len() >= MAX_BOOTSTRAPPED_NODES => {
                    tracing::warn!(node = %req.node, "refused a bootstrap: the cap of bootstrapped nodes is reached");
                    return Err((
                        403,
                        format!("at most {MAX_BOOTSTRAPPED_NODES} nodes may be bootstrapped"),
                    ));
                }
                None => {}
            }
            users.users.insert(req.node.clone(), req.password);
            users
                .save()
                .await
                .map_err(|e| (500, format!("writing the NATS config: {e}")))?;
            tracing::info!(node = %req.node, "node NATS user issued");
            Ok(())
        }
        .await;
        let answer = match answer {
            Ok(()) => BootstrapAnswer::default(),
            Err((code, why)) => BootstrapAnswer {
                error: Some(why),
                code: Some(code),
            },
        };
        if let Ok(bytes) = rmp_serde::to_vec_named(&answer) {
            let _ = nats.publish(reply, bytes.into()).await;
        }
    }
}

/// The file beside a nats-server config that holds its `tls` block.
const TLS_INCLUDE: &str = "tls.conf";

/// The file beside a nats-server config that holds its `cluster` block (routes).
const CLUSTER_INCLUDE: &str = "cluster.conf";

/// The lines including [`TLS_INCLUDE`] and [`CLUSTER_INCLUDE`] when `skiff nats-run` wrote
/// them beside `config`, else nothing: the API server rewrites the config and keeps both.
fn tls_include(config: &std::path::Path) -> String {
    [TLS_INCLUDE, CLUSTER_INCLUDE]
        .iter()
        .filter(|f| config.with_file_name(f).exists())
        .map(|f| format!("include {f:?}\n"))
        .collect()
}

/// The `cluster` block of one of several nats-servers that share a config: every server
/// lists every route (its own is recognised and skipped), and a route must log in as
/// `route` with `password`, so a client that reaches the cluster port cannot pose as a
/// server and skip the users' subject permissions.
fn cluster_block(name: &str, port: u16, routes: &[String], password: &str) -> String {
    let urls: Vec<String> = routes
        .iter()
        .map(|r| {
            let host = if r.contains(':') {
                r.clone()
            } else {
                format!("{r}:{port}")
            };
            format!("{:?}", format!("nats-route://route:{password}@{host}"))
        })
        .collect();
    // `no_advertise`: clients keep the names they were given (which the TLS certificate
    // carries) rather than learn the servers' addresses from gossip.
    format!(
        "cluster {{\n  name: {name:?}\n  listen: \"0.0.0.0:{port}\"\n  no_advertise: true\n  authorization {{\n    user: \"route\"\n    password: {password:?}\n    timeout: 2\n  }}\n  routes: [{}]\n}}\n",
        urls.join(", ")
    )
}

/// Flags of `skiff nats-run`.
#[derive(Debug, Clone, ClapArgs)]
pub struct RunArgs {
    /// The config nats-server runs with; written (with no node users yet) if missing, and
    /// reloaded whenever it changes.
    #[arg(long, env = crate::config::env::NATS_CONFIG)]
    pub config: std::path::PathBuf,
    /// Where nats-server is.
    #[arg(long, default_value = "nats-server")]
    pub nats_server: String,
    /// Serve TLS only, with a CA and server certificate kept in this directory (made on
    /// first start; SANs from `--tls-san`): every client must verify it.
    #[arg(long, env = crate::config::env::NATS_TLS_DIR)]
    pub tls_dir: Option<std::path::PathBuf>,
    /// Names the server certificate carries besides 127.0.0.1, localhost and the host name
    /// (e.g. the compose service name `nats`).
    #[arg(long = "tls-san", env = crate::config::env::NATS_TLS_SANS, value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// Where to publish the CA certificate clients verify the server with (a volume the
    /// other services mount read-only).
    #[arg(long, env = crate::config::env::NATS_CA_OUT)]
    pub ca_out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// More nats-server flags (after `--`).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// `skiff nats-run`: runs nats-server on a config that the API server may rewrite (node users
/// issued at bootstrap) and signals it to reload on every change; passes SIGTERM/SIGINT on
/// and exits with nats-server's status.
pub fn run_nats(args: RunArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    // TLS lives in `tls.conf` beside the config, which the config includes: nats-server
    // cannot reload a config whose TLS came from flags, and the API server, which rewrites
    // the config (node users), keeps the include (see `tls_include`).
    if let Some(dir) = &args.tls_dir {
        let pki = crate::apiserver::certs::Pki::ensure(dir, &args.tls_sans)
            .with_context(|| format!("preparing NATS certificates in {}", dir.display()))?;
        if let Some(out) = &args.ca_out {
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(out, &pki.ca_cert)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        let tls = args.config.with_file_name(TLS_INCLUDE);
        write_atomically(
            &tls,
            &format!(
                "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  timeout: 5\n}}\n",
                pki.dir.join("server.crt").display().to_string(),
                pki.dir.join("server.key").display().to_string()
            ),
        )
        .with_context(|| format!("writing {}", tls.display()))?;
    }
    // Several servers of one cluster may share the config's directory and start together.
    let lock = crate::files::lock(&args.config.with_file_name(".nats-run.lock"))
        .context("locking the NATS config")?;
    if let Some(block) = args.cluster.block()? {
        let cluster = args.config.with_file_name(CLUSTER_INCLUDE);
        write_atomically(&cluster, &block)
            .with_context(|| format!("writing {}", cluster.display()))?;
    }
    let current = std::fs::read_to_string(&args.config).unwrap_or_default();
    let wanted = tls_include(&args.config);
    if current.is_empty() || wanted.lines().any(|l| !current.contains(l)) {
        if let Some(dir) = args.config.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = if current.is_empty() {
            render(&[], false, true)
        } else {
            current
                .lines()
                .filter(|l| !l.starts_with("include "))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        write_atomically(&args.config, &(text + &wanted))
            .with_context(|| format!("writing {}", args.config.display()))?;
    }
    drop(lock);
    let mut child = std::process::Command::new(&args.nats_server)
        .arg("-c")
        .arg(&args.config)
        .args(&args.extra)
        .spawn()
        .with_context(|| format!("starting {}", args.nats_server))?;
    let pid = child.id() as i32;
    static STOP: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
    extern "C" fn on_signal(sig: libc::c_int) {
        STOP.store(sig, std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = modified(&args.config);
    loop {
        if let Some(status) = child.try_wait()? {
            std::process::exit(status.code().unwrap_or(1));
        }
        let sig = STOP.swap(0, std::sync::atomic::Ordering::Relaxed);
        if sig != 0 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, sig) };
        }
        let now = modified(&args.config);
        if now != seen {
            seen = now;
            tracing::info!(config = %args.config.display(), "config changed: reloading nats-server");
            // SAFETY: signalling our own child; SIGHUP makes nats-server reload its config.
            unsafe { libc::kill(pid, libc::SIGHUP) };
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_block_lists_every_route_with_its_login() {
        let block = cluster_block(
            "skiff",
            6222,
            &["nats1".into(), "nats2:7222".into()],
            "pw0123456789abcdef",
        );
        assert!(block.contains("name: \"skiff\""), "{block}");
        assert!(block.contains("listen: \"0.0.0.0:6222\""), "{block}");
        assert!(block.contains("no_advertise: true"), "{block}");
        assert!(
            block.contains("\"nats-route://route:pw0123456789abcdef@nats1:6222\", \"nats-route://route:pw0123456789abcdef@nats2:7222\""),
            "{block}"
        );
        assert!(block.contains("user: \"route\""), "{block}");
    }

    #[test]
    fn the_compose_config_is_this_commands_output() {
        let checked_in = include_str!("../../deploy/nats/nats.conf");
        assert_eq!(
            checked_in,
            render(&[], false, true),
            "regenerate: skiff nats-config --bootstrap > deploy/nats/nats.conf"
        );
    }

    #[test]
    fn a_node_user_is_held_to_its_own_subjects() {
        let text = render(&[("n1.example".into(), "pw".into())], false, false);
        assert!(
            text.contains(r#"user: "system:node:n1.example", password: "pw""#),
            "{text}"
        );
        assert!(
            text.contains(r#""skiff.req.system%3Anode%3An1%2Eexample.>""#),
            "{text}"
        );
        assert!(text.contains(r#""skiff.node.n1%2Eexample.>""#), "{text}");
        assert!(!text.contains("user: \"kubelet\""));
        assert!(!text.contains(BOOTSTRAP_USER));
    }
}
