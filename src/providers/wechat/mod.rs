//! WeChat providers.

pub mod crypto;
pub mod events;
