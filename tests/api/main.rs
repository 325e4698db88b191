//! The integration-test binary: the real server on port 0, driven over
//! HTTP and real WebSockets, one module per part of the contract. (The one
//! other, tests/metrics_histograms.rs, measures its process's memory and so
//! needs a process of its own.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod app_provider;
mod browser;
mod browser_cdp;
mod cli;
mod core;
mod docs;
mod examples;
mod fake_wechat;
mod hardening;
mod logs;
mod miniprogram;
mod oidc;
mod oidc_rp;
mod openapi;
mod phone_binding;
mod redis;
mod redis_hub;
mod redis_server;
mod redis_store;
mod sealing;
mod tokens;
mod wechat_mp;
mod wechat_oauth;
mod wechat_web;
