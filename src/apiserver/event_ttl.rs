//! Events expire, as kube-apiserver's `--event-ttl` makes them (1 hour by default): kube gives
//! every Event write an etcd lease; here a loop every API server runs deletes the Events whose
//! last sign of life — the latest of their creation, `lastTimestamp`, `eventTime` and
//! `series.lastObservedTime` — is older than the TTL, each through `Registry::delete` with its
//! watch event. A second API server sharing the store meets 404s and moves on.

use std::time::Duration;

use serde_json::Value;

use crate::api::meta;
use crate::api::wire::Request;
use crate::apiserver::registry::{decode, Registry};

/// kube-apiserver's default `--event-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

const EVENTS_PREFIX: &str = "/registry/events/";

/// Runs until dropped (the API server's lifetime), looking every `ttl / 10` (at most a minute).
pub async fn run(registry: Registry, ttl: Duration) {
    let every = (ttl / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
    loop {
        tokio::time::sleep(every).await;
        expire(&registry, ttl).await;
    }
}

/// The seconds since the epoch of an RFC 3339 time.
fn seconds(ts: &str) -> Option<i64> {
    ts.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// When an Event last changed, as far as its fields tell.
fn last_seen(e: &Value) -> Option<i64> {
    [
        "/metadata/creationTimestamp",
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
    ]
    .iter()
    .filter_map(|p| e.pointer(p).and_then(Value::as_str).and_then(seconds))
    .max()
}

async fn expire(registry: &Registry, ttl: Duration) {
    let now = jiff::Timestamp::now().as_second();
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    for kv in registry.reader().values(EVENTS_PREFIX) {
        let Ok(event) = decode(&kv.value) else {
            continue;
        };
        if last_seen(&event).is_none_or(|t| now.saturating_sub(t) < ttl) {
            continue;
        }
        let req = Request {
            resource: "events".into(),
            namespace: Some(meta::namespace(&event).to_string()),
            name: Some(meta::name(&event).to_string()),
            client: "kube-apiserver".into(),
            ..Default::default()
        };
        if let Err(e) = registry.delete(&req).await {
            tracing::debug!(event = %meta::name(&event), error = %e.message, "expiring an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_lives_from_its_latest_timestamp() {
        let e = json!({"metadata": {"creationTimestamp": "2026-12-07T10:00:00Z"},
            "lastTimestamp": "2026-12-07T11:00:00Z",
            "series": {"lastObservedTime": "2026-12-07T11:30:00.123456Z"}});
        assert_eq!(last_seen(&e), seconds("2026-12-07T11:30:00Z"));
        assert_eq!(last_seen(&json!({})), None);
    }
}
