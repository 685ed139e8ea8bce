//! kubesched-extender: runs the scheduler extender beside kube-scheduler.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kubesched_scheduler::extender::bind::KubeBinder;
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
    let ext = Arc::new(Extender::new(
        config.clone(),
        Arc::new(KubeBinder::new(client.clone())),
    )?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(listen = %config.listen, prefix = %config.url_prefix,
        policy = %config.policy.name, https = config.tls.is_some(), "kubesched extender starting");
    let watches = tokio::spawn(reflectors::run(ext.clone(), client));
    match &config.tls {
        Some(t) => {
            let tls_config = tls::server_config(&t.cert_file, &t.key_file)?;
            tls::serve_tls(ext, listener, tls_config, shutdown_signal()).await?;
        }
        None => server::serve(ext, listener, shutdown_signal()).await?,
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
