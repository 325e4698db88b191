//! Which language a page speaks: `?lang=` first, then `Accept-Language`.

use axum::http::{HeaderMap, header};

use crate::templates::Lang;

/// The page language from `?lang=` and `Accept-Language`.
pub fn page_lang(query: Option<&str>, headers: &HeaderMap) -> Lang {
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    Lang::choose(query, accept)
}
