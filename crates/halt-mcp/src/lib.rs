//! The MCP proxy: it stands between any MCP client and any MCP server, and puts every
//! `tools/call` through the engine before the server sees it.
//!
//! - **Denied**: the client gets a tool result with `isError: true` and the reasons; the server
//!   is never called.
//! - **Modified** (redacted): the server gets the changed arguments.
//! - **Approval**: the call waits on the engine's approval handler (the broker, decided through
//!   the dashboard, a webhook or another process sharing the store) up to its timeout; refused
//!   or timed out, the client gets an error result. With [`ProxyOptions::ask_client`], the
//!   client's user is asked instead where the client can ask: `elicitation/create` on
//!   2025-11-25, an `input_required` result on 2026-07-28 whose `requestState` is signed, bound
//!   to the agent, the tool, the arguments and the tool's definition, expires with the approval
//!   and is used once.
//! - **`tools/list`**: each tool's definition (name, description, input schema) is digested, and
//!   an approval is bound to the digest as well as to the call (see
//!   [`halt_hil::BINDING_KEY`]): a server that changes a tool cannot reuse an approval. Tools
//!   that a visibility guard (the scope guard) denies to the agent can be left out.
//! - Everything else (resources, prompts, completions, notifications, progress, cancellation,
//!   the server's own requests to the client) passes through.
//!
//! Built on `rmcp`, the official Rust SDK: the client side may speak protocol 2025-11-25
//! (`initialize`, sessions) or 2026-07-28 (stateless, `server/discover`), whatever the server
//! speaks.
//!
//! ```no_run
//! use halt_mcp::{Proxy, ProxyOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = halt_engine::Engine::builder().build()?;
//! let mut server = tokio::process::Command::new("npx");
//! server.args(["-y", "@modelcontextprotocol/server-everything"]);
//! let proxy = Proxy::spawn(engine, ProxyOptions::default(), server).await?;
//! // Speaks MCP on this process's stdin and stdout until the client or the server goes.
//! proxy.serve_stdio().await?;
//! # Ok(())
//! # }
//! ```

mod ask;
mod call;
mod http;
mod restart;
mod tools;
mod upstream;

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use halt_core::Guard;
use halt_engine::Engine;
use rmcp::model::{ClientRequest, DiscoverResult, Implementation, InitializeResult, ServerConfig, ServerResult};
use rmcp::service::{NotificationContext, Peer, RequestContext, RoleClient, RoleServer, RunningService};
use rmcp::{ErrorData as McpError, Service, ServiceExt};

pub use crate::http::{HttpOptions, MCP_PATH};
pub use crate::restart::MAX_RESTARTS;
use crate::tools::Tools;
use crate::upstream::Upstream;

/// How the proxy treats the calls it passes on.
#[derive(Clone, Default)]
pub struct ProxyOptions {
    /// The agent the calls are from. Without it, the client's name from its `initialize`
    /// (`claude-desktop`); a 2026-07-28 client names itself in every request.
    pub agent_id: Option<String>,
    /// Leave out of `tools/list` the tools a visibility guard denies to the agent.
    pub hide_denied_tools: bool,
    /// The guards that decide which tools an agent sees (the policy's scope guards): asked about
    /// a call of each tool with no arguments. Each must be pure (no effects).
    pub visibility_guards: Vec<Arc<dyn Guard>>,
    /// Ask the client's user about a call that needs a human, where the client can ask (a
    /// 2025-11-25 client with form elicitation, any 2026-07-28 client), instead of the engine's
    /// approval handler. Only for clients that put the question to a person: a client that
    /// answers elicitations itself, or lets its model answer them, approves its own calls.
    pub ask_client: bool,
    /// Start the server again when it exits (a command is run again, a URL connected to again),
    /// up to [`MAX_RESTARTS`] times a minute; otherwise, or beyond that, the proxy stops. A call
    /// in flight when the server went gets an error either way.
    pub restart_server: bool,
}

impl std::fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let guards: Vec<&str> = self.visibility_guards.iter().map(|g| g.name()).collect();
        f.debug_struct("ProxyOptions")
            .field("agent_id", &self.agent_id)
            .field("hide_denied_tools", &self.hide_denied_tools)
            .field("visibility_guards", &guards)
            .field("ask_client", &self.ask_client)
            .field("restart_server", &self.restart_server)
            .finish()
    }
}

/// Why the proxy could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The server's process could not be started.
    #[error("cannot start the MCP server: {0}")]
    Spawn(#[source] std::io::Error),
    /// The server did not complete the MCP handshake.
    #[error("the MCP server did not start: {0}")]
    Handshake(String),
    /// The client did not complete the MCP handshake.
    #[error("the MCP client did not start: {0}")]
    Client(String),
    /// No randomness for the key that signs the state of calls held for the client's user, or
    /// for a session id.
    #[error("cannot make a key: {0}")]
    Key(String),
    /// The HTTP side could not be served.
    #[error("cannot serve MCP over HTTP: {0}")]
    Http(#[source] std::io::Error),
    /// The server went away while the client was connected.
    #[error("the MCP server exited")]
    ServerExited,
}

/// What the client side and the server side share.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) options: ProxyOptions,
    /// The server, as the proxy's client (another one after a restart).
    upstream: RwLock<Peer<RoleClient>>,
    /// Told when the server was started again, or given up on (`gone`).
    restarted: tokio::sync::Notify,
    gone: std::sync::atomic::AtomicBool,
    /// What the server said of itself.
    pub(crate) info: ServerConfig,
    /// The clients connected (the one on stdio, each 2025-11-25 session over HTTP): where the
    /// server's own notifications go, and its requests when there is one client.
    clients: Mutex<Vec<Peer<RoleServer>>>,
    pub(crate) tools: Tools,
    pub(crate) progress: upstream::ProgressMap,
    /// Signs and checks the state of calls held for a 2026-07-28 client's user.
    pub(crate) states: ask::States,
    /// The session of the one client of a proxy on stdio (its connection).
    pub(crate) connection: Option<String>,
}

impl Shared {
    /// The server, as the proxy's client.
    pub(crate) fn upstream(&self) -> Peer<RoleClient> {
        self.upstream.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Adds a client that connected.
    pub(crate) fn add_client(&self, client: Peer<RoleServer>) {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner).push(client);
    }

    /// The clients still connected.
    pub(crate) fn clients(&self) -> Vec<Peer<RoleServer>> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.retain(|c| !c.is_transport_closed());
        clients.clone()
    }
}

/// An MCP proxy in front of one server, for one client.
pub struct Proxy {
    shared: Arc<Shared>,
    server: RunningService<RoleClient, Upstream>,
    /// How to reach the server again, when it can be.
    pub(crate) again: Option<restart::Again>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("server", &self.shared.info.server_info.name).finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts the server `command` as a child process speaking MCP on its stdin and stdout, and
    /// completes the handshake with it.
    ///
    /// # Errors
    /// The command cannot be started, or the server does not answer the handshake.
    pub async fn spawn(
        engine: Engine,
        options: ProxyOptions,
        command: tokio::process::Command,
    ) -> Result<Self, ProxyError> {
        let again = restart::Again::Command(restart::std_command(command.as_std()));
        let transport = rmcp::transport::TokioChildProcess::new(command).map_err(ProxyError::Spawn)?;
        let mut proxy = Self::connect(engine, options, transport).await?;
        proxy.again = Some(again);
        Ok(proxy)
    }

    /// Completes the handshake with a server on any rmcp client transport. Installs ring as the
    /// process's rustls provider unless one is installed. This crate builds rmcp's HTTP client
    /// (reqwest) without a provider of its own, and reqwest panics when it builds a client with
    /// none: a program that builds such a transport itself installs a provider first.
    ///
    /// # Errors
    /// The server does not answer the handshake.
    pub async fn connect<T, E, A>(engine: Engine, options: ProxyOptions, transport: T) -> Result<Self, ProxyError>
    where
        T: rmcp::transport::IntoTransport<RoleClient, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        http::install_tls();
        let server = Upstream::default().serve(transport).await.map_err(|e| ProxyError::Handshake(e.to_string()))?;
        let peer = server
            .peer()
            .peer_info()
            .ok_or_else(|| ProxyError::Handshake("the server sent no description of itself".into()))?;
        // The client sees the server as it is, but for the protocol version, which each side
        // negotiates for itself.
        let mut info = InitializeResult::new(peer.capabilities.clone())
            .with_server_info(peer.server_info.clone().unwrap_or_else(|| Implementation::new("mcp-server", "")));
        info.instructions.clone_from(&peer.instructions);
        let shared = Shared {
            engine,
            options,
            upstream: RwLock::new(server.peer().clone()),
            restarted: tokio::sync::Notify::new(),
            gone: std::sync::atomic::AtomicBool::new(false),
            info,
            clients: Mutex::new(Vec::new()),
            tools: Tools::default(),
            progress: upstream::ProgressMap::default(),
            states: ask::States::new().map_err(ProxyError::Key)?,
            connection: Some(connection_id().map_err(ProxyError::Key)?),
        };
        let shared = Arc::new(shared);
        server.service().attach(&shared);
        Ok(Self { shared, server, again: None })
    }

    /// Serves one client on this process's stdin and stdout until it or the server goes.
    ///
    /// # Errors
    /// As [`Proxy::serve`].
    pub async fn serve_stdio(self) -> Result<(), ProxyError> {
        self.serve(rmcp::transport::stdio()).await
    }

    /// Serves one client on any rmcp server transport until it or the server goes. The server
    /// is stopped when the client goes.
    ///
    /// # Errors
    /// The client did not complete the handshake, or the server exited first.
    pub async fn serve<T, E, A>(self, transport: T) -> Result<(), ProxyError>
    where
        T: rmcp::transport::IntoTransport<RoleServer, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let Self { shared, server, again } = self;
        let client = Downstream { shared: Arc::clone(&shared) }
            .serve(transport)
            .await
            .map_err(|e| ProxyError::Client(e.to_string()))?;
        shared.add_client(client.peer().clone());
        let client_ct = client.cancellation_token();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut client_done = tokio::spawn(client.waiting());
        let mut server_done = tokio::spawn(restart::supervise(Arc::clone(&shared), server, again, stop.clone()));
        tokio::select! {
            _ = &mut client_done => {
                stop.cancel();
                let _ = server_done.await;
                Ok(())
            }
            _ = &mut server_done => {
                // The client's side may be blocked reading its input: it is not waited for long.
                client_ct.cancel();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), client_done).await;
                Err(ProxyError::ServerExited)
            }
        }
    }
}

/// A name for the session of a client on stdio, unlike any other proxy's.
fn connection_id() -> Result<String, String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a session id: {e}"))?;
    Ok(bytes.iter().fold(String::from("mcp-stdio:"), |mut id, b| {
        id.push_str(&format!("{b:02x}"));
        id
    }))
}

/// Whether the request's client speaks 2026-07-28 or later.
fn modern(context: &RequestContext<RoleServer>) -> bool {
    context.protocol_version().is_some_and(|v| v >= rmcp::model::ProtocolVersion::V_2026_07_28)
}

/// The proxy as the client's server.
struct Downstream {
    shared: Arc<Shared>,
}

impl Downstream {
    /// Passes a request on to the server as it came, with its `_meta` (the progress token among
    /// it) put back, and gives up on it when the client cancels.
    async fn forward(
        &self,
        mut request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        upstream::restore_meta(&mut request, context.meta);
        upstream::send(&self.shared, request, &context.ct, &context.peer).await
    }
}

impl Service<RoleServer> for Downstream {
    async fn handle_request(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        let modern = modern(&context);
        let mut result = match request {
            ClientRequest::InitializeRequest(_) => {
                // The negotiated version is set by rmcp, from what the client asked.
                ServerResult::InitializeResult(self.shared.info.clone())
            }
            ClientRequest::DiscoverRequest(_) => ServerResult::DiscoverResult(DiscoverResult::from_server_info(
                self.supported_protocol_versions().into_owned(),
                self.shared.info.clone(),
            )),
            ClientRequest::CallToolRequest(call) => call::call_tool(&self.shared, call.params, context).await?,
            ClientRequest::ListToolsRequest(list) => {
                let agent = call::agent(&self.shared, &context);
                let mut result = self.forward(ClientRequest::ListToolsRequest(list), context).await?;
                if let ServerResult::ListToolsResult(tools) = &mut result {
                    tools::listed(&self.shared, tools, agent.as_deref()).await;
                }
                result
            }
            other => self.forward(other, context).await?,
        };
        if modern {
            upstream::for_modern_client(&mut result, self.shared.options.hide_denied_tools);
        }
        Ok(result)
    }

    async fn handle_notification(
        &self,
        notification: rmcp::model::ClientNotification,
        _context: NotificationContext<RoleServer>,
    ) -> Result<(), McpError> {
        use rmcp::model::ClientNotification as N;
        match notification {
            // Each side has its own handshake; cancellation is passed on as the request it
            // cancels is given up (see `upstream::send`).
            N::InitializedNotification(_) | N::CancelledNotification(_) => Ok(()),
            other => {
                let _ = self.shared.upstream().send_notification(other).await;
                Ok(())
            }
        }
    }

    fn get_info(&self) -> ServerConfig {
        self.shared.info.clone()
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [rmcp::model::ProtocolVersion]> {
        Cow::Borrowed(rmcp::model::ProtocolVersion::KNOWN_VERSIONS)
    }
}
