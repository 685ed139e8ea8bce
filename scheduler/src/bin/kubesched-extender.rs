//! kubesched-extender: runs the scheduler extender beside kube-scheduler.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kubesched_core::signing::SigningKey;
use kubesched_scheduler::extender::api_client::KubeBinder;
use kubesched_scheduler::extender::config::{Config, Overrides};
use kubesched_scheduler::extender::{Extender, reflectors, server, tls};

/// GPU- and MIG-aware kube-scheduler extender.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// YAML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    #[command(flatten)]
    overrides: Overrides,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_json {
        fmt.json().init();
    } else {
        fmt.init();
    }
    let config = Config::load(args.config.as_deref(), &args.overrides)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let mut ext = Extender::new(config.clone(), Arc::new(KubeBinder::new(client.clone())))?;
    match &config.signing_key_file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the signing key {}", path.display()))?;
            let key = SigningKey::from_bytes(&bytes)
                .with_context(|| format!("signing key {}", path.display()))?;
            ext = ext.with_signing_key(key);
        }
        None => tracing::warn!(
            "no signing key: devices annotations are written unsigned, and agents that \
             require signatures will refuse them"
        ),
    }
    let ext = Arc::new(ext);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(listen = %config.listen, metrics_listen = ?config.metrics_listen,
        prefix = %config.url_prefix, policy = %config.policy.name, https = config.tls.is_some(),
        signed = ext.signer().is_some(), "kubesched extender starting");
    let watches = tokio::spawn(reflectors::run(ext.clone(), client));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let observability = match config.metrics_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("listening on {address}"))?;
            let app = server::observability_router(ext.clone());
            Some(tokio::spawn(server::serve_app(
                app,
                listener,
                None,
                config.request_timeout(),
                until_stopped(),
            )))
        }
        None => None,
    };
    let app = match config.metrics_listen {
        Some(_) => server::verbs_router(ext.clone()),
        None => server::router(ext.clone()),
    };
    let tls = match &config.tls {
        Some(t) => Some(tls::server_config(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let serving = tokio::spawn(server::serve_app(
        app,
        listener,
        tls,
        config.request_timeout(),
        until_stopped(),
    ));
    shutdown_signal().await;
    let _ = stop.send(true);
    serving.await.context("serving task")??;
    if let Some(task) = observability {
        task.await.context("metrics serving task")??;
    }
    watches.abort();
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}
