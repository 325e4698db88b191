//! The behaviour every `Hub` must have, as one suite run against each
//! engine: `suite!(make_pair_expression)` expands to one test per claim.
//! `make` gives two hubs of one deployment (the same hub twice in one
//! process; two instances' hubs on one Redis), so every claim about a
//! publish is checked across instances too. Public (hidden) so the Redis
//! tests outside the crate run it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use super::{Hub, Waiter};
use crate::ticket::TicketId;

/// Two handles of one deployment: changes are published on `a`, waited for
/// on `b`.
pub type Pair = (Arc<dyn Hub>, Arc<dyn Hub>);

/// Generous for a wake-up that must come (pub/sub on a busy machine).
const COMES: Duration = Duration::from_secs(5);
/// How long a wake-up that must not come is given.
const STAYS_AWAY: Duration = Duration::from_millis(200);

/// Both hubs hear changes (a Redis hub subscribed), within a few seconds,
/// and the re-read that follows a subscription is over: it may wake any
/// waiter once (an extra read, allowed), which would blur the claims that
/// a waiter is *not* woken.
pub async fn ready(pair: &Pair) {
    let deadline = tokio::time::Instant::now() + COMES;
    while !(pair.0.live() && pair.1.live()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hubs never became live"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn wakes(w: &mut Waiter) {
    tokio::time::timeout(COMES, w.changed())
        .await
        .expect("the waiter was woken");
}

async fn stays_asleep(w: &mut Waiter) {
    assert!(
        tokio::time::timeout(STAYS_AWAY, w.changed()).await.is_err(),
        "the waiter was woken for nothing"
    );
}

pub async fn a_publish_wakes_every_waiter_of_that_ticket_only(pair: Pair) {
    ready(&pair).await;
    let (a, b) = pair;
    let (id, other) = (TicketId::generate(), TicketId::generate());
    let (mut here, mut there1, mut there2, mut unrelated) =
        (a.watch(&id), b.watch(&id), b.watch(&id), b.watch(&other));
    a.publish(&id).await;
    wakes(&mut here).await;
    wakes(&mut there1).await;
    wakes(&mut there2).await;
    stays_asleep(&mut unrelated).await;
}

pub async fn a_wake_before_the_wait_is_not_lost(pair: Pair) {
    ready(&pair).await;
    let (a, b) = pair;
    let id = TicketId::generate();
    let mut w = b.watch(&id);
    a.publish(&id).await;
    // Not waiting yet when the wake-up came: the next wait sees it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    wakes(&mut w).await;
}

pub async fn each_publish_wakes_again(pair: Pair) {
    ready(&pair).await;
    let (a, b) = pair;
    let id = TicketId::generate();
    let mut w = b.watch(&id);
    for _ in 0..3 {
        a.publish(&id).await;
        wakes(&mut w).await;
    }
    stays_asleep(&mut w).await;
}

pub async fn waiters_are_counted_per_ticket_and_leave_when_dropped(pair: Pair) {
    ready(&pair).await;
    let (a, b) = pair;
    let id = TicketId::generate();
    let (w1, w2) = (b.watch(&id), b.watch(&id));
    assert_eq!(b.waiters_of(&id), 2);
    assert_eq!(b.waiters_of(&TicketId::generate()), 0);
    drop(w1);
    assert_eq!(b.waiters_of(&id), 1);
    drop(w2);
    assert_eq!(b.waiters_of(&id), 0);
    // A publish with nobody waiting is fine, and a later waiter starts
    // from the present (it is not woken by the past).
    a.publish(&id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = b.watch(&id);
    stays_asleep(&mut late).await;
}

pub async fn many_tickets_each_wake_their_own(pair: Pair) {
    ready(&pair).await;
    let (a, b) = pair;
    let ids: Vec<TicketId> = (0..50).map(|_| TicketId::generate()).collect();
    let mut waiters: Vec<Waiter> = ids.iter().map(|id| b.watch(id)).collect();
    for id in ids.iter().step_by(2) {
        a.publish(id).await;
    }
    for (n, w) in waiters.iter_mut().enumerate() {
        if n % 2 == 0 {
            wakes(w).await;
        }
    }
    for w in waiters.iter_mut().skip(1).step_by(2) {
        assert!(
            tokio::time::timeout(Duration::from_millis(5), w.changed())
                .await
                .is_err(),
            "an unpublished ticket was woken"
        );
    }
}

/// Waking all wakes every waiter of this instance, whatever its ticket,
/// and none of another instance's: a stopping instance closes its own
/// sockets only.
pub async fn wake_all_wakes_every_local_waiter_and_no_other_instances(pair: Pair) {
    ready(&pair).await;
    let (a, b) = pair;
    let (one, two) = (TicketId::generate(), TicketId::generate());
    let (mut a1, mut a2) = (a.watch(&one), a.watch(&two));
    let mut b1 = b.watch(&one);
    a.wake_all();
    wakes(&mut a1).await;
    wakes(&mut a2).await;
    if !Arc::ptr_eq(&a, &b) {
        stays_asleep(&mut b1).await;
    }
}

/// Expands to one `#[tokio::test]` per claim; `$make` builds a fresh
/// `Pair` (it may `.await`, and `return` to skip).
#[macro_export]
macro_rules! hub_conformance_suite {
    ($make:expr) => {
        $crate::hub_conformance_suite!(@each $make;
            a_publish_wakes_every_waiter_of_that_ticket_only, a_wake_before_the_wait_is_not_lost,
            each_publish_wakes_again, waiters_are_counted_per_ticket_and_leave_when_dropped,
            many_tickets_each_wake_their_own,
            wake_all_wakes_every_local_waiter_and_no_other_instances);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let pair: $crate::hub::conformance::Pair = $make;
                $crate::hub::conformance::$name(pair).await;
            }
        )*
    };
}
pub use hub_conformance_suite as suite;
