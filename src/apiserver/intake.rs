//! The request intake: reads the API server's request subscription on a thread of its own
//! and refuses, at the door, what the server could not serve in time.
//!
//! Why a thread: the API server's actors, the NATS bridge and every request task share one
//! thread. When requests arrive faster than that thread serves them, they used to wait
//! unseen — in nats-server's buffer, the socket, the subscription — so flow control never
//! saw a queue and nothing was refused; callers timed out while the server worked on
//! requests nobody waited for any more (63 % goodput at twice the capacity). The intake
//! thread reads every request as it arrives, stamps it, and hands it over through a bounded
//! queue whose delay the bridge reports back ([`Delay`]). While that queue is non-empty and
//! the last request taken from it waited longer than [`MAX_WAIT`], or the queue is full, new
//! requests from callers outside the system's own identities are answered 429 with
//! `Retry-After` at once, from this thread, at the cost of one small reply. The system's own
//! traffic (nodes, scheduler, controller-manager, `system:masters`) is never refused here:
//! it waits its turn, which the refusals keep short, and meets its priority level in flow
//! control.
//!
//! The API server's NATS connection is also made on this thread ([`connect`]), so reading
//! and writing the socket never waits behind request work either.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::api::codec;
use crate::api::subject::{HEADER_CODE, HEADER_REQUEST_ID};
use crate::api::Status;

/// How long a request may wait between arriving and being taken by the bridge before the
/// intake starts refusing non-system callers: a few dozen requests' worth of work, short
/// enough that the system's own traffic queued behind a flood is served well inside its
/// lease and timeout budgets.
pub const MAX_WAIT: Duration = Duration::from_millis(200);

/// Requests the queue between the intake and the bridge holds.
const QUEUE: usize = 4096;

/// A request as the intake took it off the bus.
pub struct Arrived {
    /// The NATS message.
    pub msg: Message,
    /// When the intake read it.
    pub at: Instant,
}

/// The wait of the request the bridge took last, in microseconds: written by the bridge,
/// read by the intake.
#[derive(Clone, Default)]
pub struct Delay(Arc<AtomicU64>);

impl Delay {
    /// Records that a request taken now had arrived at `at`.
    pub fn taken(&self, at: Instant) {
        let waited = at.elapsed();
        self.0.store(waited.as_micros() as u64, Ordering::Relaxed);
        static WAIT: OnceLock<&'static crate::metrics::HistogramVec> = OnceLock::new();
        WAIT.get_or_init(|| {
            crate::metrics::histogram(
                "apiserver_nats_intake_wait_seconds",
                "How long requests waited between the intake reading them and the bridge \
                 taking them.",
                &[],
                crate::metrics::LATENCY_BUCKETS,
            )
        })
        .observe(&[], waited.as_secs_f64());
    }

    fn last(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

/// Decides whether a request comes from the system's own identities (never refused here).
pub type IsSystem = Arc<dyn Fn(&Message) -> bool + Send + Sync>;

/// The intake's thread, started on first use; None if no thread could be started (the
/// intake then runs on the caller's runtime).
fn runtime() -> Option<&'static tokio::runtime::Handle> {
    static RT: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    RT.get_or_init(|| match crate::rt::side_thread("skiff-intake") {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "no intake thread: requests are read on the server's own");
            None
        }
    })
    .as_ref()
}

/// Connects to NATS from the intake thread, so the connection's socket is read and written
/// there.
pub async fn connect(
    options: async_nats::ConnectOptions,
    url: String,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    crate::rt::connect_on(runtime(), options, url).await
}

/// Starts reading `sub`: returns the queue the bridge takes requests from. When `drain`
/// fires, the subscription is drained (unsubscribed at nats-server, with every request the
/// server had already sent still delivered) and the queue ends after the last of them.
/// Dropping the subscription instead would lose the requests already in the socket and its
/// buffer: answered by nobody, their callers would wait until they time out.
pub fn start(
    sub: async_nats::Subscriber,
    drain: tokio::sync::oneshot::Receiver<()>,
    client: async_nats::Client,
    is_system: IsSystem,
    delay: Delay,
) -> mpsc::Receiver<Arrived> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let intake = read(sub, drain, client, is_system, delay, tx);
    match runtime() {
        Some(rt) => drop(rt.spawn(intake)),
        None => drop(tokio::spawn(intake)),
    }
    rx
}

async fn read(
    mut sub: async_nats::Subscriber,
    drain: tokio::sync::oneshot::Receiver<()>,
    client: async_nats::Client,
    is_system: IsSystem,
    delay: Delay,
    tx: mpsc::Sender<Arrived>,
) {
    use futures::StreamExt;
    let mut drain = Some(drain);
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m {
                Some(m) => m,
                None => break,
            },
            _ = async { drain.as_mut().expect("guarded").await }, if drain.is_some() => {
                drain = None;
                if let Err(e) = sub.drain().await {
                    tracing::warn!(error = %e, "draining the request subscription");
                    break;
                }
                continue;
            }
            _ = tx.closed() => break,
        };
        let Some(reply) = msg.reply.clone() else {
            tracing::debug!(subject = %msg.subject, "request without a reply subject dropped");
            continue;
        };
        let queued = tx.max_capacity() - tx.capacity();
        if let Some(why) = door(queued, tx.capacity(), delay.last()) {
            if !is_system(&msg) {
                refuse(&client, &msg, reply.to_string(), why).await;
                continue;
            }
        }
        let arrived = Arrived {
            msg,
            at: Instant::now(),
        };
        if tx.send(arrived).await.is_err() {
            break;
        }
    }
}

/// Why a request arriving now is refused (if its caller is not the system's): "late" while
/// requests are queued and the last one taken had waited past [`MAX_WAIT`], "full" when no
/// room is left. An empty queue admits, however long the last request waited: the backlog
/// is gone.
fn door(queued: usize, room: usize, last_wait: Duration) -> Option<&'static str> {
    if room == 0 {
        Some("full")
    } else if queued > 0 && last_wait > MAX_WAIT {
        Some("late")
    } else {
        None
    }
}

/// Answers a request 429 `TooManyRequests` (retry after 1 s) without serving it; `why`
/// labels `apiserver_nats_shed_requests_total`.
pub async fn refuse(client: &async_nats::Client, msg: &Message, reply: String, why: &str) {
    let mut headers = HeaderMap::new();
    if let Some(id) = msg.headers.as_ref().and_then(|h| h.get(HEADER_REQUEST_ID)) {
        headers.insert(HEADER_REQUEST_ID, id.as_str());
    }
    headers.insert(HEADER_CODE, "429");
    let mut status =
        Status::too_many_requests("the API server is overloaded, please try again later");
    status.details = Some(crate::api::status::StatusDetails {
        retry_after_seconds: Some(1),
        ..Default::default()
    });
    crate::metrics::counter(
        "apiserver_nats_shed_requests_total",
        "Requests refused with 429 before they were served: late (the intake's queue was \
         slower than its bound), full (the queue was full) or backlog (too many in progress).",
        &["reason"],
    )
    .inc(&[why]);
    let body = codec::encode(&status).map(Bytes::from).unwrap_or_default();
    if let Err(e) = client.publish_with_headers(reply, headers, body).await {
        tracing::warn!(error = %e, "publishing a refusal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_door_closes_on_a_late_or_full_queue_and_opens_when_it_empties() {
        let slow = MAX_WAIT + Duration::from_millis(1);
        assert_eq!(door(0, QUEUE, Duration::ZERO), None);
        assert_eq!(
            door(10, QUEUE - 10, MAX_WAIT),
            None,
            "at the bound, still admitted"
        );
        assert_eq!(door(10, QUEUE - 10, slow), Some("late"));
        assert_eq!(door(0, QUEUE, slow), None, "an empty queue admits");
        assert_eq!(door(QUEUE, 0, Duration::ZERO), Some("full"));
    }
}
