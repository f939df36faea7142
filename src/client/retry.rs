//! How a client behaves when the API server is overloaded or away, so that it never
//! amplifies the trouble (client-go's rate limiter, `Retry-After` handling and back-off are
//! the reference):
//!
//! - a token bucket per client (`qps`, `burst`) paces every request it sends;
//! - a request the server refused without acting on it (429, or 503 when no API server
//!   answered) is retried, any verb; one that may have been acted on (a 504 time-out) is
//!   retried only when reading it again is harmless (get, list, watch);
//! - retries wait for the server's `Retry-After` when it gives one, else a jittered,
//!   doubling back-off, and stop after `max_retries`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::api::wire::Verb;
use crate::api::Status;

/// How the client's Status for a broken connection starts (see `ApiClient::send_to`).
pub(super) const TRANSPORT_PREFIX: &str = "NATS: ";

/// Rate limit and retries of one client; shared by its clones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Steady requests per second (None: unlimited).
    pub qps: Option<f64>,
    /// Requests that may go at once after a quiet spell.
    pub burst: u32,
    /// Retries of one request at most.
    pub max_retries: u32,
    /// First back-off; doubles per retry (with full jitter) up to `max_backoff`.
    pub base_backoff: Duration,
    /// Longest back-off, and longest `Retry-After` honoured.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// No rate limit (a test's or a tool's client), a few retries.
    fn default() -> Self {
        RetryPolicy {
            qps: None,
            burst: 0,
            max_retries: 5,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// A component's budget: `qps` requests per second, bursts of `burst`.
    pub fn limited(qps: f64, burst: u32) -> Self {
        RetryPolicy {
            qps: Some(qps),
            burst: burst.max(1),
            ..Default::default()
        }
    }

    /// Whether a failed attempt is retried, and after how long (`attempt` counts from 1).
    pub fn retry_after(&self, verb: Verb, status: &Status, attempt: u32) -> Option<Duration> {
        if attempt > self.max_retries {
            return None;
        }
        let idempotent = matches!(verb, Verb::Get | Verb::List | Verb::Watch);
        let retryable = match status.code {
            429 => true,
            // A 503 for "no API server answered" means nobody received the request, and the
            // server's own 503 (e.g. a store that is not ready) did not act on it either; a
            // connection that broke mid-request ("NATS: …") may have delivered it.
            503 => idempotent || !status.message.starts_with(TRANSPORT_PREFIX),
            504 => idempotent,
            _ => false,
        };
        if !retryable {
            return None;
        }
        let told = status
            .details
            .as_ref()
            .and_then(|d| d.retry_after_seconds)
            .map(|s| Duration::from_secs(s.into()));
        Some(match told {
            Some(d) => d.min(self.max_backoff),
            None => backoff(self.base_backoff, self.max_backoff, attempt),
        })
    }
}

/// Full jitter over `base` × 2^(attempt-1), at most `max`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    use rand::Rng;
    let cap = base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(max);
    cap.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// A token bucket: `burst` tokens, refilled at `qps` per second.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(qps: f64, burst: u32) -> Self {
        TokenBucket {
            qps,
            burst: burst as f64,
            state: Mutex::new((burst as f64, Instant::now())),
        }
    }

    /// Takes a token, waiting until one is there. Tokens are reserved in arrival order, so
    /// waiting callers are served in turn.
    pub async fn take(&self) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let (tokens, at) = *state;
            let tokens = (tokens + now.saturating_duration_since(at).as_secs_f64() * self.qps)
                .min(self.burst);
            // May go negative: a reservation that later callers queue behind.
            let left = tokens - 1.0;
            *state = (left, now);
            if left >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-left / self.qps)
            }
        };
        if !wait.is_zero() {
            crate::metrics::counter(
                "rest_client_rate_limited_total",
                "Requests this process delayed to keep a client within its QPS.",
                &[],
            )
            .inc(&[]);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::status::StatusDetails;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_lets_a_burst_through_then_paces_at_qps() {
        let bucket = TokenBucket::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            bucket.take().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");
        for _ in 0..10 {
            bucket.take().await;
        }
        let paced = start.elapsed().as_secs_f64();
        assert!((0.99..1.01).contains(&paced), "10 more at 10/s: {paced}");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_callers_are_served_in_turn() {
        let bucket = std::sync::Arc::new(TokenBucket::new(2.0, 1));
        bucket.take().await;
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let b = bucket.clone();
                tokio::spawn(async move {
                    b.take().await;
                    Instant::now()
                })
            })
            .collect();
        let mut at = Vec::new();
        for t in tasks {
            at.push(t.await.unwrap().duration_since(start).as_secs_f64());
        }
        at.sort_by(f64::total_cmp);
        let expected = [0.5, 1.0, 1.5, 2.0];
        for (a, e) in at.iter().zip(expected) {
            assert!((a - e).abs() < 0.01, "{at:?}");
        }
    }

    #[test]
    fn what_is_retried() {
        let p = RetryPolicy::default();
        let s = |code: u16| Status {
            code,
            ..Status::internal("x")
        };
        assert!(p.retry_after(Verb::Create, &s(429), 1).is_some());
        assert!(p.retry_after(Verb::Create, &s(503), 1).is_some());
        let broken = Status::unavailable(format!("{TRANSPORT_PREFIX}connection reset"));
        assert!(
            p.retry_after(Verb::Create, &broken, 1).is_none(),
            "a create on a connection that broke may have happened"
        );
        assert!(p.retry_after(Verb::Get, &broken, 1).is_some());
        assert!(
            p.retry_after(Verb::Create, &s(504), 1).is_none(),
            "a create that timed out may have happened"
        );
        assert!(p.retry_after(Verb::Get, &s(504), 1).is_some());
        assert!(p.retry_after(Verb::Update, &s(409), 1).is_none());
        assert!(p.retry_after(Verb::Get, &s(500), 1).is_none());
        assert!(
            p.retry_after(Verb::Get, &s(429), p.max_retries + 1)
                .is_none(),
            "bounded"
        );
    }

    #[test]
    fn retry_after_is_honoured_and_bounded_and_backoff_grows_with_jitter() {
        let p = RetryPolicy::default();
        let mut told = Status {
            code: 429,
            ..Status::internal("x")
        };
        told.details = Some(StatusDetails {
            retry_after_seconds: Some(2),
            ..Default::default()
        });
        assert_eq!(
            p.retry_after(Verb::Create, &told, 1),
            Some(Duration::from_secs(2))
        );
        told.details.as_mut().unwrap().retry_after_seconds = Some(3600);
        assert_eq!(p.retry_after(Verb::Create, &told, 1), Some(p.max_backoff));
        for attempt in 1..8 {
            let cap = p.base_backoff * (1 << (attempt - 1));
            let d = backoff(p.base_backoff, p.max_backoff, attempt);
            assert!(d <= cap.min(p.max_backoff), "{attempt}: {d:?}");
        }
        let spread: std::collections::BTreeSet<Duration> = (0..20)
            .map(|_| backoff(p.base_backoff, p.max_backoff, 4))
            .collect();
        assert!(spread.len() > 10, "jittered: {spread:?}");
    }
}
