//! # qrlogin
//!
//! A website shows a QR code; a phone scans it and confirms; the browser
//! waiting on a WebSocket (or a long-poll) is told at once and receives a
//! signed JWT.
//!
//! A tour, in the order a login flows through it:
//! - [`config`]: the command line and typed settings from the environment /
//!   `.env` / flags.
//! - [`ticket`]: ids, secrets and the state machine (pure).
//! - [`store`]: where tickets live (`memory`, `redis`) behind one trait.
//! - [`hub`]: wakes the waiters of a ticket after a change; the store holds
//!   the truth, the hub only wakes.
//! - [`redis`]: the connection to Redis the Redis store and hub share.
//! - [`engine`]: store + hub + token signing: every change in one place.
//! - [`token`]: JWT signing, verification and JWKS.
//! - [`qr`]: PNG and SVG images of a ticket's QR content.
//! - [`providers`]: the phone sides (WeChat flavours).
//! - [`oidc`]: qrlogin as an OpenID Provider over the same logins.
//! - [`web`]: the HTTP edge: JSON API, WebSocket, long-poll, pages, ops.
//! - [`json`]: JSON text written by hand where a confirm pays for it.
//! - [`telemetry`]: the metrics recorder `/metrics` renders.
//! - [`throttle`]: at most one log line a second for failures that come
//!   in floods (an outage, an overload).
//! - [`app`]: building and running it all; `main.rs` is a thin shell.

pub mod app;
pub mod config;
pub mod engine;
pub mod error;
pub mod hub;
pub mod in_progress;
pub mod ip;
pub mod json;
pub mod oidc;
pub mod providers;
pub mod qr;
pub mod redis;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod throttle;
pub mod ticket;
pub mod token;
pub mod useragent;
pub mod web;

pub use app::Application;
pub use config::Settings;
