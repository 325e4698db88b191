//! The behaviour every `TicketStore` must have, as one suite run against
//! each engine: `suite!(make_store_expression)` expands to one test per
//! claim. Public (hidden) so the Redis tests outside the crate run it too.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use super::{StoreError, TicketStore};
use crate::ticket::{
    Change, FINAL_STATE_GRACE_MS, IssuedToken, Provider, Requester, SealTo, Secret, Status, Ticket,
    TicketId, TransitionError, UserInfo, now_ms,
};
use crate::token::seal::Opener;

/// A fresh pending ticket living `ttl_ms`.
pub fn ticket(ttl_ms: u64) -> Ticket {
    let now = now_ms();
    Ticket {
        id: TicketId::generate(),
        secret_hash: Secret::generate().hash(),
        provider: Provider::Dev,
        status: Status::Pending,
        created_at: now,
        expires_at: now + ttl_ms,
        updated_at: now,
        qr_content: "http://127.0.0.1/m/x".into(),
        requester: Requester {
            ip: "127.0.0.1".into(),
            user_agent: "conformance".into(),
        },
        user: None,
        scanned_by: None,
        identity: None,
        seal_to: Some(SealTo::Secret(
            Opener::from_secret("conformance").unwrap().public(),
        )),
        token: None,
    }
}

fn confirm() -> Change {
    confirm_with("jwt")
}

/// A trusted confirm carrying `token`.
fn confirm_with(token: &str) -> Change {
    Change::Confirm {
        by: None,
        user: None,
        token: IssuedToken {
            token: token.into(),
            expires_in: 60,
        },
    }
}

pub async fn inserted_ticket_reads_back_whole(store: &dyn TicketStore) {
    let t = ticket(60_000);
    store.insert(&t).await.unwrap();
    assert_eq!(store.get(&t.id).await.unwrap().as_deref(), Some(&t));
}

pub async fn unknown_ticket_is_none(store: &dyn TicketStore) {
    assert_eq!(store.get(&TicketId::generate()).await.unwrap(), None);
    let r = store.transition(&TicketId::generate(), confirm()).await;
    assert_eq!(r, Err(StoreError::NotFound));
}

pub async fn ticket_is_gone_after_its_expiry(store: &dyn TicketStore) {
    let t = ticket(300);
    store.insert(&t).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get(&t.id).await.unwrap(), None);
    assert_eq!(
        store.transition(&t.id, confirm()).await,
        Err(StoreError::NotFound)
    );
}

pub async fn transitions_follow_the_state_machine(store: &dyn TicketStore) {
    let t = ticket(60_000);
    store.insert(&t).await.unwrap();
    let user = Some(UserInfo {
        nickname: Some("Ann".into()),
        avatar: None,
    });
    let scanned = store
        .transition(
            &t.id,
            Change::Scan {
                by: Some("phone".into()),
                user: user.clone(),
                identity: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (scanned.status, scanned.user.clone()),
        (Status::Scanned, user)
    );
    let deny_by_other = store
        .transition(
            &t.id,
            Change::Deny {
                by: Some("other".into()),
            },
        )
        .await;
    assert_eq!(
        deny_by_other,
        Err(StoreError::Transition(TransitionError::NotScanner))
    );
    let confirmed = store.transition(&t.id, confirm()).await.unwrap();
    assert_eq!(confirmed.status, Status::Confirmed);
    assert_eq!(store.get(&t.id).await.unwrap(), Some(confirmed));
    let again = store.transition(&t.id, Change::Deny { by: None }).await;
    assert_eq!(
        again,
        Err(StoreError::Transition(TransitionError::Invalid(
            Status::Confirmed,
            Status::Denied
        )))
    );
}

pub async fn a_final_state_keeps_its_expiry_or_the_grace(store: &dyn TicketStore) {
    // Confirmed with more than the grace left: the ticket's own end stands.
    let long = ticket(FINAL_STATE_GRACE_MS + 60_000);
    store.insert(&long).await.unwrap();
    let done = store.transition(&long.id, confirm()).await.unwrap();
    assert_eq!(done.expires_at, long.expires_at);
    assert_eq!(
        store.get(&long.id).await.unwrap().map(|t| t.expires_at),
        Some(long.expires_at)
    );
    // Confirmed in its last moments: still readable past its own end, so a
    // late re-read finds `confirmed`, not a vanished ticket.
    let t = ticket(500);
    store.insert(&t).await.unwrap();
    store.transition(&t.id, confirm()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        store.get(&t.id).await.unwrap().map(|t| t.status),
        Some(Status::Confirmed)
    );
}

pub async fn racing_changes_have_exactly_one_winner(store: Arc<dyn TicketStore>) {
    let t = ticket(60_000);
    store.insert(&t).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (store, id) = (store.clone(), t.id.clone());
        let change = if i % 2 == 0 {
            confirm()
        } else {
            Change::Deny { by: None }
        };
        tasks.push(tokio::spawn(
            async move { store.transition(&id, change).await },
        ));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => winners += 1,
            Err(StoreError::Transition(TransitionError::Invalid(_, _))) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(winners, 1);
}

pub async fn put_new_sets_once_until_its_ttl(store: &dyn TicketStore) {
    let key = format!("conformance:{}", TicketId::generate());
    assert!(
        store
            .put_new(&key, "a", Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_new(&key, "b", Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert_eq!(store.get_value(&key).await.unwrap().as_deref(), Some("a"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get_value(&key).await.unwrap(), None);
    assert!(
        store
            .put_new(&key, "c", Duration::from_secs(5))
            .await
            .unwrap()
    );
}

pub async fn put_replaces_and_remove_deletes(store: &dyn TicketStore) {
    let key = format!("conformance:{}", TicketId::generate());
    store.put(&key, "a", Duration::from_secs(5)).await.unwrap();
    store.put(&key, "b", Duration::from_secs(5)).await.unwrap();
    assert_eq!(store.get_value(&key).await.unwrap().as_deref(), Some("b"));
    store.remove_value(&key).await.unwrap();
    assert_eq!(store.get_value(&key).await.unwrap(), None);
}

/// The first JWS (`header.payload.signature`, the header a base64url JSON
/// object with `alg`) anywhere in `text`, in whatever it is embedded. A
/// compact JWE does not count: its header is followed by an empty
/// encrypted key, and its other parts are random bytes, not a JOSE header.
pub fn find_jws(text: &str) -> Option<String> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let is_header = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v.get("alg").is_some())
    };
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .find_map(|run| {
            let parts: Vec<&str> = run.split('.').collect();
            parts.windows(3).find_map(|w| {
                (w.iter().all(|p| !p.is_empty()) && is_header(w[0])).then(|| w.join("."))
            })
        })
}

/// A real-looking signed token, so that a store keeping it would be caught.
pub const SAMPLE_JWS: &str =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlLWJ5dGVz";

pub async fn a_confirmed_ticket_holds_no_presentable_token(store: &dyn TicketStore) {
    assert_eq!(find_jws(SAMPLE_JWS).as_deref(), Some(SAMPLE_JWS));
    let t = ticket(60_000);
    store.insert(&t).await.unwrap();
    let change = confirm_with(SAMPLE_JWS);
    let done = store.transition(&t.id, change).await.unwrap();
    let kept = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(kept, done);
    let text = format!("{} {kept:?}", serde_json::to_string(&*kept).unwrap());
    assert_eq!(find_jws(&text), None, "{text}");
    // What is kept opens with the secret's key, and only with it.
    let jwe = kept.token.as_ref().unwrap().sealed.jwe().unwrap();
    let opened = Opener::from_secret("conformance")
        .unwrap()
        .open(jwe)
        .unwrap();
    assert_eq!(opened, SAMPLE_JWS.as_bytes());
    assert!(Opener::from_secret("other").unwrap().open(jwe).is_err());
}

/// A token sealed with the process's own key is kept only by a store that
/// lives inside the process; any other refuses the ticket rather than keep
/// a token no other instance could open.
pub async fn a_ticket_sealed_in_process_stays_in_process(store: &dyn TicketStore) {
    let t = Ticket {
        seal_to: Some(SealTo::Process),
        ..ticket(60_000)
    };
    if !store.in_process() {
        assert!(store.insert(&t).await.is_err());
        assert_eq!(store.get(&t.id).await.unwrap(), None);
        return;
    }
    store.insert(&t).await.unwrap();
    let change = confirm_with(SAMPLE_JWS);
    store.transition(&t.id, change).await.unwrap();
    let kept = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(find_jws(&format!("{kept:?}")), None, "{kept:?}");
    let opener = Opener::from_secret("any").unwrap();
    assert_eq!(kept.open_token(&opener).unwrap().unwrap(), SAMPLE_JWS);
}

/// Exact counts: every store the suite makes is its own (a fresh memory
/// store, a Redis key prefix of its own), so nothing else adds to it.
pub async fn live_count_counts_inserted_tickets(store: &dyn TicketStore) {
    assert_eq!(store.live_count().await.unwrap(), 0, "a fresh store");
    for _ in 0..3 {
        store.insert(&ticket(60_000)).await.unwrap();
    }
    assert_eq!(store.live_count().await.unwrap(), 3);
    store.ping().await.unwrap();
}

/// Expands to one `#[tokio::test]` per claim; `$make` builds a fresh store
/// (it may `.await`).
#[macro_export]
macro_rules! store_conformance_suite {
    ($make:expr) => {
        $crate::store_conformance_suite!(@each $make;
            inserted_ticket_reads_back_whole, unknown_ticket_is_none, ticket_is_gone_after_its_expiry,
            transitions_follow_the_state_machine, a_final_state_keeps_its_expiry_or_the_grace,
            put_new_sets_once_until_its_ttl, put_replaces_and_remove_deletes,
            live_count_counts_inserted_tickets, a_confirmed_ticket_holds_no_presentable_token,
            a_ticket_sealed_in_process_stays_in_process);
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn racing_changes_have_exactly_one_winner() {
            let store: std::sync::Arc<dyn $crate::store::TicketStore> = std::sync::Arc::new($make);
            $crate::store::conformance::racing_changes_have_exactly_one_winner(store).await;
        }
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make;
                $crate::store::conformance::$name(&store).await;
            }
        )*
    };
}
pub use store_conformance_suite as suite;
