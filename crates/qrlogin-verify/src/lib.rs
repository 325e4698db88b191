//! Verifying qrlogin's tokens, as the service itself does and as a product
//! backend does with nothing but the published JWKS.
//!
//! ```toml
//! qrlogin-verify = { git = "<this repository>" }   # or path = "…/crates/qrlogin-verify"
//! ```
//!
//! ```no_run
//! use qrlogin_verify::{JwksSource, JwksVerifier};
//!
//! # async fn handler(token: &str) -> Result<(), qrlogin_verify::VerifyError> {
//! // One per process: it holds the cached keys.
//! let verifier = JwksVerifier::new(
//!     JwksSource::Url("https://login.example.com/.well-known/jwks.json".into()),
//!     "https://login.example.com", // QRLOGIN_JWT_ISSUER
//!     "qrlogin",                   // QRLOGIN_JWT_AUDIENCE
//! );
//! let claims = verifier.verify(token).await?;
//! println!("{} logged in", claims["sub"]);
//! # Ok(())
//! # }
//! ```
//!
//! - [`Verifier`]: the rules over a set of keys (algorithm pinned per `kid`,
//!   every registered claim required). The service builds one from its own
//!   keys.
//! - [`JwksVerifier`]: the same rules over a fetched, cached JWKS, refetched
//!   when a token names a key it does not hold — at most once per interval,
//!   whatever the tokens say.

mod jwks;
mod verifier;

pub use jsonwebtoken::{Algorithm, DecodingKey};
pub use jwks::{JwksSource, JwksVerifier, verifier_from_jwks};
pub use verifier::{LEEWAY_SECS, MAX_TOKEN_LEN, REQUIRED_CLAIMS, Verifier, VerifyError, alg_name};
