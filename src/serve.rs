//! `srlm serve`: load the model, connect the store, serve HTTP until SIGTERM/Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::{self, AppState, Limits};
use crate::cli::ServeArgs;
use crate::engine::{self, load::EngineOptions};
use crate::judge::{JudgeTemplate, PairPolicy};
use crate::store::Store;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let engine = engine::load::load(&args.engine_options())
        .await
        .with_context(|| format!("loading {} (run scripts/fetch-model.sh for the default model)", args.model))?;
    let store = Store::connect_lazy(&args.database_url).context("parsing --database-url")?;
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_n: args.max_n,
        max_tokens: args.max_tokens,
        default_max_tokens: args.default_max_tokens,
        max_in_flight: args.max_in_flight,
        max_judge_samples: args.max_judge_samples,
        max_self_instruct: args.max_self_instruct,
        request_timeout: std::time::Duration::from_secs(args.request_timeout_secs),
        max_prompt_tokens: args.max_prompt_tokens,
        ..Limits::default()
    };
    let mut state = AppState::new(engine, store, limits);
    state.seed_prompts = args.seed_prompts.clone();
    state.pair_policy = PairPolicy { min_margin: args.min_margin, length_band: args.length_band };
    if let Some(path) = &args.judge_template {
        state.judge_template = Arc::new(JudgeTemplate::from_file(path)?);
    }
    state.slot.loader = Some(loader(args.engine_options()));
    state.admin_token = args.admin_token.clone().filter(|t| !t.is_empty()).map(Arc::new);
    state.api_keys = api::auth::ApiKeys::load(args.api_keys_file.as_deref(), args.api_keys.as_deref(), &args.open_routes)?.map(Arc::new);
    if state.api_keys.is_some() {
        tracing::info!(open_routes = %args.open_routes, "API keys required on the other routes");
    }
    register_in_background(&state);
    if args.follow {
        state.slot.follow();
    }

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    tracing::info!(address = %listener.local_addr()?, docs = "/docs", "serving");
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signalled = stopping.clone();
    let server = axum::serve(listener, api::app(state.clone())).with_graceful_shutdown(async move {
        shutdown_signal().await;
        signalled.notify_one();
    });
    // After SIGTERM/Ctrl-C: no new connections; requests in flight finish (and record
    // what they produced) for at most --shutdown-grace-secs.
    let grace = std::time::Duration::from_secs(args.shutdown_grace_secs);
    tokio::select! {
        served = server => served?,
        _ = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(in_flight = state.in_flight(), grace_secs = args.shutdown_grace_secs, "drain timed out; exiting with requests unfinished");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Loads further checkpoints (hot-swaps) with the options the server started with.
pub fn loader(options: EngineOptions) -> api::EngineLoader {
    Arc::new(move |path: String, name: String| {
        let options = options.with_model(path, name);
        Box::pin(async move { engine::load::load(&options).await })
    })
}

/// Migrates the database and registers the served model as the active checkpoint,
/// retrying until the database answers; chat is served meanwhile, `/ready` says 503.
pub fn register_in_background(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let engine = state.current().engine.clone();
        let info = engine.info().clone();
        let path = std::fs::canonicalize(&info.path).map_or(info.path.clone(), |p| p.display().to_string());
        loop {
            let attempt = async {
                state.store.migrate().await?;
                anyhow::Ok(state.store.activate_served(&info.name, &path, &info.format).await?)
            };
            match attempt.await {
                Ok(checkpoint) => {
                    tracing::info!(checkpoint_id = checkpoint.id, name = %checkpoint.name, "checkpoint registered and active");
                    state.slot.set_registered(&engine, checkpoint);
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "database not ready; retrying in 2 s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            sig.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
