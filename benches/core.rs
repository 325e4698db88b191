//! Server CPU of the hot paths, without sockets: creating a ticket (through
//! the engine, and through the HTTP router as a request would), confirming
//! one (JWT signing + compare-and-set + wake-up), and rendering its QR.
//!
//! `cargo bench --bench core`

// A benchmark that cannot set up must stop loudly, like a test.
#![allow(clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use criterion::{Criterion, criterion_group, criterion_main};
use qrlogin::config::Cli;
use qrlogin::engine::Engine;
use qrlogin::hub::MemoryHub;
use qrlogin::store::memory::MemoryStore;
use qrlogin::ticket::{Identity, Provider, Requester, TicketId};
use qrlogin::token::Tokens;
use tower::ServiceExt;

const CONTENT: &str = "http://127.0.0.1:8080/m/AbCdEfGhIjKlMnOpQrStUvWx";

fn settings() -> qrlogin::config::Args {
    let mut s = Cli::try_parse_from(["qrlogin"])
        .map(|c| c.args)
        .expect("default settings");
    s.bind = "127.0.0.1:0".parse().expect("address");
    s.api_key = Some("bench-api-key-0123456789".into());
    s.jwt_secret = Some("bench-jwt-secret-bench-jwt-secret-0123".into());
    // Long enough that a batch of setups is still alive when confirmed.
    s.ticket_ttl = 120;
    s.max_live_tickets = u64::MAX;
    // One caller makes every request: the per-IP limits are not measured here.
    s.rate_tickets = 0;
    s
}

fn engine(rt: &tokio::runtime::Runtime) -> Engine {
    let s = settings();
    let _guard = rt.enter();
    Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryHub::default()),
        Arc::new(Tokens::load(&s.key_settings(), s.public_url()).expect("tokens")),
        s.ticket_ttl,
        s.max_live_tickets,
    )
}

fn requester() -> Requester {
    Requester {
        ip: "127.0.0.1".into(),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0".into(),
    }
}

fn tickets(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let engine = engine(&rt);
    c.bench_function("ticket_create_engine", |b| {
        b.iter(|| {
            rt.block_on(async {
                let id = TicketId::generate();
                let content = format!("http://127.0.0.1:8080/m/{id}");
                engine
                    .create(id, Provider::Dev, content, requester(), None)
                    .await
                    .expect("created")
            })
        })
    });

    let subject = Identity {
        sub: "user-42".into(),
        idp: "app".into(),
        ..Identity::default()
    };
    c.bench_function("ticket_confirm_engine", |b| {
        b.iter_batched(
            || {
                rt.block_on(async {
                    let id = TicketId::generate();
                    engine
                        .create(id.clone(), Provider::Dev, CONTENT.into(), requester(), None)
                        .await
                        .expect("created");
                    id
                })
            },
            |id| {
                rt.block_on(engine.confirm(&id, None, &subject, None, None))
                    .expect("confirmed")
            },
            criterion::BatchSize::SmallInput,
        )
    });

    c.bench_function("jwt_sign_hs256", |b| {
        b.iter(|| engine.tokens().issue(&subject, None).expect("signed"))
    });

    // The whole request as the router sees it (no socket): extractors,
    // engine, JSON response.
    let app = rt
        .block_on(qrlogin::Application::build(settings()))
        .expect("app");
    let router = qrlogin::web::router(app.state());
    c.bench_function("ticket_create_http", |b| {
        b.iter(|| {
            rt.block_on(async {
                let request = Request::post("/api/v1/tickets")
                    .header("content-type", "application/json")
                    .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0")
                    .body(Body::from("{}"))
                    .expect("request");
                let response = router.clone().oneshot(request).await.expect("response");
                assert_eq!(response.status(), StatusCode::CREATED);
                axum::body::to_bytes(response.into_body(), 4096)
                    .await
                    .expect("body")
            })
        })
    });
}

fn images(c: &mut Criterion) {
    c.bench_function("qr_png_256", |b| {
        b.iter(|| qrlogin::qr::png(CONTENT, 256).expect("png"))
    });
    c.bench_function("qr_svg_256", |b| {
        b.iter(|| qrlogin::qr::svg(CONTENT, 256).expect("svg"))
    });
}

criterion_group!(benches, tickets, images);
criterion_main!(benches);
