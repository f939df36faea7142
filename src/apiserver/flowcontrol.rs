//! Load shedding with fairness, after kube-apiserver's API Priority and Fairness: every call
//! (NATS or HTTP alike, since both go through `ApiHandle::call`) is classified by who sends
//! it and what it touches into a priority level; each level has its share of the server's
//! seats; a call waits for a seat in its level's queues, served round-robin across flows
//! (one flow per user), so that one user's flood queues behind itself while others go on;
//! a queue that is full, or a wait that runs out, answers 429 with `Retry-After`.
//!
//! The levels and their nominal shares are kube's bootstrap ones: `exempt` (system:masters:
//! never queued), `leader-election` (the components' Leases), `node-high` (nodes' Leases and
//! Node status), `system` (nodes' other calls), `workload-high` (scheduler and
//! controller-manager), `workload-low` (service accounts), `global-default` (every other
//! authenticated user) and `catch-all`. `/readyz`, `/livez`, `/healthz` and `/metrics` do not
//! call the API and are never shed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::auth::UserInfo;
use crate::api::status::StatusDetails;
use crate::api::wire::{Request, Verb};
use crate::api::Status;

/// Seats of the whole server (kube-apiserver: `--max-requests-inflight` 400 plus
/// `--max-mutating-requests-inflight` 200).
pub const DEFAULT_SEATS: usize = 600;

/// Longest wait for a seat before the call is refused with 429.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);

/// Requests one flow may have queued in its level (kube's `queueLengthLimit`).
const FLOW_QUEUE_LIMIT: usize = 50;

/// One priority level: its name and nominal share of the seats.
struct LevelSpec {
    name: &'static str,
    shares: usize,
}

/// kube-apiserver 1.33's bootstrap priority levels (exempt has no seats: never limited).
const LEVELS: &[LevelSpec] = &[
    LevelSpec {
        name: "leader-election",
        shares: 10,
    },
    LevelSpec {
        name: "node-high",
        shares: 40,
    },
    LevelSpec {
        name: "system",
        shares: 30,
    },
    LevelSpec {
        name: "workload-high",
        shares: 40,
    },
    LevelSpec {
        name: "workload-low",
        shares: 100,
    },
    LevelSpec {
        name: "global-default",
        shares: 20,
    },
    LevelSpec {
        name: "catch-all",
        shares: 5,
    },
];

/// The priority level name for the exempt calls.
pub const EXEMPT: &str = "exempt";

/// The level a call belongs to (kube's bootstrap FlowSchemas, in their matching order).
pub fn classify(user: &UserInfo, verb: Verb, req: &Request) -> &'static str {
    let in_group = |g: &str| user.groups.iter().any(|x| x == g);
    if in_group("system:masters") {
        return EXEMPT;
    }
    let component = matches!(
        user.name.as_str(),
        "system:kube-scheduler" | "system:kube-controller-manager"
    );
    let leases = req.group == "coordination.k8s.io" && req.resource == "leases";
    if component && leases {
        return "leader-election";
    }
    if in_group("system:nodes") {
        let high = req.resource == "nodes" || leases;
        return if high { "node-high" } else { "system" };
    }
    if component {
        return "workload-high";
    }
    if in_group("system:serviceaccounts") {
        return "workload-low";
    }
    let _ = verb;
    if in_group("system:unauthenticated") {
        return "catch-all";
    }
    "global-default"
}

/// Whether a verb changes state (for `apiserver_current_inflight_requests{request_kind}`).
fn request_kind(verb: Verb) -> &'static str {
    match verb {
        Verb::Get | Verb::List | Verb::Watch => "readOnly",
        _ => "mutating",
    }
}

/// What one level holds now.
#[derive(Default)]
struct LevelState {
    /// Seats in use.
    in_use: usize,
    /// Waiting calls by flow, each a channel that hands over a seat.
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    /// Flows with waiting calls, in the order they are served.
    turn: VecDeque<String>,
    /// Calls queued (including ones that gave up and are skipped when reached).
    queued: usize,
}

impl LevelState {
    /// Drops waiting calls whose caller gave up.
    fn purge_abandoned(&mut self) {
        for queue in self.waiting.values_mut() {
            queue.retain(|tx| !tx.is_closed());
        }
        self.waiting.retain(|_, q| !q.is_empty());
        let waiting = &self.waiting;
        self.turn.retain(|f| waiting.contains_key(f));
        self.queued = self.waiting.values().map(VecDeque::len).sum();
    }
}

struct Level {
    name: &'static str,
    seats: usize,
    queue_limit: usize,
    state: Mutex<LevelState>,
}

/// The server's flow control. Cheap to share (`Arc`).
pub struct FlowControl {
    levels: Vec<Level>,
    max_wait: Duration,
}

/// A seat held while a call runs; returned (to the next waiting flow) on drop.
pub struct Seat {
    control: Option<(Arc<FlowControl>, usize)>,
    kind: &'static str,
}

impl FlowControl {
    /// `seats` shared by the levels in proportion to their shares (at least one each).
    pub fn new(seats: usize, max_wait: Duration) -> Arc<FlowControl> {
        let total: usize = LEVELS.iter().map(|l| l.shares).sum();
        Arc::new(FlowControl {
            levels: LEVELS
                .iter()
                .map(|l| {
                    let seats = (seats * l.shares / total).max(1);
                    Level {
                        name: l.name,
                        seats,
                        queue_limit: seats * 4,
                        state: Mutex::new(LevelState::default()),
                    }
                })
                .collect(),
            max_wait,
        })
    }

    /// Seats of every level together.
    pub fn total_seats(&self) -> usize {
        self.levels.iter().map(|l| l.seats).sum()
    }

    /// Seats of a level (for tests and docs).
    pub fn seats_of(&self, level: &str) -> Option<usize> {
        self.levels
            .iter()
            .find(|l| l.name == level)
            .map(|l| l.seats)
    }

    /// Waits for a seat for a call of `user`; 429 when its level is saturated.
    pub async fn admit(
        self: &Arc<Self>,
        user: &UserInfo,
        verb: Verb,
        req: &Request,
    ) -> Result<Seat, Status> {
        let level = classify(user, verb, req);
        let kind = request_kind(verb);
        let Some(index) = self.levels.iter().position(|l| l.name == level) else {
            dispatched(EXEMPT);
            return Ok(Seat::exempt(kind));
        };
        let l = &self.levels[index];
        let rx = {
            let mut s = l.state.lock().unwrap_or_else(|e| e.into_inner());
            if s.in_use < l.seats && s.queued > 0 {
                // A free seat with calls queued: those calls gave up (time-out) before a seat
                // came to them. Forget them rather than queue behind them.
                s.purge_abandoned();
            }
            if s.in_use < l.seats && s.queued == 0 {
                s.in_use += 1;
                drop(s);
                dispatched(l.name);
                return Ok(self.seat(index, kind));
            }
            let full = |s: &LevelState| {
                s.queued >= l.queue_limit
                    || s.waiting.get(&user.name).map_or(0, VecDeque::len) >= FLOW_QUEUE_LIMIT
            };
            if full(&s) {
                // Callers that gave up still count until a freed seat reaches them: forget
                // them before refusing anyone.
                s.purge_abandoned();
            }
            if full(&s) {
                drop(s);
                return Err(rejected(l.name, "queue-full"));
            }
            let (tx, rx) = oneshot::channel();
            let queue = s.waiting.entry(user.name.clone()).or_default();
            queue.push_back(tx);
            if queue.len() == 1 {
                s.turn.push_back(user.name.clone());
            }
            s.queued += 1;
            gauge("apiserver_flowcontrol_current_inqueue_requests", l.name).set(s.queued as f64);
            rx
        };
        let mut waiting = Waiting {
            rx: Some(rx),
            control: self.clone(),
            index,
        };
        let handed = tokio::time::timeout(self.max_wait, waiting.rx.as_mut().unwrap()).await;
        let rx = waiting.rx.take().unwrap();
        if !matches!(handed, Ok(Ok(()))) {
            // Gave up; a seat handed over at the very last moment is still ours.
            let mut rx = rx;
            rx.close();
            if rx.try_recv().is_err() {
                return Err(rejected(l.name, "time-out"));
            }
        }
        dispatched(l.name);
        Ok(self.seat(index, kind))
    }

    fn seat(self: &Arc<Self>, index: usize, kind: &'static str) -> Seat {
        let l = &self.levels[index];
        gauge("apiserver_flowcontrol_current_executing_seats", l.name)
            .set(l.state.lock().map(|s| s.in_use).unwrap_or(0) as f64);
        inflight(kind).inc();
        Seat {
            control: Some((self.clone(), index)),
            kind,
        }
    }

    /// Hands a freed seat to the next flow's oldest waiting call, or frees it.
    fn release(&self, index: usize) {
        let l = &self.levels[index];
        let mut s = l.state.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(flow) = s.turn.pop_front() {
            let Some(queue) = s.waiting.get_mut(&flow) else {
                continue;
            };
            let next = queue.pop_front();
            let more = !queue.is_empty();
            if more {
                s.turn.push_back(flow);
            } else {
                s.waiting.remove(&flow);
            }
            let Some(tx) = next else { continue };
            s.queued -= 1;
            if tx.send(()).is_ok() {
                gauge("apiserver_flowcontrol_current_inqueue_requests", l.name)
                    .set(s.queued as f64);
                return; // the seat goes on to that call
            }
        }
        s.in_use -= 1;
        gauge("apiserver_flowcontrol_current_inqueue_requests", l.name).set(s.queued as f64);
        gauge("apiserver_flowcontrol_current_executing_seats", l.name).set(s.in_use as f64);
    }
}

/// A call waiting for a seat. If the call is dropped while it waits (its client went away),
/// a seat already handed to it is passed on instead of being lost.
struct Waiting {
    rx: Option<oneshot::Receiver<()>>,
    control: Arc<FlowControl>,
    index: usize,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.control.release(self.index);
            }
        }
    }
}

impl Seat {
    fn exempt(kind: &'static str) -> Seat {
        inflight(kind).inc();
        Seat {
            control: None,
            kind,
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        inflight(self.kind).dec();
        if let Some((control, index)) = self.control.take() {
            control.release(index);
        }
    }
}

fn gauge(name: &'static str, level: &str) -> crate::metrics::Gauge {
    let help = match name {
        "apiserver_flowcontrol_current_inqueue_requests" => {
            "Calls waiting for a seat, by priority level."
        }
        _ => "Seats in use, by priority level.",
    };
    crate::metrics::gauge(name, help, &["priority_level"]).with(&[level])
}

fn inflight(kind: &str) -> crate::metrics::Gauge {
    crate::metrics::gauge(
        "apiserver_current_inflight_requests",
        "Calls being served, by kind (mutating or readOnly).",
        &["request_kind"],
    )
    .with(&[kind])
}

fn dispatched(level: &str) {
    crate::metrics::counter(
        "apiserver_flowcontrol_dispatched_requests_total",
        "Calls given a seat, by priority level.",
        &["priority_level"],
    )
    .inc(&[level]);
}

/// The 429 of a shed call, counted by level and reason (queue-full, time-out).
fn rejected(level: &str, why: &str) -> Status {
    crate::metrics::counter(
        "apiserver_flowcontrol_rejected_requests_total",
        "Calls refused with 429, by priority level and reason.",
        &["priority_level", "reason"],
    )
    .inc(&[level, why]);
    let mut s = Status::too_many_requests(format!(
        "too many requests, please try again later (priority level {level}: {why})"
    ));
    s.details = Some(StatusDetails {
        retry_after_seconds: Some(1),
        ..Default::default()
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn req(group: &str, resource: &str) -> Request {
        Request {
            group: group.into(),
            resource: resource.into(),
            ..Default::default()
        }
    }

    #[test]
    fn calls_are_classified_as_kube_bootstraps_them() {
        let node = user("system:node:n1", &["system:nodes", "system:authenticated"]);
        let sched = user("system:kube-scheduler", &["system:authenticated"]);
        let admin = user("admin", &["system:masters"]);
        let jane = user("jane", &["system:authenticated"]);
        let lease = req("coordination.k8s.io", "leases");
        assert_eq!(classify(&admin, Verb::Create, &req("", "pods")), EXEMPT);
        assert_eq!(classify(&node, Verb::Update, &lease), "node-high");
        assert_eq!(classify(&node, Verb::Patch, &req("", "nodes")), "node-high");
        assert_eq!(classify(&node, Verb::List, &req("", "pods")), "system");
        assert_eq!(classify(&sched, Verb::Update, &lease), "leader-election");
        assert_eq!(
            classify(&sched, Verb::Create, &req("", "pods")),
            "workload-high"
        );
        assert_eq!(
            classify(&jane, Verb::List, &req("", "pods")),
            "global-default"
        );
        let nobody = user("system:anonymous", &["system:unauthenticated"]);
        assert_eq!(classify(&nobody, Verb::List, &req("", "pods")), "catch-all");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_level_queues_fairly_across_flows_and_sheds_with_429() {
        let fc = FlowControl::new(LEVELS.iter().map(|l| l.shares).sum(), DEFAULT_MAX_WAIT);
        let seats = fc.seats_of("global-default").unwrap();
        assert_eq!(seats, 20);
        let (flooder, other) = (
            user("flooder", &["system:authenticated"]),
            user("other", &["system:authenticated"]),
        );
        let r = req("", "pods");
        let held: Vec<Seat> = {
            let mut v = Vec::new();
            for _ in 0..seats {
                v.push(fc.admit(&flooder, Verb::List, &r).await.unwrap());
            }
            v
        };
        // The flooder queues 50 more (its flow's limit); the 51st is refused at once.
        let mut queued = Vec::new();
        for _ in 0..FLOW_QUEUE_LIMIT {
            let (fc, u, r) = (fc.clone(), flooder.clone(), r.clone());
            queued.push(tokio::spawn(
                async move { fc.admit(&u, Verb::List, &r).await },
            ));
        }
        tokio::task::yield_now().await;
        let refused = fc.admit(&flooder, Verb::List, &r).await.err().unwrap();
        assert_eq!(
            (refused.code, refused.reason.as_str()),
            (429, "TooManyRequests")
        );
        assert_eq!(refused.details.unwrap().retry_after_seconds, Some(1));
        // Another user queued behind them is served on the first free seat, before the
        // flooder's 49 other waiting calls.
        let (fc2, o, r2) = (fc.clone(), other.clone(), r.clone());
        let theirs = tokio::spawn(async move { fc2.admit(&o, Verb::List, &r2).await });
        tokio::task::yield_now().await;
        let mut held = held;
        held.pop(); // one seat frees: the flooder's oldest waiter gets it (its turn came first)
        held.pop(); // the next goes to the other user
        let seat = tokio::time::timeout(Duration::from_millis(1), theirs)
            .await
            .expect("served on the second free seat")
            .unwrap();
        assert!(seat.is_ok());
        // Waiting past the limit is a 429 too.
        drop(seat);
        tokio::time::advance(DEFAULT_MAX_WAIT + Duration::from_millis(1)).await;
        let mut timed_out = 0;
        for q in queued {
            if let Err(s) = q.await.unwrap() {
                assert_eq!(s.code, 429);
                timed_out += 1;
            }
        }
        // A few got the seats freed meanwhile (each seat a finished call hands on); the rest
        // waited past the limit.
        assert!(timed_out >= FLOW_QUEUE_LIMIT - 10, "{timed_out}");
        drop(held);
        // Everything returned: the level is empty again.
        let s = fc
            .levels
            .iter()
            .find(|l| l.name == "global-default")
            .unwrap();
        let st = s.state.lock().unwrap();
        assert_eq!(st.in_use, 0, "every seat returned");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_dropped_after_its_seat_came_passes_the_seat_on() {
        let fc = FlowControl::new(LEVELS.iter().map(|l| l.shares).sum(), DEFAULT_MAX_WAIT);
        let seats = fc.seats_of("catch-all").unwrap();
        let nobody = user("system:anonymous", &["system:unauthenticated"]);
        let r = req("", "pods");
        let mut held = Vec::new();
        for _ in 0..seats {
            held.push(fc.admit(&nobody, Verb::Get, &r).await.unwrap());
        }
        // A call queues, a seat is handed to it, and it is dropped before it runs again.
        let mut waiting = Box::pin(fc.admit(&nobody, Verb::Get, &r));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        held.pop();
        drop(waiting);
        // The seat was passed on: a new call gets it at once.
        let again =
            tokio::time::timeout(Duration::from_millis(1), fc.admit(&nobody, Verb::Get, &r))
                .await
                .expect("the seat was not lost")
                .unwrap();
        drop(again);
        drop(held);
        let l = fc.levels.iter().find(|l| l.name == "catch-all").unwrap();
        assert_eq!(l.state.lock().unwrap().in_use, 0, "every seat returned");
    }

    #[tokio::test]
    async fn masters_are_exempt() {
        let fc = FlowControl::new(8, DEFAULT_MAX_WAIT);
        let admin = user("admin", &["system:masters"]);
        let r = req("", "pods");
        let mut seats = Vec::new();
        for _ in 0..1000 {
            seats.push(fc.admit(&admin, Verb::Create, &r).await.unwrap());
        }
    }
}
