//! The AgentHalt decision server: agents written in any language ask it before they act.
//!
//! A [`Server`] loads a policy file, opens its store and audit log, and answers a JSON API under
//! `/v1` (evaluate, settle, outcome, approvals, stats, guards, audit, reload), a WebSocket feed at
//! `/v1/events`, Prometheus metrics at `/metrics`, health at `/healthz` and `/readyz`, and its own
//! OpenAPI document at `/openapi.json`; the dashboard page is at `/`. Callers present bearer tokens with roles (`agent`,
//! `viewer`, `approver`, `admin`) from the policy's `server:` section; a server without tokens
//! listens on loopback only. `agenthalt serve` runs one.
//!
//! ```no_run
//! use halt_dashboard::Server;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::open("policy.yaml").await?;
//! let listener = server.listen("127.0.0.1:8550".parse()?).await?;
//! server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! ```
//! // The API's OpenAPI document is made from its types.
//! let doc = halt_dashboard::openapi();
//! assert_eq!(doc["openapi"], "3.1.0");
//! assert!(doc["paths"]["/v1/evaluate"]["post"].is_object());
//! ```

mod api;
mod approvals;
mod auth;
mod error;
mod events;
mod metrics;
mod openapi;
mod page;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use halt_audit::{AuditLog, Ring};
use halt_config::{AuditSettings, ConfigError, Policy, PolicyLoader, ServerSettings, StoreSettings};
use halt_core::{Clock, StateStore, SystemClock};
use halt_engine::Engine;
use halt_hil::Broker;

pub use openapi::openapi;

use crate::approvals::{Recorded, ServerApprovals};
use crate::auth::Tokens;
use crate::events::Events;
use crate::metrics::Metrics;

/// Why a server could not start, or a policy could not be reloaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The policy file is invalid.
    #[error(transparent)]
    Policy(#[from] Box<ConfigError>),
    /// The store cannot be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] halt_core::StoreError),
    /// The audit log cannot be opened.
    #[error("cannot open the audit log: {0}")]
    Audit(#[from] halt_audit::AuditError),
    /// The approval handler cannot start.
    #[error("cannot start the approval handler: {0}")]
    Approvals(#[from] halt_hil::webhook::WebhookError),
    /// The engine cannot be built from the policy.
    #[error("cannot build the engine: {0}")]
    Engine(#[from] halt_engine::EngineError),
    /// A reloaded policy changes what only a restart can change.
    #[error("{0} changed: restart the server to change it")]
    NeedsRestart(&'static str),
    /// The address is not one the server may listen on.
    #[error("{0}")]
    Bind(String),
    /// Listening failed.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// What a policy version serves: replaced whole by a reload, while requests in flight finish on
/// the one they started with.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) engine: Engine,
    pub(crate) broker: Broker,
    pub(crate) version: String,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) origins: Vec<String>,
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    live: RwLock<Arc<Live>>,
    loader: PolicyLoader,
    config_path: PathBuf,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) clock: Arc<dyn Clock>,
    store_settings: StoreSettings,
    pub(crate) audit_settings: Option<AuditSettings>,
    pub(crate) audit: Option<AuditLog>,
    pub(crate) ring: Option<Ring>,
    /// The limits as the server started with them (a reload does not change them).
    pub(crate) limits: ServerSettings,
    pub(crate) metrics: Metrics,
    pub(crate) events: Events,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Set when the server shuts down: event feeds close.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// The policy version serving now.
    pub(crate) fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn origin(&self) -> String {
        self.config_path.display().to_string()
    }

    /// Reloads the policy file: the new policy serves once it is valid and built; otherwise the
    /// old one goes on and the error says why.
    pub(crate) async fn reload(&self) -> Result<Arc<Live>, ServerError> {
        let _one = self.reloading.lock().await;
        let policy = self.loader.load_file(&self.config_path).map_err(Box::new)?;
        if store_settings(&policy) != self.store_settings {
            return Err(ServerError::NeedsRestart("`store:`"));
        }
        if policy.audit != self.audit_settings {
            return Err(ServerError::NeedsRestart("`audit:`"));
        }
        let live = Arc::new(build_live(&policy, &self.store, &self.clock, self.audit.as_ref(), &self.events)?);
        if let Some(log) = &self.audit {
            log.policy_loaded(&live.version, &self.origin(), policy.guards.len());
        }
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&live);
        self.events.policy_reloaded(&live.version);
        tracing::info!(version = %live.version, "policy reloaded");
        Ok(live)
    }
}

/// Where the server keeps state: as the policy says, else in sled under `./.agenthalt/store`.
fn store_settings(policy: &Policy) -> StoreSettings {
    policy.store.clone().unwrap_or_else(|| {
        StoreSettings::Sled(halt_config::SledSettings {
            path: PathBuf::from(".agenthalt").join("store"),
            durability: halt_config::DurabilitySetting::Strict,
            flush_every_ms: 500,
        })
    })
}

fn build_live(
    policy: &Policy,
    store: &Arc<dyn StateStore>,
    clock: &Arc<dyn Clock>,
    audit: Option<&AuditLog>,
    events: &Events,
) -> Result<Live, ServerError> {
    let recorded = Recorded { then: policy.approval_handler()?, events: events.clone() };
    let broker = policy.broker(Arc::clone(store), Arc::clone(clock))?.with_handler(Arc::new(recorded));
    let mut builder = policy
        .engine_builder()
        .store_arc(Arc::clone(store))
        .clock_arc(Arc::clone(clock))
        .approval_handler(ServerApprovals { broker: broker.clone() });
    if let Some(log) = audit {
        builder = builder.recorder(Arc::new(log.clone()));
    }
    let engine = policy.apply_enabled(builder.build()?)?;
    Ok(Live {
        engine,
        broker,
        version: policy.version.clone(),
        tokens: Arc::new(Tokens::new(&policy.server.tokens)),
        origins: policy.server.allowed_origins.clone(),
    })
}

/// A decision server for one policy file.
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// Loads the policy at `path` (with the built-in guard types), opens its store and its
    /// audit log, and builds its engine.
    ///
    /// # Errors
    /// The policy is invalid, or its store, audit log or approval handler cannot be opened.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, ServerError> {
        Self::open_with(PolicyLoader::new(), path).await
    }

    /// As [`Server::open`], with a loader that knows more guard types (reloads use it too).
    ///
    /// # Errors
    /// As [`Server::open`].
    pub async fn open_with(loader: PolicyLoader, path: impl AsRef<Path>) -> Result<Self, ServerError> {
        let config_path = path.as_ref().to_path_buf();
        let policy = loader.load_file(&config_path).map_err(Box::new)?;
        let store_settings = store_settings(&policy);
        let store = store_settings.open().await?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (audit, ring) = match policy.audit_log(&config_path.display().to_string())? {
            Some((log, ring)) => (Some(log), ring),
            None => (None, None),
        };
        let events = Events::default();
        let live = build_live(&policy, &store, &clock, audit.as_ref(), &events)?;
        let shared = Shared {
            live: RwLock::new(Arc::new(live)),
            loader,
            config_path,
            store,
            clock,
            store_settings,
            audit_settings: policy.audit.clone(),
            audit,
            ring,
            limits: policy.server.clone(),
            metrics: Metrics::default(),
            events,
            reloading: tokio::sync::Mutex::new(()),
            closing: tokio::sync::watch::channel(false).0,
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// The address the policy's `server.bind` names, if it names one.
    ///
    /// # Errors
    /// The address is not `IP:PORT`.
    pub fn configured_bind(&self) -> Result<Option<SocketAddr>, ServerError> {
        match &self.shared.limits.bind {
            Some(text) => text.parse().map(Some).map_err(|_| {
                ServerError::Bind(format!("server.bind `{text}` is not an address such as 127.0.0.1:8550"))
            }),
            None => Ok(None),
        }
    }

    /// Opens a listener on `addr`, after checking that the server may listen there: anywhere
    /// but loopback needs tokens.
    ///
    /// # Errors
    /// [`ServerError::Bind`] for a non-loopback address without tokens; the socket's error.
    pub async fn listen(&self, addr: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
        if !addr.ip().is_loopback() && self.shared.live().tokens.open() {
            return Err(ServerError::Bind(format!(
                "refusing to listen on {addr} without tokens: anyone who reaches it could decide approvals. \
                 Add tokens under `server.tokens`, or bind to 127.0.0.1"
            )));
        }
        Ok(tokio::net::TcpListener::bind(addr).await?)
    }

    /// The HTTP service: the whole API, with its limits (body size, timeouts, concurrency).
    pub fn router(&self) -> axum::Router {
        api::router(Arc::clone(&self.shared))
    }

    /// Reloads the policy file. The old policy goes on serving if the new one is invalid or
    /// changes the store or the audit log (which need a restart). Approvals asked under the old
    /// version stay listed, but cover only calls of the version they were asked under.
    ///
    /// # Errors
    /// Why the new policy was not taken.
    pub async fn reload(&self) -> Result<String, ServerError> {
        Ok(self.shared.reload().await?.version.clone())
    }

    /// The version of the policy serving now.
    #[must_use]
    pub fn policy_version(&self) -> String {
        self.shared.live().version.clone()
    }

    /// Serves on `listener` until `shutdown` completes; then requests in flight finish, event
    /// feeds close, and the audit log is flushed. (The store is flushed when the last copy of
    /// the server is dropped.)
    ///
    /// # Errors
    /// The listener failed.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let closing = self.shared.closing.clone();
        let signal = async move {
            shutdown.await;
            let _ = closing.send(true);
        };
        let service = self.router().into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, service).with_graceful_shutdown(signal).await;
        if let Some(log) = &self.shared.audit
            && !log.flush(Duration::from_secs(10))
        {
            tracing::warn!("the audit log did not flush within 10 s");
        }
        Ok(served?)
    }
}
