//! Building and running the service: what `main` does, as a library call
//! tests make too (`Application::build` binds the listener, `port()` tells
//! where, `run` serves until stopped).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Args, Settings};
use crate::engine::Engine;
use crate::hub::redis::RedisHub;
use crate::hub::{Hub, MemoryHub};
use crate::store::TicketStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::{Redis, RedisStore, ReplicaWait, TlsFiles, redact};
use crate::telemetry::{MetricsHandle, Recorder};
use crate::templates::Templates;
use crate::token::Tokens;
use crate::web::{AppState, Shared};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid settings:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Settings(Vec<crate::config::Problem>),
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    #[error(transparent)]
    Templates(#[from] crate::templates::TemplateError),
    #[error("WeChat client: {0}")]
    Wechat(#[from] crate::providers::wechat::WechatError),
    #[error("{0}")]
    Redis(String),
    #[error("{0}")]
    Oidc(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The metrics recorder is process-wide by nature (the `metrics` macros
/// report to one global); several apps in one process share it.
fn metrics_handle() -> MetricsHandle {
    static HANDLE: OnceLock<MetricsHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = Recorder::new(&[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]);
            let handle = recorder.handle();
            // Another recorder may already be installed by an embedder; then
            // the macros report there and our handle renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Raise the open-file soft limit to the hard limit: every socket is a
/// file, and the default soft limit (often 1,024) would cap waiting
/// browsers far below what the machine can hold.
pub fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(
            open_files = limit,
            "open-file limit: about {} sockets",
            limit.saturating_sub(100)
        ),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// The store and hub: Redis when `QRLOGIN_REDIS_URL` is set (several
/// instances share tickets and pushes), else in memory (one instance).
///
/// With Redis the service starts even if Redis does not answer yet: it is
/// then not ready (`/readyz` 503, new tickets 503) until Redis comes up, and
/// connects by itself — no crash loop while Redis restarts.
async fn engines(settings: &Settings) -> Result<(Arc<dyn TicketStore>, Arc<dyn Hub>), StartError> {
    let redis = &settings.redis;
    let Some(url) = &redis.url else {
        let store = Arc::new(MemoryStore::new());
        // Ends when the store is dropped with the application.
        MemoryStore::maintain(&store);
        return Ok((store, Arc::new(MemoryHub::default())));
    };
    let tls = redis_tls_files(redis).map_err(StartError::Redis)?;
    let wait = ReplicaWait {
        replicas: redis.wait_replicas,
        timeout: redis.wait_timeout,
    };
    let connection = Redis::open_with(url, &tls, wait).map_err(StartError::Redis)?;
    let store = RedisStore::new(connection.clone(), &redis.prefix);
    // A TLS failure (unknown CA, wrong hostname) is one of these errors and
    // never a fallback to plaintext: the service stays not ready.
    match store.ping().await {
        Ok(()) => tracing::info!(
            url = %redact(url),
            cluster = connection.is_cluster(),
            prefix = %redis.prefix,
            "tickets and pushes go through redis"
        ),
        Err(e) => tracing::warn!(
            url = %redact(url),
            error = %e,
            "redis does not answer yet; not ready until it does"
        ),
    }
    let hub = RedisHub::start(connection, &redis.prefix);
    Ok((Arc::new(store), Arc::new(hub)))
}

/// The PEM files of `QRLOGIN_REDIS_CA_FILE` and the client certificate,
/// read once at start.
fn redis_tls_files(settings: &crate::config::Redis) -> Result<TlsFiles, String> {
    let read = |variable: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("{variable}: {}: {e}", path.display()))
    };
    let ca = match &settings.ca_file {
        Some(path) => Some(read("QRLOGIN_REDIS_CA_FILE", path)?),
        None => None,
    };
    let client = match (&settings.client_cert_file, &settings.client_key_file) {
        (Some(cert), Some(key)) => Some((
            read("QRLOGIN_REDIS_CLIENT_CERT_FILE", cert)?,
            read("QRLOGIN_REDIS_CLIENT_KEY_FILE", key)?,
        )),
        (None, None) => None,
        _ => {
            return Err(
                "QRLOGIN_REDIS_CLIENT_CERT_FILE and QRLOGIN_REDIS_CLIENT_KEY_FILE go together"
                    .into(),
            );
        }
    };
    Ok(TlsFiles { ca, client })
}

pub struct Application {
    listener: TcpListener,
    /// QRLOGIN_METRICS_BIND's listener, serving `/metrics` alone.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    stop: Arc<watch::Sender<bool>>,
}

/// Stops a running application: sockets close with 1012, then the server
/// exits.
#[derive(Clone)]
pub struct StopHandle(Arc<watch::Sender<bool>>);

impl StopHandle {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Application {
    /// The service of `args`, refused with every problem when they
    /// cannot run.
    pub async fn build(args: Args) -> Result<Self, StartError> {
        let settings = Settings::parse(&args).map_err(StartError::Settings)?;
        Self::from_settings(settings).await
    }

    pub async fn from_settings(settings: Settings) -> Result<Self, StartError> {
        if settings.providers.contains(&crate::ticket::Provider::Dev) {
            tracing::warn!(
                "the dev provider is enabled: anyone who opens a QR link can log in; development only"
            );
        }
        if settings.is_production()
            && settings
                .providers
                .contains(&crate::ticket::Provider::WechatMp)
            && settings.wechat.encoding_aes_key.is_none()
        {
            tracing::warn!(
                "wechat-mp runs in plain mode: its pushes are signed but not encrypted, and the signature does not cover the body; set QRLOGIN_WECHAT_ENCODING_AES_KEY (safe mode)"
            );
        }
        let listener = TcpListener::bind(settings.http.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: settings.http.bind,
                source,
            })?;
        let metrics_listener = match settings.http.metrics_bind {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let mut settings = settings;
        if settings.http.public_url.is_none() {
            // Bound to port 0 (tests): name the real port in QR contents.
            if let Ok(addr) = listener.local_addr() {
                settings.http.public_url = Some(format!("http://{addr}"));
            }
        }
        let issuer = settings
            .tokens
            .issuer
            .clone()
            .unwrap_or_else(|| settings.http.public_url());
        let tokens = Arc::new(Tokens::load(&settings.tokens, issuer)?);
        // The phone pages' CSRF key, derived from the signing key so that a
        // form served by one instance is accepted by every other (and after
        // a restart): a random key per process broke confirms behind a
        // load balancer.
        let page_key = tokens
            .signing_key()
            .derive(b"qrlogin phone page CSRF")
            .map_err(|e| crate::token::TokenError::Key(e.to_string()))?;
        let page_mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&page_key)
            .map_err(|e| crate::token::TokenError::Key(e.to_string()))?;
        let oidc = crate::oidc::Provider::from_settings(&settings, &tokens)
            .map_err(StartError::Oidc)?
            .map(Arc::new);
        let templates = Templates::load(settings.templates_dir.as_deref())?;
        let (store, hub) = engines(&settings).await?;
        let engine = Engine::new(
            store,
            hub,
            tokens,
            settings.tickets.ttl.as_secs(),
            settings.tickets.max_live,
        )
        .bounded(settings.limits.max_in_progress);
        let (stop, shutdown) = watch::channel(false);
        let qr_cache = crate::web::qr_cache::new_cache(settings.tickets.ttl);
        let wechat = crate::providers::wechat::WechatClient::from_settings(&settings)?;
        let limits = crate::web::limits::Limits::new(&settings);
        let shared = Shared {
            settings,
            engine,
            templates,
            metrics: metrics_handle(),
            shutdown,
            page_mac,
            qr_cache,
            wechat,
            limits,
            oidc,
        };
        Ok(Self {
            listener,
            metrics_listener,
            state: AppState(Arc::new(shared)),
            stop: Arc::new(stop),
        })
    }

    /// The bound port (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The bound port of QRLOGIN_METRICS_BIND, when set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Serve until stopped (by the handle or `signal`), then close sockets
    /// with 1012 and return.
    pub async fn run(
        self,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = self.stop.clone();
        tokio::spawn(async move {
            signal.await;
            let _ = stop.send(true);
        });
        // However the stop came (signal or handle), every socket hears it
        // through its waiter: they hold no shutdown future of their own.
        let (state, mut stopped) = (self.state.clone(), self.state.shutdown.clone());
        tokio::spawn(async move {
            let _ = stopped.wait_for(|s| *s).await;
            state.engine.wake_all_waiters();
        });
        let router = crate::web::router(self.state.clone());
        let header_timeout = self.state.settings.http.header_read_timeout;
        let metrics = self.metrics_listener.map(|listener| {
            tokio::spawn(crate::web::serve::serve(
                listener,
                crate::web::ops::metrics_router(self.state.clone()),
                header_timeout,
                self.state.shutdown.clone(),
            ))
        });
        crate::web::serve::serve(
            self.listener,
            router,
            header_timeout,
            self.state.shutdown.clone(),
        )
        .await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        // Give the sockets' 1012 closes a moment to flush.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }
}
