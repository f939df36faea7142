//! What every component process shares at start and stop: the host name it is known by,
//! its `/metrics` endpoint, and the signals it stops on.

/// This host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Serves `/metrics` and `/healthz` on `bind` (plain HTTP) inside the current actix System;
/// a bind failure is logged, not fatal: metrics must not keep a component from running.
pub fn serve_metrics(bind: &str, component: &str) {
    if bind.is_empty() {
        return;
    }
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new()
            .route(
                "/metrics",
                actix_web::web::get().to(|| async {
                    actix_web::HttpResponse::Ok()
                        .content_type("text/plain; version=0.0.4; charset=utf-8")
                        .body(crate::metrics::render())
                }),
            )
            .route("/healthz", actix_web::web::get().to(|| async { "ok" }))
    })
    .workers(1)
    .disable_signals()
    .bind(bind);
    match server {
        Ok(s) => {
            tracing::info!(%bind, %component, "serving /metrics");
            actix::spawn(async move {
                let _ = s.run().await;
            });
        }
        Err(e) => tracing::warn!(%bind, %component, error = %e, "cannot serve /metrics"),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
