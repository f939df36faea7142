//! Leader election on a Lease through the API server: of two candidates exactly one leads;
//! when the leader stops renewing, the other takes over within the lease duration.

mod common;

use std::time::{Duration, Instant};

use skiff::client::leader::{elect, ElectionTimings};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_takeover_within_the_lease_duration() {
    let cluster = Cluster::start();
    let timings = ElectionTimings {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
    };
    let a_client = cluster.client().await;
    let b_client = cluster.client().await;
    let a = elect(
        a_client.api("coordination.k8s.io", "leases", Some("kube-system")),
        "skiff-scheduler",
        "a",
        timings,
    );
    let b = elect(
        b_client.api("coordination.k8s.io", "leases", Some("kube-system")),
        "skiff-scheduler",
        "b",
        timings,
    );
    // A leader emerges; then, through three renewals of its Lease, never both lead at once
    // and never neither.
    wait_for(Duration::from_secs(10), "a leader", || {
        let any = *a.is_leader.borrow() || *b.is_leader.borrow();
        async move { any.then_some(()) }
    })
    .await;
    let leases = cluster
        .client()
        .await
        .api("coordination.k8s.io", "leases", Some("kube-system"));
    let renew_time = || {
        let leases = leases.clone();
        async move { leases.get("skiff-scheduler").await.unwrap()["spec"]["renewTime"].clone() }
    };
    let (mut last, mut renewals) = (renew_time().await, 0);
    let until = Instant::now() + Duration::from_secs(10);
    while renewals < 3 {
        let (la, lb) = (*a.is_leader.borrow(), *b.is_leader.borrow());
        assert!(!(la && lb), "two leaders at once");
        assert!(la || lb, "no leader");
        assert!(
            Instant::now() < until,
            "the Lease was renewed {renewals} times in 10 s"
        );
        let now = renew_time().await;
        if now != last {
            (last, renewals) = (now, renewals + 1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (leader, follower) = if *a.is_leader.borrow() {
        (a, b)
    } else {
        (b, a)
    };
    let stopped = Instant::now();
    drop(leader);
    let mut follower_rx = follower.is_leader.clone();
    tokio::time::timeout(Duration::from_secs(5), follower_rx.wait_for(|l| *l))
        .await
        .expect("the follower takes over")
        .unwrap();
    let took = stopped.elapsed();
    assert!(
        took <= Duration::from_millis(2600),
        "took over in {took:?}, lease is 2 s"
    );
    let lease = cluster
        .client()
        .await
        .api("coordination.k8s.io", "leases", Some("kube-system"))
        .get("skiff-scheduler")
        .await
        .unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}
