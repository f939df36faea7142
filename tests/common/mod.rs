//! Test harness: a real nats-server on a free port (killed on drop), an API server started
//! in-process (its own actix System on a thread) or as a real `skiff apiserver` process, and
//! clients with the test's tokens.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod compose;
pub mod proxy;

use skiff::apiserver::{self, ApiServerOptions, Authenticator};
use skiff::client::{ApiClient, ClientOptions};

/// The token file every test cluster uses.
pub const TOKENS: &str = "admin-token,admin,1,\"system:masters\"
node1-token,system:node:n1,2,\"system:nodes\"
node2-token,system:node:n2,3,\"system:nodes\"
node3-token,system:node:n3,4,\"system:nodes\"
scheduler-token,system:kube-scheduler,5
controller-manager-token,system:kube-controller-manager,7
bootstrap-token,system:node-bootstrap,6,\"system:node-bootstrappers\"
";
pub const ADMIN: (&str, &str) = ("admin", "admin-token");

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A nats-server child process, killed on drop.
pub struct NatsServer {
    child: Child,
    pub port: u16,
    /// The HTTP monitoring port (`/connz`, `/varz`).
    pub monitor: u16,
    /// The extra flags and environment it was started with (for a restart).
    extra: Vec<String>,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> NatsServer {
        Self::start_with_env(extra, &[])
    }

    /// A nats-server with extra flags and environment (config files refer to `$VARIABLES`).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> NatsServer {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let (port, monitor) = (free_port(), free_port());
            let child = Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .args(["-m", &monitor.to_string()])
                .args(extra)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                // SKIFF_NATS_LOG=<file> keeps the server's log (slow consumers…) for a look.
                .stderr(match std::env::var_os("SKIFF_NATS_LOG") {
                    Some(p) => std::fs::File::create(p)
                        .map(Stdio::from)
                        .unwrap_or_else(|_| Stdio::null()),
                    None => Stdio::null(),
                })
                .spawn()
                .expect("nats-server on PATH (the test command installs it)");
            let mut server = NatsServer {
                child,
                port,
                monitor,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nats-server did not start")
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id (for its resident memory in /proc).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` of the server.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same ports with the same flags, once it listens.
    pub fn start_again(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.child = Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-m", &self.monitor.to_string()])
                .args(&self.extra)
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server");
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
                if let Ok(Some(_)) = self.child.try_wait() {
                    break; // the port not yet free: try again
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(Instant::now() < deadline, "nats-server did not start again");
        }
    }

    /// A JSON document from the monitoring port, e.g. `/connz?subs=1`.
    pub fn monitoring(&self, path: &str) -> serde_json::Value {
        monitoring_at(self.monitor, path)
    }

    /// Messages nats-server has delivered to the one subscription on `subject` (from
    /// `/connz?subs=detail`).
    pub fn delivered_to(&self, subject: &str) -> u64 {
        let connz = self.monitoring("/connz?subs=detail");
        let subs: Vec<&serde_json::Value> = connz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c["subscriptions_list_detail"]
                    .as_array()
                    .into_iter()
                    .flatten()
            })
            .filter(|s| s["subject"] == subject)
            .collect();
        assert_eq!(subs.len(), 1, "one subscription on {subject}: {connz}");
        subs[0]["msgs"].as_u64().expect("msgs")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An API server running in this process on its own actix System thread.
pub struct InProcess {
    /// The API server's handle (for its store counters).
    pub handle: apiserver::ApiHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    pub fn start(nats_url: &str, options: ApiServerOptions) -> InProcess {
        Self::start_with_tokens(nats_url, options, TOKENS)
    }

    pub fn start_with_tokens(
        nats_url: &str,
        mut options: ApiServerOptions,
        tokens: &str,
    ) -> InProcess {
        options.authenticator = Authenticator::parse(tokens).unwrap();
        // No controller-manager makes `default` ServiceAccounts here: the API server runs
        // without the ServiceAccount admission plugin, as kube-apiserver with
        // `--disable-admission-plugins=ServiceAccount` (`skiff up` tests keep it on).
        options.admission.service_account = false;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let url = nats_url.to_string();
        let thread = std::thread::spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                let nats =
                    apiserver::intake::connect(async_nats::ConnectOptions::new(), url.clone())
                        .await
                        .expect("nats");
                let mut options = options;
                options.node_nats = Some(nats.clone());
                options.trace_nats = Some(
                    skiff::trace::connect(async_nats::ConnectOptions::new(), url.clone())
                        .await
                        .expect("nats for spans"),
                );
                let api = apiserver::start(options).await.expect("api server starts");
                let bridge = apiserver::serve_nats(api.clone(), nats)
                    .await
                    .expect("bridge");
                ready_tx.send(api).unwrap();
                let _ = stop_rx.await;
                let _ = bridge
                    .send(apiserver::Shutdown {
                        grace: Duration::from_secs(2),
                    })
                    .await;
            });
        });
        let handle = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("api server ready");
        InProcess {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Creates ConfigMaps `tick-1`, `tick-2`, … in `cms` until the API server's Store has
/// `watchers` watchers: a watch whose client is gone ends at its next bookmark, but the
/// Store forgets it only at the next event for its prefix, so a test has to keep writing to
/// see it go. Returns how many ConfigMaps it created.
pub async fn write_until_watchers(
    cluster: &Cluster,
    cms: &skiff::client::Api,
    watchers: usize,
    what: &str,
) -> usize {
    let mut n = 0;
    wait_for(Duration::from_secs(20), what, || {
        n += 1;
        let (cms, name) = (cms.clone(), format!("tick-{n}"));
        async move {
            cms.create(&serde_json::json!({"metadata": {"name": name}}))
                .await
                .ok()?;
            let now = cluster.api.handle.store_stats().await.ok()?.watchers;
            (now == watchers).then_some(())
        }
    })
    .await;
    n
}

/// A NATS server plus an in-process API server (and, for a suite run on etcd, the etcd
/// server its Store is the cache of).
pub struct Cluster {
    pub api: InProcess,
    pub nats: NatsServer,
    pub etcd: Option<EtcdServer>,
}

/// Whether this test binary runs its suite with the Store on etcd: `tests/spine_etcd.rs`
/// is the spine's suite again, so its binary's name says so (or `SKIFF_TEST_STORE=etcd`).
pub fn store_on_etcd() -> bool {
    std::env::var("SKIFF_TEST_STORE").is_ok_and(|s| s == "etcd")
        || std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .is_some_and(|n| n.starts_with("spine_etcd"))
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::with(ApiServerOptions::default())
    }

    pub fn with(options: ApiServerOptions) -> Cluster {
        Self::on(NatsServer::start(), options, TOKENS)
    }

    pub fn with_tokens(options: ApiServerOptions, tokens: &str) -> Cluster {
        Self::on(NatsServer::start(), options, tokens)
    }

    /// An API server on a nats-server the caller started.
    pub fn on(nats: NatsServer, mut options: ApiServerOptions, tokens: &str) -> Cluster {
        let etcd = (store_on_etcd() && options.etcd.is_none()).then(EtcdServer::start);
        if let Some(e) = &etcd {
            options.etcd = Some(e.options());
        }
        let api = InProcess::start_with_tokens(&nats.url(), options, tokens);
        Cluster { api, nats, etcd }
    }

    pub async fn client(&self) -> ApiClient {
        client_for(&self.nats.url(), ADMIN.0, ADMIN.1).await
    }
}

pub async fn client_for(url: &str, user: &str, token: &str) -> ApiClient {
    let mut o = ClientOptions::new(url, user, token);
    o.watch_silence = Duration::from_secs(3);
    ApiClient::connect(o).await.expect("client connects")
}

/// The `skiff` binary built for these tests.
pub fn skiff_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

/// A real `skiff apiserver` process.
pub struct ApiProcess {
    pub child: Child,
    /// Its HTTPS address (`127.0.0.1:<port>`).
    pub https: String,
}

impl ApiProcess {
    pub fn start(nats_url: &str, data_dir: &Path, extra: &[&str]) -> ApiProcess {
        Self::start_with_tokens(nats_url, data_dir, extra, TOKENS)
    }

    /// The same with a token file of the test's own.
    pub fn start_with_tokens(
        nats_url: &str,
        data_dir: &Path,
        extra: &[&str],
        token_file: &str,
    ) -> ApiProcess {
        let tokens = data_dir.join("test-tokens.csv");
        std::fs::create_dir_all(data_dir).unwrap();
        std::fs::write(&tokens, token_file).unwrap();
        // Every server its own HTTPS port, unless the test names one.
        let https = format!("127.0.0.1:{}", free_port());
        let default_https = ["--https-bind", https.as_str()];
        let https_flags: &[&str] = if extra.contains(&"--https-bind") {
            &[]
        } else {
            &default_https
        };
        let child = Command::new(skiff_bin())
            .arg("apiserver")
            .args(https_flags)
            .arg("--nats-url")
            .arg(nats_url)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--token-file")
            .arg(&tokens)
            // No `default` ServiceAccounts unless a controller-manager runs (see InProcess).
            .arg("--disable-admission-plugins=ServiceAccount")
            .args(extra)
            .env("SKIFF_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("skiff apiserver starts");
        let https = extra
            .iter()
            .position(|a| *a == "--https-bind")
            .and_then(|i| extra.get(i + 1))
            .map(|s| s.to_string())
            .unwrap_or(https);
        ApiProcess { child, https }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An actix System on its own thread running whatever `setup` starts; stopped on drop
/// (after `teardown`, if any, has run on it).
pub struct ActixThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ActixThread {
    pub fn start<F, Fut, T>(setup: F) -> ActixThread
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: 'static,
    {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                let _keep = setup().await;
                let _ = ready_tx.send(());
                let _ = stop_rx.await;
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("actors started");
        ActixThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for ActixThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls until `f` returns Some, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `skiff` process (any subcommand), killed on drop.
pub struct SkiffProcess(pub Child);

impl SkiffProcess {
    /// Starts `skiff <args>` with `env`, logging warnings to the test's stderr.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> SkiffProcess {
        SkiffProcess(
            Command::new(skiff_bin())
                .args(args)
                .envs(env.iter().copied())
                .env("SKIFF_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("skiff starts"),
        )
    }
}

impl Drop for SkiffProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a Docker Engine answers here (the compose and docker tests need one).
pub fn docker_present() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An admin client over NATS, once the API server answers.
pub async fn admin_when_ready(url: &str) -> ApiClient {
    let url = url.to_string();
    wait_for(Duration::from_secs(20), "the API server answers", || {
        let url = url.clone();
        async move {
            let c = ApiClient::connect(ClientOptions::new(&url, ADMIN.0, ADMIN.1))
                .await
                .ok()?;
            c.api("", "namespaces", None).get("default").await.ok()?;
            Some(c)
        }
    })
    .await
}

/// `skiff up --nodes N` as a user runs it (own ports, own data dir), driven with the real
/// kubectl (own cache dir); SIGINT on drop, as Ctrl-C.
pub struct SkiffUp {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub cache: tempfile::TempDir,
    pub nats_url: String,
}

impl SkiffUp {
    /// Starts it and waits until `nodes` nodes are Ready.
    pub fn start(nodes: usize) -> SkiffUp {
        Self::start_with(nodes, &[])
    }

    /// The same with more flags (`--runtime docker`).
    pub fn start_with(nodes: usize, extra: &[&str]) -> SkiffUp {
        let dir = tempfile::tempdir().unwrap();
        let (nats_port, https_port) = (free_port(), free_port());
        let child = Command::new(skiff_bin())
            .args(["up", "--nodes", &nodes.to_string()])
            .args(extra)
            .args(["--nats-port", &nats_port.to_string()])
            .args([
                "--https-bind",
                &format!("127.0.0.1:{https_port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .env("SKIFF_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("skiff up");
        let up = SkiffUp {
            child,
            dir,
            cache: tempfile::tempdir().unwrap(),
            // Its own nats-server serves TLS only (the cluster CA's certificate).
            nats_url: format!("tls://127.0.0.1:{nats_port}"),
        };
        up.eventually(&format!("{nodes} Ready nodes"), 60, |u| {
            u.kubeconfig().exists()
                && String::from_utf8_lossy(&u.run(&["get", "nodes", "--no-headers"]).stdout)
                    .lines()
                    .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
                    .count()
                    == nodes
        });
        up
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The CA its nats-server's certificate is signed by.
    pub fn nats_ca(&self) -> PathBuf {
        self.dir.path().join("pki").join("ca.crt")
    }

    /// Runs kubectl against it.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .output()
            .expect("kubectl")
    }

    /// Runs kubectl, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `f` until it holds, for at most `secs`.
    pub fn eventually(&self, what: &str, secs: u64, mut f: impl FnMut(&SkiffUp) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for SkiffUp {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already gone (a test killed it)
        }
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines a child process writes, read on a thread of their own, so that a test waits for
/// the line it expects (with a deadline that fails loudly) instead of sleeping.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
    closed: bool,
}

impl Lines {
    pub fn new<R: std::io::Read + Send + 'static>(from: R) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(from).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
            closed: false,
        }
    }

    /// Reads until `done` holds for the lines seen so far; panics at the deadline or when the
    /// output ends first, showing what was read.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && !self.closed,
                "{} waiting for {what}; read so far:\n{}",
                if self.closed {
                    "output ended"
                } else {
                    "timed out"
                },
                self.seen.join("\n")
            );
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
    }

    /// Waits for one line matching `pred` and returns it.
    pub fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_until(what, timeout, |seen| seen.iter().any(|l| pred(l)));
        self.seen.iter().find(|l| pred(l)).cloned().unwrap()
    }

    /// Keeps reading (and dropping) the rest on a thread, so the child never blocks on a
    /// full pipe.
    pub fn discard(self) {
        let rx = self.rx;
        std::thread::spawn(move || while rx.recv().is_ok() {});
    }

    /// Everything read so far, one line each.
    pub fn text(&self) -> String {
        self.seen.join("\n")
    }
}

/// Pids of the processes `pgrep` finds with `args` before the pattern (e.g. `-x -f`).
pub fn pgrep(args: &[&str], pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(args)
        .arg("--")
        .arg(pattern)
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// Records a skipped test: the reason on stderr and a line in `$SKIFF_SKIP_LOG`, which the
/// test command counts into its closing `N passed, N failed, N skipped` line. Only for what
/// this machine truly cannot have (no Docker Engine at all); anything the test command can
/// install or build is a failure when missing, never a skip.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    if let Some(path) = std::env::var_os("SKIFF_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}: {why}");
        }
    }
}

/// Binds the ClusterRole `role` to `subjects` ((kind, name): User or Group) in `namespace`
/// (a RoleBinding), as an admin grants a test's users what RBAC would otherwise refuse.
pub async fn grant(admin: &ApiClient, namespace: &str, role: &str, subjects: &[(&str, &str)]) {
    let subjects: Vec<serde_json::Value> = subjects
        .iter()
        .map(|(kind, name)| {
            serde_json::json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": name})
        })
        .collect();
    let name = format!("test-{role}-{}", subjects.len());
    admin
        .api("rbac.authorization.k8s.io", "rolebindings", Some(namespace))
        .create(&serde_json::json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects,
        }))
        .await
        .expect("the test's RoleBinding");
}

/// A JSON document from a nats-server monitoring port on loopback, e.g. `/connz?subs=1`.
pub fn monitoring_at(port: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("nats-server monitoring port");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("monitoring answer");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("monitoring {path}: {e}: {answer}"))
}

/// The Python with the `kubernetes` client: `SKIFF_PYTHON`, else the test command's venv
/// (`target/pyenv`), else `python3`.
pub fn python() -> String {
    std::env::var("SKIFF_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python3");
        if std::path::Path::new(venv).exists() {
            venv.into()
        } else {
            "python3".into()
        }
    })
}

/// A one-member etcd (Debian's `etcd-server`, which the test command installs) on free
/// ports, in a directory of its own; killed on drop.
pub struct EtcdServer {
    child: Child,
    pub port: u16,
    pub peer_port: u16,
    pub dir: tempfile::TempDir,
}

impl EtcdServer {
    pub fn start() -> EtcdServer {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let (port, peer_port) = (free_port(), free_port());
            let child = Self::spawn(dir.path(), port, peer_port);
            let mut server = EtcdServer {
                child,
                port,
                peer_port,
                dir,
            };
            if server.wait_healthy() {
                return server;
            }
        }
        panic!("etcd did not start")
    }

    fn spawn(dir: &Path, port: u16, peer_port: u16) -> Child {
        let peer = format!("http://127.0.0.1:{peer_port}");
        etcd_member(
            "s1",
            &dir.join("data"),
            port,
            peer_port,
            &format!("s1={peer}"),
        )
        .stderr(match std::env::var_os("SKIFF_ETCD_LOG") {
            Some(p) => std::fs::File::options()
                .create(true)
                .append(true)
                .open(p)
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
            None => Stdio::null(),
        })
        .spawn()
        .expect("etcd on PATH (the test command installs etcd-server)")
    }

    /// Waits until it answers (false: it exited, a port taken meanwhile).
    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if etcd_healthy(&[self.url()]) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same ports and data.
    pub fn start_again(&mut self) {
        self.child = Self::spawn(self.dir.path(), self.port, self.peer_port);
        assert!(self.wait_healthy(), "etcd did not come back");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The API server's options for this etcd.
    pub fn options(&self) -> skiff::apiserver::EtcdOptions {
        skiff::apiserver::EtcdOptions {
            endpoints: vec![self.url()],
            ..Default::default()
        }
    }

    /// `etcdctl get --prefix <prefix> --keys-only`: the keys etcd holds.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = Command::new("etcdctl")
            .args([
                "--endpoints",
                &self.url(),
                "get",
                "--prefix",
                "--keys-only",
                prefix,
            ])
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether every one of `endpoints` answers `etcdctl endpoint health`.
fn etcd_healthy(endpoints: &[String]) -> bool {
    Command::new("etcdctl")
        .args(["--endpoints", &endpoints.join(","), "endpoint", "health"])
        .env("ETCDCTL_API", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `etcd` as member `name` of `initial_cluster`, its data in `data`, on loopback ports.
fn etcd_member(
    name: &str,
    data: &Path,
    port: u16,
    peer_port: u16,
    initial_cluster: &str,
) -> Command {
    let client = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut c = Command::new("etcd");
    c.args(["--name", name, "--data-dir"])
        .arg(data)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", initial_cluster])
        .stdout(Stdio::null());
    c
}

/// The processes of a cluster's members, each SIGKILLed on demand or on drop.
pub struct Members(Vec<Option<Child>>);

impl Members {
    /// SIGKILL member `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.0[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for i in 0..self.0.len() {
            self.kill9(i);
        }
    }
}

/// An etcd cluster of `n` members on free ports (`m0`…), started together.
pub struct EtcdCluster {
    pub members: Members,
    pub ports: Vec<(u16, u16)>,
    pub dir: tempfile::TempDir,
}

impl EtcdCluster {
    pub fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (port, peer))| {
                etcd_member(
                    &format!("m{i}"),
                    &dir.path().join(format!("m{i}")),
                    *port,
                    *peer,
                    &initial.join(","),
                )
                .stderr(Stdio::null())
                .spawn()
                .ok()
            })
            .collect::<Vec<_>>();
        assert!(
            members.iter().all(Option::is_some),
            "etcd on PATH (the test command installs etcd-server)"
        );
        let cluster = EtcdCluster {
            members: Members(members),
            ports,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if etcd_healthy(&cluster.endpoints()) {
                return cluster;
            }
            assert!(Instant::now() < deadline, "etcd cluster did not form");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|(p, _)| format!("http://127.0.0.1:{p}"))
            .collect()
    }

    /// SIGKILL member `i`.
    pub fn kill9(&mut self, i: usize) {
        self.members.kill9(i);
    }
}

/// Three (or `n`) nats-servers joined by routes into one cluster, on free ports.
pub struct NatsCluster {
    pub servers: Members,
    pub ports: Vec<u16>,
}

impl NatsCluster {
    pub fn start(n: usize) -> NatsCluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats://127.0.0.1:{c}"))
            .collect();
        let servers = ports
            .iter()
            .map(|(p, c)| {
                Some(
                    Command::new("nats-server")
                        .args(["-a", "127.0.0.1", "-p", &p.to_string()])
                        .args(["--cluster_name", "skiff"])
                        .args(["--cluster", &format!("nats://127.0.0.1:{c}")])
                        .args(["--routes", &routes.join(",")])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("nats-server on PATH (the test command installs it)"),
                )
            })
            .collect();
        let cluster = NatsCluster {
            servers: Members(servers),
            ports: ports.iter().map(|(p, _)| *p).collect(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cluster
            .ports
            .iter()
            .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            assert!(Instant::now() < deadline, "nats cluster did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Routes take a moment to form.
        std::thread::sleep(Duration::from_millis(500));
        cluster
    }

    /// Every server's URL, comma-separated (what components take).
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL server `i`.
    pub fn kill9(&mut self, i: usize) {
        self.servers.kill9(i);
    }
}

/// Fake-runtime kubelets `n<i>` for each `i` in `nodes` (tokens `node<i>-token`).
pub async fn fake_kubelets(
    url: &str,
    nodes: std::ops::RangeInclusive<usize>,
) -> Vec<Box<dyn std::any::Any>> {
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    for i in nodes {
        let node = format!("n{i}");
        let client = client_for(
            url,
            &format!("system:node:{node}"),
            &format!("node{i}-token"),
        )
        .await;
        keep.push(Box::new(actix::Actor::start(skiff::kubelet::Kubelet::new(
            skiff::kubelet::KubeletOptions::new(&node),
            client,
            std::sync::Arc::new(skiff::kubelet::runtime::fake::FakeRuntime::new(
                "127.0.0.1".into(),
            )),
        ))));
    }
    keep
}

/// A scheduler and a controller-manager (replica `identity` of each), with their test tokens.
pub async fn scheduler_and_controllers(
    url: &str,
    identity: &str,
    timings: skiff::client::leader::ElectionTimings,
    lifecycle: skiff::controllers::nodelifecycle::NodeLifecycleOptions,
    root_ca: Option<String>,
) -> Vec<Box<dyn std::any::Any>> {
    use skiff::controllers::run::start_controllers;
    use skiff::scheduler::run::start_scheduler;
    let scheduler = start_scheduler(
        client_for(url, "system:kube-scheduler", "scheduler-token").await,
        identity,
    )
    .await;
    let controllers = start_controllers(
        client_for(
            url,
            "system:kube-controller-manager",
            "controller-manager-token",
        )
        .await,
        identity,
        timings,
        lifecycle,
        root_ca,
    );
    vec![Box::new(scheduler), Box::new(controllers)]
}
