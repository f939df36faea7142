//! `skiff trace`: watch the control plane talk.
//!
//! - `skiff trace --follow` shows the bus live: every message between components (time,
//!   from → to, subject, verb, object, outcome, latency) and the steps components record,
//!   filterable by component, kind, namespace and name; `-o json` prints one span per line.
//! - `skiff trace pod/<name>` (any kind) asks the API server's collector for the causal
//!   timeline of one object: every step of every trace that touched it, with the time each
//!   took, from its bounded buffer — no external collector needed.
//!
//! It reads spans from NATS (`skiff.trace.spans`, `skiff.trace.query`); queries need a token
//! of a `system:masters` user (`--token`, `--token-path`, or the admin token in
//! `<data-dir>/tokens.csv`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args as ClapArgs;
use futures::StreamExt;

use crate::api::subject::HEADER_TOKEN;
use crate::apiserver::{Authenticator, ADMIN_GROUP};
use crate::config::env;
use crate::trace::collector::{TraceAnswer, TraceQuery};
use crate::trace::{SpanRecord, QUERY_SUBJECT, SPANS_WILDCARD};

/// The inbox prefix `skiff trace` answers arrive on (the `trace` NATS user may read it).
pub const TRACE_INBOX: &str = "_INBOX.skiff-trace";

/// Flags of `skiff trace`.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// The object whose timeline to show, `<kind>/<name>` (e.g. `pod/web-1`, `deploy/web`).
    pub target: Option<String>,
    /// Show the bus live instead.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// `text` (default) or `json` (one span per line).
    #[arg(long, short = 'o', default_value = "text")]
    pub output: String,
    /// Only spans of this component (`apiserver`, `scheduler`, `kubelet:<node>`…), as
    /// sender, receiver or recorder; `kubelet` matches every kubelet.
    #[arg(long)]
    pub component: Option<String>,
    /// Only spans about this kind or resource (`pod`, `pods`, `deployments`…).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only spans in this namespace (with a target: the target's namespace).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Only spans about objects with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// NATS server URL (default: the one `skiff up` wrote into the data dir, else
    /// nats://127.0.0.1:4222).
    #[arg(long, env = env::NATS_URL)]
    pub nats_url: Option<String>,
    /// NATS user (`trace` in deploy/nats/nats.conf).
    #[arg(long, env = env::NATS_USER)]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = env::NATS_PASSWORD, hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Bearer token of a system:masters user (for timelines).
    #[arg(long, env = crate::config::env::TOKEN, hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding that token.
    #[arg(long, env = crate::config::env::TOKEN_PATH)]
    pub token_path: Option<PathBuf>,
    /// Where to find the admin token when none is given (`skiff up` uses `.skiff`).
    #[arg(long, env = env::DATA_DIR, default_value = ".skiff")]
    pub data_dir: PathBuf,
    /// With --follow: stop after this many seconds (default: until interrupted).
    #[arg(long)]
    pub duration: Option<u64>,
}

/// `kind/name` → resource plural and name.
fn parse_target(target: &str) -> anyhow::Result<(String, String)> {
    let (kind, name) = target
        .split_once('/')
        .with_context(|| format!("{target:?}: want <kind>/<name>, e.g. pod/web-1"))?;
    Ok((resource_of(kind), name.to_string()))
}

/// A kind, resource or short name → the resource plural.
fn resource_of(kind: &str) -> String {
    let k = kind.to_ascii_lowercase();
    let by_name = |name: &str| {
        crate::api::resource::RESOURCES.iter().find(|r| {
            r.plural == name
                || r.singular == name
                || r.kind.eq_ignore_ascii_case(name)
                || r.short_names.contains(&name)
        })
    };
    match (by_name(&k), k.as_str()) {
        (Some(r), _) => r.plural.to_string(),
        (None, "deploy") => "deployments".into(),
        (None, "rs") => "replicasets".into(),
        (None, _) => k,
    }
}

fn token(args: &Args) -> anyhow::Result<String> {
    if let Some(t) = &args.token {
        return Ok(t.clone());
    }
    if let Some(p) = &args.token_path {
        return Ok(std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_string());
    }
    let path = args.data_dir.join("tokens.csv");
    let auth = Authenticator::from_file(&path)
        .with_context(|| "no --token given and no admin token file found".to_string())?;
    auth.token_for_group(ADMIN_GROUP)
        .map(|(t, _)| t.to_string())
        .with_context(|| format!("no {ADMIN_GROUP} token in {}", path.display()))
}

async fn connect(args: &Args) -> anyhow::Result<async_nats::Client> {
    let mut o = async_nats::ConnectOptions::new()
        .name("skiff trace")
        .custom_inbox_prefix(TRACE_INBOX);
    if let Some(u) = &args.nats_user {
        o = o.user_and_password(u.clone(), args.nats_password.clone().unwrap_or_default());
    } else if let Some(p) = crate::cmd::up::read_nats_users(&args.data_dir).get("trace") {
        // `skiff up`'s own nats-server: its `trace` user, from the data dir.
        o = o.user_and_password("trace".into(), p.clone());
    }
    let url = nats_url(args);
    let ca = args.data_dir.join("pki").join("ca.crt");
    if url.starts_with("tls://") && ca.exists() {
        // `skiff up`'s nats-server serves TLS with the cluster CA's certificate.
        o = o.add_root_certificates(ca).require_tls(true);
    }
    o.connect(crate::client::nats_servers(&url))
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// The bus to watch: `--nats-url`, else the one `skiff up` runs (it may not be on 4222 when
/// that port was taken), else the default.
fn nats_url(args: &Args) -> String {
    args.nats_url.clone().unwrap_or_else(|| {
        std::fs::read_to_string(args.data_dir.join(crate::cmd::up::NATS_URL_FILE))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "nats://127.0.0.1:4222".into())
    })
}

/// Whether a span passes the filters.
fn wanted(args: &Args, s: &SpanRecord) -> bool {
    let component_ok = args.component.as_deref().is_none_or(|c| {
        let m = |x: &str| x == c || x.split(':').next() == Some(c);
        m(&s.component) || s.from.as_deref().is_some_and(m) || s.to.as_deref().is_some_and(m)
    });
    let kind_ok = args.kind.as_deref().is_none_or(|k| {
        let want = resource_of(k);
        s.resource
            .as_deref()
            .is_some_and(|r| r.split('/').next() == Some(want.as_str()))
    });
    let ns_ok = args
        .namespace
        .as_deref()
        .is_none_or(|n| s.namespace.as_deref() == Some(n));
    let name_ok = args
        .name
        .as_deref()
        .is_none_or(|n| s.object.as_deref() == Some(n));
    component_ok && kind_ok && ns_ok && name_ok
}

fn millis(nanos: u64) -> String {
    format!("{:.1}ms", nanos as f64 / 1e6)
}

fn clock(unix_nanos: u64) -> String {
    jiff::Timestamp::from_nanosecond(unix_nanos as i128)
        .map(|t| t.strftime("%H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

fn object(s: &SpanRecord) -> String {
    let resource = s.resource.as_deref().unwrap_or("-");
    match (s.namespace.as_deref(), s.object.as_deref()) {
        (Some(ns), Some(n)) => format!("{resource} {ns}/{n}"),
        (None, Some(n)) => format!("{resource} {n}"),
        (Some(ns), None) => format!("{resource} {ns}/"),
        (None, None) => resource.to_string(),
    }
}

/// One line of the live view.
pub fn follow_line(s: &SpanRecord) -> String {
    let who = match (&s.from, &s.to) {
        (Some(f), Some(t)) => format!("{f} → {t}"),
        _ => s.component.clone(),
    };
    format!(
        "{}  {:<34} {:<22} {:<28} {:<8} {:<40} {:<12} {}",
        clock(s.start_unix_nanos),
        who,
        s.name,
        s.subject.as_deref().unwrap_or("-"),
        s.verb.as_deref().unwrap_or("-"),
        object(s),
        s.outcome,
        millis(s.duration_nanos),
    )
}

/// The timeline of some spans, one trace after another, steps indented under their parents.
pub fn timeline(spans: &[SpanRecord]) -> String {
    let mut by_trace: Vec<(&str, Vec<&SpanRecord>)> = Vec::new();
    for s in spans {
        match by_trace.iter_mut().find(|(t, _)| *t == s.trace_id) {
            Some((_, v)) => v.push(s),
            None => by_trace.push((&s.trace_id, vec![s])),
        }
    }
    let mut out = String::new();
    for (trace, mut steps) in by_trace {
        steps.sort_by_key(|s| s.start_unix_nanos);
        let t0 = steps.first().map(|s| s.start_unix_nanos).unwrap_or(0);
        let ids: HashMap<&str, &SpanRecord> =
            steps.iter().map(|s| (s.span_id.as_str(), *s)).collect();
        let depth = |s: &SpanRecord| {
            let mut d = 0;
            let mut p = s.parent_id.as_deref();
            while let Some(id) = p {
                match ids.get(id) {
                    Some(parent) if d < 32 => {
                        d += 1;
                        p = parent.parent_id.as_deref();
                    }
                    _ => break,
                }
            }
            d
        };
        out.push_str(&format!("trace {trace}  ({} steps)\n", steps.len()));
        out.push_str(&format!(
            "  {:>10} {:>9}  {:<44} {:<18} {:<40} {}\n",
            "AT", "TOOK", "STEP", "BY", "OBJECT", "OUTCOME"
        ));
        for s in steps {
            let step = format!("{}{}", "  ".repeat(depth(s)), s.name);
            let by = match (&s.from, &s.to) {
                (Some(f), Some(t)) => format!("{f}→{t}"),
                _ => s.component.clone(),
            };
            out.push_str(&format!(
                "  {:>10} {:>9}  {:<44} {:<18} {:<40} {}\n",
                format!("+{}", millis(s.start_unix_nanos.saturating_sub(t0))),
                millis(s.duration_nanos),
                step,
                by,
                object(s),
                s.outcome
            ));
        }
    }
    out
}

/// Runs `skiff trace`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let nats = connect(&args).await?;
        if args.follow || args.target.is_none() {
            return follow(&args, nats).await;
        }
        let (resource, name) = parse_target(args.target.as_deref().unwrap_or(""))?;
        let query = TraceQuery {
            resource,
            namespace: args.namespace.clone().unwrap_or_else(|| "default".into()),
            name,
        };
        let cluster_scoped = crate::api::resource::RESOURCES
            .iter()
            .any(|r| r.plural == query.resource && !r.namespaced);
        let query = if cluster_scoped {
            TraceQuery {
                namespace: String::new(),
                ..query
            }
        } else {
            query
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(HEADER_TOKEN, format!("Bearer {}", token(&args)?).as_str());
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            nats.request_with_headers(
                QUERY_SUBJECT,
                headers,
                rmp_serde::to_vec_named(&query)?.into(),
            ),
        )
        .await
        .context("no trace collector answered in time")?
        .context("asking the trace collector")?;
        let answer: TraceAnswer = rmp_serde::from_slice(&reply.payload)?;
        if let Some(e) = answer.error {
            anyhow::bail!("{e}");
        }
        if answer.spans.is_empty() {
            anyhow::bail!(
                "no trace touches {} {}/{} (the collector keeps the latest spans only)",
                query.resource,
                query.namespace,
                query.name
            );
        }
        if args.output == "json" {
            for s in &answer.spans {
                println!("{}", serde_json::to_string(s)?);
            }
        } else {
            print!("{}", timeline(&answer.spans));
        }
        anyhow::Ok(())
    })
}

async fn follow(args: &Args, nats: async_nats::Client) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut sub = nats.subscribe(SPANS_WILDCARD).await?;
    nats.flush().await?;
    let json = args.output == "json";
    if !json {
        println!(
            "{:<12}  {:<34} {:<22} {:<28} {:<8} {:<40} {:<12} LATENCY",
            "TIME", "FROM → TO", "STEP", "SUBJECT", "VERB", "OBJECT", "OUTCOME"
        );
    }
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs(d));
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, sub.next()).await {
                Ok(m) => m,
                Err(_) => return Ok(()),
            },
            None => sub.next().await,
        };
        let Some(msg) = next else {
            return Ok(());
        };
        let Ok(mut batch) = rmp_serde::from_slice::<Vec<SpanRecord>>(&msg.payload) else {
            continue;
        };
        crate::trace::attribute(&mut batch, &msg.subject);
        let mut out = std::io::stdout().lock();
        for s in batch.iter().filter(|s| wanted(args, s)) {
            let line = if json {
                serde_json::to_string(s)?
            } else {
                follow_line(s)
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // stdout closed (e.g. piped into head)
            }
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_kinds() {
        assert_eq!(
            parse_target("pod/web").unwrap(),
            ("pods".into(), "web".into())
        );
        assert_eq!(parse_target("deploy/web").unwrap().0, "deployments");
        assert_eq!(parse_target("no/n1").unwrap().0, "nodes");
        assert!(parse_target("web").is_err());
    }

    #[test]
    fn a_timeline_indents_steps_under_their_parents() {
        let root = SpanRecord {
            trace_id: "t".into(),
            span_id: "a".into(),
            name: "ApiServer/create".into(),
            component: "apiserver".into(),
            outcome: "200".into(),
            start_unix_nanos: 1_000_000,
            duration_nanos: 2_000_000,
            ..Default::default()
        };
        let child = SpanRecord {
            span_id: "b".into(),
            parent_id: Some("a".into()),
            name: "Store/commit".into(),
            start_unix_nanos: 1_500_000,
            ..root.clone()
        };
        let text = timeline(&[child, root]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("trace t  (2 steps)"));
        assert!(lines[2].contains("+0.0ms") && lines[2].contains(" ApiServer/create"));
        assert!(lines[3].contains("+0.5ms") && lines[3].contains("  Store/commit"));
    }
}
