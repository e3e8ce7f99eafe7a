//! `agenthalt serve`: the decision server.

use std::net::SocketAddr;
use std::process::ExitCode;

use halt_dashboard::Server;

use crate::{ServeArgs, report};

/// Where the server listens when neither `--bind` nor the policy says.
const DEFAULT_BIND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8550);

pub(crate) fn run(args: &ServeArgs) -> ExitCode {
    let Some(runtime) = crate::runtime() else { return ExitCode::FAILURE };
    runtime.block_on(serve(args))
}

async fn serve(args: &ServeArgs) -> ExitCode {
    let server = match Server::open(&args.config).await {
        Ok(s) => s,
        Err(e) => {
            report(&format!("{}: {e}", args.config.display()));
            return ExitCode::from(2);
        }
    };
    let addr = match args.bind.map_or_else(|| server.configured_bind(), |a| Ok(Some(a))) {
        Ok(a) => a.unwrap_or(DEFAULT_BIND),
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    let listener = match server.listen(addr).await {
        Ok(l) => l,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    let local = listener.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string());
    report(&format!(
        "serving {} (policy version {}) on http://{local}",
        args.config.display(),
        &server.policy_version()[..12]
    ));
    #[cfg(unix)]
    {
        let server = server.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
            while hangups.recv().await.is_some() {
                match server.reload().await {
                    Ok(version) => report(&format!("SIGHUP: policy reloaded, version {}", &version[..12])),
                    Err(e) => report(&format!("SIGHUP: the policy was not reloaded: {e}")),
                }
            }
        });
    }
    let result = server.serve(listener, shutdown()).await;
    match result {
        Ok(()) => {
            report(&"stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
