//! `dev`: the built-in phone page, for development. Opening the page is
//! the scan, by whichever phone opens it first; that phone may then confirm
//! under any name it types. Nothing checks who anyone is.

use std::sync::Arc;

use crate::engine::{Engine, Result};
use crate::ticket::{Identity, Status, Ticket, UserInfo, now_ms};

/// What opening a `dev` ticket's page shows.
#[derive(Debug)]
pub enum Opened {
    /// Scanned by this phone: ask to confirm.
    Confirm(Arc<Ticket>),
    /// Another phone scanned it.
    Taken,
    /// Gone while we looked.
    Expired,
    /// Finished (or expired): its final page.
    Final(Arc<Ticket>),
}

/// Open `ticket` on the phone bound as `binding`: a pending ticket is
/// scanned by it.
pub async fn open(engine: &Engine, ticket: Arc<Ticket>, binding: &str) -> Opened {
    let ticket = match ticket.status_at(now_ms()) {
        Status::Pending => match engine
            .scan(&ticket.id, Some(binding.to_owned()), None, None)
            .await
        {
            Ok(t) => t,
            // Someone else got there first; show what they left.
            Err(_) => match engine.get(&ticket.id).await {
                Ok(Some(t)) => t,
                _ => return Opened::Expired,
            },
        },
        _ => ticket,
    };
    match ticket.status_at(now_ms()) {
        Status::Scanned if ticket.scanned_by.as_deref() == Some(binding) => Opened::Confirm(ticket),
        Status::Scanned | Status::Pending => Opened::Taken,
        _ => Opened::Final(ticket),
    }
}

/// Confirm `ticket` from the phone bound as `binding`, as `name` (at most
/// 64 characters; none or blank: "dev user").
pub async fn confirm(
    engine: &Engine,
    ticket: &Ticket,
    binding: String,
    name: Option<&str>,
) -> Result<Arc<Ticket>> {
    let name: String = name.unwrap_or("").trim().chars().take(64).collect();
    let name = if name.is_empty() {
        "dev user".to_owned()
    } else {
        name
    };
    let subject = Identity {
        sub: format!("dev:{name}"),
        idp: "dev".into(),
        ..Identity::default()
    };
    let user = UserInfo {
        nickname: Some(name),
        avatar: None,
    };
    engine
        .confirm(&ticket.id, Some(binding), &subject, Some(user), None)
        .await
}
