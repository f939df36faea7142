//! Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
//! several replicas of a component race for one Lease; the holder renews it every retry
//! period; the others take it over once they have seen it unchanged for a whole lease
//! duration (measured on their own clock, so clock skew between machines does not matter).
//! Every write is a compare-and-swap on the Lease's resourceVersion, so two replicas can
//! never both believe they acquired it.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Api;

/// Timing of an election (client-go's defaults are 15 s / 10 s / 2 s).
#[derive(Debug, Clone, Copy)]
pub struct ElectionTimings {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership.
    pub renew_deadline: Duration,
    /// How often everyone tries.
    pub retry_period: Duration,
}

impl Default for ElectionTimings {
    fn default() -> Self {
        ElectionTimings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A running election. `is_leader` says whether this replica leads now.
pub struct Election {
    /// True while this replica holds the Lease.
    pub is_leader: watch::Receiver<bool>,
    /// The election task; dropping the Election stops it (and with it the renewals).
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Election {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `metav1.MicroTime` of now.
fn micro_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Starts competing for Lease `name` (in the namespace of `leases`) as `identity`.
pub fn elect(leases: Api, name: &str, identity: &str, timings: ElectionTimings) -> Election {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(
        leases,
        name.to_string(),
        identity.to_string(),
        timings,
        tx,
    ));
    Election {
        is_leader: rx,
        task,
    }
}

async fn run(leases: Api, name: String, me: String, t: ElectionTimings, tx: watch::Sender<bool>) {
    // The record last seen, and when (on our clock) it last changed.
    let mut observed: Option<(Value, Instant)> = None;
    let mut last_renew = Instant::now();
    loop {
        let leading = *tx.borrow();
        // A round may not outlast the renew deadline: a leader whose answers are lost must
        // step down before its Lease expires, however the client retries inside the round.
        let budget = if leading {
            t.renew_deadline.saturating_sub(last_renew.elapsed())
        } else {
            t.renew_deadline
        };
        let round = tokio::time::timeout(
            budget.max(t.retry_period),
            try_acquire_or_renew(&leases, &name, &me, &t, &mut observed),
        )
        .await
        .unwrap_or_else(|_| {
            Err(crate::api::Status::timeout(
                "lease round past the renew deadline",
            ))
        });
        match round {
            Ok(true) => {
                last_renew = Instant::now();
                if !leading {
                    tracing::info!(lease = %name, identity = %me, "became leader");
                }
                tx.send_replace(true);
            }
            Ok(false) => {
                if leading {
                    tracing::warn!(lease = %name, identity = %me, "lost the lease to another holder");
                }
                tx.send_replace(false);
            }
            Err(e) => {
                tracing::debug!(lease = %name, error = %e, "lease update failed");
                if leading && last_renew.elapsed() > t.renew_deadline {
                    tracing::warn!(lease = %name, identity = %me, "could not renew within the deadline; stepping down");
                    tx.send_replace(false);
                }
            }
        }
        tokio::time::sleep(t.retry_period).await;
    }
}

/// One round: Ok(true) if we hold the Lease after it, Ok(false) if someone else does.
async fn try_acquire_or_renew(
    leases: &Api,
    name: &str,
    me: &str,
    t: &ElectionTimings,
    observed: &mut Option<(Value, Instant)>,
) -> Result<bool, crate::api::Status> {
    let now = micro_now();
    let duration = t.lease_duration.as_secs().max(1);
    let current = match leases.get(name).await {
        Ok(l) => l,
        Err(e) if e.code == 404 => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name},
                "spec": {"holderIdentity": me, "leaseDurationSeconds": duration,
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
            });
            let created = leases.create(&lease).await?;
            *observed = Some((created["spec"].clone(), Instant::now()));
            return Ok(true);
        }
        Err(e) => return Err(e),
    };
    let spec = current.get("spec").cloned().unwrap_or(json!({}));
    let changed = observed.as_ref().is_none_or(|(s, _)| *s != spec);
    if changed {
        *observed = Some((spec.clone(), Instant::now()));
    }
    let holder = spec
        .get("holderIdentity")
        .and_then(Value::as_str)
        .unwrap_or("");
    let held_for = Duration::from_secs(
        spec.get("leaseDurationSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(duration),
    );
    let seen_at = observed
        .as_ref()
        .map(|(_, at)| *at)
        .unwrap_or_else(Instant::now);
    let expired = holder.is_empty() || seen_at.elapsed() >= held_for;
    if holder != me && !expired {
        return Ok(false);
    }
    let mut next = current.clone();
    let transitions = spec
        .get("leaseTransitions")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    next["spec"]["renewTime"] = json!(now);
    next["spec"]["leaseDurationSeconds"] = json!(duration);
    if holder != me {
        next["spec"]["holderIdentity"] = json!(me);
        next["spec"]["acquireTime"] = json!(now);
        next["spec"]["leaseTransitions"] = json!(transitions + 1);
    }
    // The resourceVersion we read makes this a compare-and-swap: a racing replica gets 409.
    match leases.update(&next).await {
        Ok(updated) => {
            *observed = Some((updated["spec"].clone(), Instant::now()));
            Ok(true)
        }
        Err(e) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
