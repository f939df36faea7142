//! The controller runtime every controller of the controller-manager is built on (kube-
//! runtime's `Controller` and client-go's workqueue are the references). A [`Reconciler`]
//! brings one object, named by its key, to its desired state and says what next
//! ([`Action`]); the [`Controller`] actor owns the [`queue::WorkQueue`], hands keys to the
//! reconciler (up to `workers` at once, never one key twice at once), requeues a key after
//! the delay it asked for, backs a failing key off exponentially, and reconciles only while
//! its replica leads (keys keep waiting meanwhile). Sources — informers ([`watch`]), timers,
//! other controllers — only send [`Enqueue`]. [`refs`] is the controller-ref manager.

pub mod queue;
pub mod refs;

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use tokio::sync::watch as leader;

use crate::client::{Informer, Notification};
use queue::WorkQueue;

/// The current instant on tokio's clock (which tests pause and advance), as the queue's
/// std `Instant`.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile the key again after this long (a deadline, a condition to re-check).
    Requeue(Duration),
    /// Nothing until the object, or something it watches, changes.
    AwaitChange,
}

impl Action {
    /// Reconcile again after `after`.
    pub fn requeue(after: Duration) -> Action {
        Action::Requeue(after)
    }

    /// Wait for a change.
    pub fn await_change() -> Action {
        Action::AwaitChange
    }
}

/// Why a reconcile failed: the key is retried with back-off.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(pub String);

impl From<crate::api::status::Status> for ReconcileError {
    fn from(e: crate::api::status::Status) -> Self {
        ReconcileError(format!("{} ({})", e.message, e.code))
    }
}

/// How one controller brings the object a key names to its desired state. Cloned into each
/// reconcile (hold `Cache`s and clients, which share).
pub trait Reconciler: Clone + Unpin + 'static {
    /// Reconciles `key` (`namespace/name`, or `name` for cluster-scoped objects). A key whose
    /// object is gone is normal: do what its absence asks for, usually nothing.
    fn reconcile(&self, key: String) -> LocalBoxFuture<'static, Result<Action, ReconcileError>>;
}

/// Asks for keys to be reconciled.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Enqueue(pub Vec<String>);

/// Asks for a key to be reconciled after a delay.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct EnqueueAfter(pub String, pub Duration);

/// The queue's counts, for tests and debugging.
#[derive(Message)]
#[rtype(result = "QueueStats")]
pub struct Inspect;

/// What [`Inspect`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub struct QueueStats {
    /// Keys ready now.
    pub ready: usize,
    /// Keys waiting for their time.
    pub delayed: usize,
    /// Keys being reconciled.
    pub in_progress: usize,
    /// Reconciles finished so far.
    pub finished: u64,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Finished {
    key: String,
    result: Result<Action, ReconcileError>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Kick;

/// Runs a [`Reconciler`] over a work queue while `leading` is true.
pub struct Controller<R: Reconciler> {
    name: &'static str,
    reconciler: R,
    queue: WorkQueue,
    leading: leader::Receiver<bool>,
    workers: usize,
    running: usize,
    finished: u64,
    wake: Option<(Instant, SpawnHandle)>,
    depth: crate::metrics::Gauge,
    keep: Vec<Box<dyn std::any::Any>>,
}

impl<R: Reconciler> Controller<R> {
    /// A controller named `name` (its metrics label and logs) running `reconciler` one key at
    /// a time while `leading` is true.
    pub fn new(name: &'static str, reconciler: R, leading: leader::Receiver<bool>) -> Self {
        Controller {
            name,
            reconciler,
            queue: WorkQueue::new(),
            leading,
            workers: 1,
            running: 0,
            finished: 0,
            wake: None,
            depth: crate::metrics::gauge(
                "workqueue_depth",
                "Keys waiting in a controller's queue, by controller.",
                &["name"],
            )
            .with(&[name]),
            keep: Vec::new(),
        }
    }

    /// Reconciles up to `n` keys at once (kube's `--concurrent-*-syncs`).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Keeps `thing` (an informer, a handle) alive as long as the controller.
    pub fn keep(&mut self, thing: impl std::any::Any) {
        self.keep.push(Box::new(thing));
    }

    /// Starts reconciles while leading and workers are free, then sets the wake-up for the
    /// earliest delayed key.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = now();
        if *self.leading.borrow() {
            while self.running < self.workers {
                let Some(key) = self.queue.take(now) else {
                    break;
                };
                self.running += 1;
                let work = self.reconciler.reconcile(key.clone());
                let addr = ctx.address();
                actix::spawn(async move {
                    let result = work.await;
                    addr.do_send(Finished { key, result });
                });
            }
        }
        self.depth.set(self.queue.len() as f64);
        let due = self.queue.next_due();
        if self.wake.as_ref().map(|(at, _)| *at) != due {
            if let Some((_, handle)) = self.wake.take() {
                ctx.cancel_future(handle);
            }
            if let Some(at) = due {
                let handle = ctx.run_later(at.saturating_duration_since(now), |c, ctx| {
                    c.wake = None;
                    c.pump(ctx);
                });
                self.wake = Some((at, handle));
            }
        }
    }
}

impl<R: Reconciler> Actor for Controller<R> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Leadership gained: the keys that waited run.
        let mut leading = self.leading.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            while leading.changed().await.is_ok() {
                addr.do_send(Kick);
            }
        });
    }
}

impl<R: Reconciler> Handler<Enqueue> for Controller<R> {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        for key in &msg.0 {
            self.queue.add(key);
        }
        self.pump(ctx);
    }
}

impl<R: Reconciler> Handler<EnqueueAfter> for Controller<R> {
    type Result = ();

    fn handle(&mut self, msg: EnqueueAfter, ctx: &mut Context<Self>) {
        let now = now();
        self.queue.add_at(&msg.0, now + msg.1, now);
        self.pump(ctx);
    }
}

impl<R: Reconciler> Handler<Kick> for Controller<R> {
    type Result = ();

    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        self.pump(ctx);
    }
}

impl<R: Reconciler> Handler<Finished> for Controller<R> {
    type Result = ();

    fn handle(&mut self, msg: Finished, ctx: &mut Context<Self>) {
        self.running -= 1;
        self.finished += 1;
        self.queue.done(&msg.key);
        let now = now();
        match msg.result {
            Ok(Action::AwaitChange) => self.queue.forget(&msg.key),
            Ok(Action::Requeue(after)) => {
                self.queue.forget(&msg.key);
                self.queue.add_at(&msg.key, now + after, now);
            }
            Err(e) => {
                let wait = self.queue.failed(&msg.key);
                tracing::debug!(controller = self.name, key = %msg.key, error = %e, retry_in = ?wait, "reconcile failed");
                crate::metrics::counter(
                    "controller_reconcile_errors_total",
                    "Reconciles that failed (retried with back-off), by controller.",
                    &["name"],
                )
                .inc(&[self.name]);
                self.queue.add_at(&msg.key, now + wait, now);
            }
        }
        self.pump(ctx);
    }
}

impl<R: Reconciler> Handler<Inspect> for Controller<R> {
    type Result = QueueStats;

    fn handle(&mut self, _: Inspect, _: &mut Context<Self>) -> QueueStats {
        QueueStats {
            ready: self.queue.len(),
            delayed: self.queue.delayed(),
            in_progress: self.queue.in_progress(),
            finished: self.finished,
        }
    }
}

/// Forwards `informer`'s notifications to `to` as the keys `keys` maps each to (nothing for
/// an empty list); returns the informer, to be kept alive.
pub fn watch<R, F>(mut informer: Informer, to: Addr<Controller<R>>, keys: F) -> Informer
where
    R: Reconciler,
    F: Fn(&Notification) -> Vec<String> + 'static,
{
    let mut rx = std::mem::replace(
        &mut informer.notifications,
        tokio::sync::mpsc::unbounded_channel().1,
    );
    actix::spawn(async move {
        while let Some(n) = rx.recv().await {
            let k = keys(&n);
            if !k.is_empty() {
                to.do_send(Enqueue(k));
            }
        }
    });
    informer
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    /// Each key's scripted answers, in order.
    type Answers = HashMap<String, Vec<Result<Action, ReconcileError>>>;

    /// Records each reconcile's key and answers as scripted (per key, in order; then
    /// AwaitChange).
    #[derive(Clone, Default)]
    struct Script {
        seen: Rc<RefCell<Vec<String>>>,
        answers: Rc<RefCell<Answers>>,
    }

    impl Reconciler for Script {
        fn reconcile(
            &self,
            key: String,
        ) -> LocalBoxFuture<'static, Result<Action, ReconcileError>> {
            self.seen.borrow_mut().push(key.clone());
            let answer = {
                let mut a = self.answers.borrow_mut();
                let list = a.entry(key).or_default();
                if list.is_empty() {
                    Ok(Action::AwaitChange)
                } else {
                    list.remove(0)
                }
            };
            Box::pin(async move { answer })
        }
    }

    /// An actix System on a paused clock: time moves only when every task waits, so delays
    /// are exact and nothing sleeps for real.
    fn paused<F: std::future::Future<Output = ()>>(f: F) {
        actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap()
        })
        .block_on(f);
    }

    async fn settle<R: Reconciler>(c: &Addr<Controller<R>>) -> QueueStats {
        // Let spawned reconciles run and report back.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        c.send(Inspect).await.unwrap()
    }

    #[test]
    fn keys_are_deduplicated_and_each_reconciled_once() {
        paused(async {
            let s = Script::default();
            let (_tx, rx) = leader::channel(true);
            let c = Controller::new("t", s.clone(), rx).start();
            c.do_send(Enqueue(vec!["a".into(), "b".into(), "a".into()]));
            c.do_send(Enqueue(vec!["b".into()]));
            let st = settle(&c).await;
            assert_eq!(st.finished, 2);
            let mut seen = s.seen.borrow().clone();
            seen.sort();
            assert_eq!(seen, ["a", "b"]);
        });
    }

    #[test]
    fn requeue_after_runs_the_key_again_at_its_time() {
        paused(async {
            let s = Script::default();
            s.answers.borrow_mut().insert(
                "a".into(),
                vec![Ok(Action::requeue(Duration::from_secs(30)))],
            );
            let (_tx, rx) = leader::channel(true);
            let c = Controller::new("t", s.clone(), rx).start();
            c.do_send(Enqueue(vec!["a".into()]));
            let st = settle(&c).await;
            assert_eq!((st.finished, st.delayed), (1, 1));
            tokio::time::advance(Duration::from_secs(29)).await;
            assert_eq!(settle(&c).await.finished, 1, "not before its time");
            tokio::time::advance(Duration::from_secs(2)).await;
            let st = settle(&c).await;
            assert_eq!((st.finished, st.delayed), (2, 0));
            assert_eq!(*s.seen.borrow(), ["a", "a"]);
        });
    }

    #[test]
    fn failures_retry_with_growing_back_off_until_success() {
        paused(async {
            let s = Script::default();
            let fail = || Err(ReconcileError("boom".into()));
            s.answers
                .borrow_mut()
                .insert("a".into(), vec![fail(), fail(), fail()]);
            let (_tx, rx) = leader::channel(true);
            let c = Controller::new("t", s.clone(), rx).start();
            c.do_send(Enqueue(vec!["a".into()]));
            assert_eq!(settle(&c).await.finished, 1);
            // 5 ms, then 10 ms, then 20 ms.
            tokio::time::advance(Duration::from_millis(5)).await;
            assert_eq!(settle(&c).await.finished, 2);
            tokio::time::advance(Duration::from_millis(9)).await;
            assert_eq!(settle(&c).await.finished, 2, "the second wait is longer");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(settle(&c).await.finished, 3);
            tokio::time::advance(Duration::from_millis(20)).await;
            let st = settle(&c).await;
            assert_eq!(
                (st.finished, st.delayed),
                (4, 0),
                "succeeded: no more retries"
            );
        });
    }

    #[test]
    fn nothing_is_reconciled_without_leadership_and_waiting_keys_run_when_it_comes() {
        paused(async {
            let s = Script::default();
            let (tx, rx) = leader::channel(false);
            let c = Controller::new("t", s.clone(), rx).start();
            c.do_send(Enqueue(vec!["a".into(), "b".into()]));
            let st = settle(&c).await;
            assert_eq!((st.finished, st.ready), (0, 2), "a standby only queues");
            tx.send(true).unwrap();
            let st = settle(&c).await;
            assert_eq!((st.finished, st.ready), (2, 0));
            // Lost again: new keys wait.
            tx.send(false).unwrap();
            settle(&c).await;
            c.do_send(Enqueue(vec!["c".into()]));
            let st = settle(&c).await;
            assert_eq!((st.finished, st.ready), (2, 1));
        });
    }

    #[test]
    fn one_key_is_never_reconciled_twice_at_once() {
        paused(async {
            #[derive(Clone, Default)]
            struct Slow {
                at_once: Rc<RefCell<(usize, usize)>>,
            }
            impl Reconciler for Slow {
                fn reconcile(
                    &self,
                    _: String,
                ) -> LocalBoxFuture<'static, Result<Action, ReconcileError>> {
                    let c = self.at_once.clone();
                    Box::pin(async move {
                        {
                            let mut c = c.borrow_mut();
                            c.0 += 1;
                            c.1 = c.1.max(c.0);
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        c.borrow_mut().0 -= 1;
                        Ok(Action::AwaitChange)
                    })
                }
            }
            let s = Slow::default();
            let (_tx, rx) = leader::channel(true);
            let c = Controller::new("t", s.clone(), rx).workers(4).start();
            c.do_send(Enqueue(vec!["a".into()]));
            settle(&c).await;
            c.do_send(Enqueue(vec!["a".into()]));
            c.do_send(Enqueue(vec!["a".into()]));
            let st = settle(&c).await;
            assert_eq!((st.in_progress, st.ready), (1, 0), "{st:?}");
            tokio::time::advance(Duration::from_secs(1)).await;
            settle(&c).await;
            tokio::time::advance(Duration::from_secs(1)).await;
            let st = settle(&c).await;
            assert_eq!(st.finished, 2, "the second add ran after the first");
            assert_eq!(s.at_once.borrow().1, 1);
        });
    }
}
