//! `agenthalt mcp-proxy`: an MCP server run as a child, every `tools/call` of the client through
//! the policy first. Standard output and input are the client's MCP channel: this command writes
//! nothing else there.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use halt_config::{HandlerSetting, PolicyLoader};
use halt_core::{Clock, StateStore, SystemClock};
use halt_mcp::{HttpOptions, MCP_PATH, Proxy, ProxyError, ProxyOptions};

use crate::{McpProxyArgs, report};

pub(crate) fn run(args: &McpProxyArgs) -> ExitCode {
    let Some(runtime) = crate::runtime() else { return ExitCode::FAILURE };
    let code = runtime.block_on(proxy(args));
    // Standard input is read on a blocking thread that nothing can interrupt: not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

async fn proxy(args: &McpProxyArgs) -> ExitCode {
    let policy = match PolicyLoader::new().load_file(&args.config) {
        Ok(p) => p,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    if policy.approvals.handler == HandlerSetting::Console {
        report(&"approvals.handler `console` cannot be used here: standard input is the MCP client's");
        return ExitCode::from(2);
    }
    // State in memory unless the policy says (a sled store under the working directory would be
    // wherever the MCP client starts the proxy).
    let store: Arc<dyn StateStore> = match &policy.store {
        Some(settings) => match settings.open().await {
            Ok(s) => s,
            Err(e) => {
                report(&format!("cannot open the store: {e}"));
                return ExitCode::from(2);
            }
        },
        None => Arc::new(halt_store_memory::MemoryStore::new()),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let broker = match policy.broker(Arc::clone(&store), Arc::clone(&clock)) {
        Ok(b) => b,
        Err(e) => {
            report(&format!("cannot set up approvals: {e}"));
            return ExitCode::from(2);
        }
    };
    let audit = match policy.audit_log(&args.config.display().to_string()) {
        Ok(a) => a.map(|(log, _)| log),
        Err(e) => {
            report(&format!("cannot open the audit log: {e}"));
            return ExitCode::from(2);
        }
    };
    let mut builder = policy.engine_builder().store_arc(store).clock_arc(clock).approval_handler(broker);
    if let Some(log) = &audit {
        log.policy_loaded(&policy.version, &args.config.display().to_string(), policy.guards.len());
        builder = builder.recorder(Arc::new(log.clone()));
    }
    let engine = match builder.build().and_then(|e| policy.apply_enabled(e)) {
        Ok(e) => e,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    let options = ProxyOptions {
        agent_id: args.agent_id.clone().or_else(|| policy.mcp.agent_id.clone()),
        hide_denied_tools: policy.mcp.hide_denied_tools,
        ask_client: policy.mcp.ask_client,
        restart_server: policy.mcp.restart_server,
        visibility_guards: policy
            .guards
            .iter()
            .filter(|g| g.enabled && g.kind == "scope")
            .map(|g| Arc::clone(&g.guard))
            .collect(),
    };
    let proxy = match (&args.upstream, args.server.split_first()) {
        (Some(url), _) => Proxy::connect_http(engine, options, url).await,
        (None, Some((program, rest))) => {
            let mut command = tokio::process::Command::new(program);
            command.args(rest).kill_on_drop(true);
            Proxy::spawn(engine, options, command).await
        }
        (None, None) => {
            report(&"name the MCP server's command after `--`, or its URL with --upstream");
            return ExitCode::from(2);
        }
    };
    let result = match (proxy, args.listen) {
        (Err(e), _) => Err(e),
        (Ok(proxy), None) => proxy.serve_stdio().await,
        (Ok(proxy), Some(addr)) => {
            if !addr.ip().is_loopback() {
                report(&format!("--listen {addr}: only a loopback address, the HTTP proxy authenticates nobody"));
                return ExitCode::from(2);
            }
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    if let Ok(local) = listener.local_addr() {
                        report(&format!("mcp-proxy listening on http://{local}{MCP_PATH}"));
                    }
                    let http = HttpOptions::with_allowed_origins(policy.mcp.allowed_origins.clone());
                    proxy.serve_http(listener, http, crate::serve::shutdown()).await
                }
                Err(e) => {
                    report(&format!("cannot listen on {addr}: {e}"));
                    return ExitCode::from(2);
                }
            }
        }
    };
    if let Some(log) = &audit {
        log.flush(Duration::from_secs(5));
        log.close();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (ProxyError::Spawn(_) | ProxyError::Handshake(_))) => {
            report(&e);
            ExitCode::from(2)
        }
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}
