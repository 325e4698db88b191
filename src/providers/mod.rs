//! Phone sides other than the built-in dev page. Each provider learns who
//! scanned (an `Identity`) and binds the ticket to that phone; confirming
//! from the phone then signs a token for that identity.

pub mod wechat;

use crate::error::{Error, Result};
use crate::ticket::Ticket;
use crate::web::AppState;

/// Confirm `ticket` from the phone bound as `binding`, for the identity the
/// provider recorded at scan.
pub async fn confirm_from_phone(
    app: &AppState,
    ticket: &Ticket,
    binding: String,
) -> Result<Ticket> {
    let identity = ticket
        .identity
        .clone()
        .ok_or(Error::Forbidden("nobody scanned this ticket"))?;
    app.engine
        .confirm(&ticket.id, Some(binding), &identity, None, None)
        .await
}
