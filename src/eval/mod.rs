//! `srlm eval`: the paper's measurements of a checkpoint — the judge against human
//! rankings (`rm`), one model against another (`h2h`) — stored in Postgres and charted
//! by iteration; and the AlpacaEval export.

pub mod alpaca;
pub mod chart;
pub mod gate;
pub mod h2h;
pub mod ifeval;
pub mod movement;
pub mod reviews;
pub mod rm;
pub mod source;
pub mod stats;

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::store::Store;

/// Where results are kept, and the chart drawn from them.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// Postgres URL: results are stored there with the checkpoint measured (and served
    /// at GET /evaluations). Without it they are only printed.
    pub database_url: Option<String>,
    /// Also draw the stored results of this kind, metric by iteration (a .svg or .png file).
    pub chart: Option<PathBuf>,
}

impl StoreConfig {
    pub async fn connect(&self) -> Result<Option<Store>> {
        match &self.database_url {
            Some(url) => Ok(Some(Store::connect_migrated(url).await.context("connecting to Postgres")?)),
            None => Ok(None),
        }
    }

    /// Writes `--chart` (if given) from every stored result of `kind`.
    pub async fn chart(&self, store: &Store, kind: &str, metric: &str) -> Result<()> {
        if let Some(path) = &self.chart {
            let points = chart::series(&store.evaluations(Some(kind), None, 10_000, 0).await?, metric);
            chart::write(path, &format!("{kind}: {metric} by iteration"), metric, &points)?;
            eprintln!("chart written to {}", path.display());
        }
        Ok(())
    }
}

pub(crate) fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

/// Runs `work(i, prompt)` for every prompt, `concurrency` at a time, with a progress
/// bar; the results come back in the prompts' order (or the first error).
pub(crate) async fn over_prompts<'a, T, Fut>(
    prompts: &'a [String],
    concurrency: usize,
    prefix: &'static str,
    work: impl Fn(usize, &'a String) -> Fut,
) -> Result<Vec<T>>
where
    Fut: std::future::Future<Output = Result<T>> + 'a,
{
    use futures::StreamExt;
    let bar = crate::progress::Progress::new(prompts.len() as u64, prefix, "prompts");
    let results: Vec<Result<T>> = futures::stream::iter(prompts.iter().enumerate())
        .map(|(i, prompt)| {
            let bar = bar.clone();
            let done = work(i, prompt);
            async move {
                let out = done.await;
                bar.inc(1);
                out
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    bar.finish();
    results.into_iter().collect()
}

#[derive(Debug, Clone)]
pub struct ChartConfig {
    /// Postgres URL.
    pub database_url: String,
    /// `rm` or `h2h`.
    pub kind: String,
    /// The metric to draw (a key of the stored metrics, e.g. pairwise_accuracy,
    /// spearman, win_rate, lc_win_rate).
    pub metric: String,
    /// Chart file to write (.svg or .png).
    pub out: PathBuf,
}

/// `srlm eval chart`: a stored metric by iteration, one line per method.
pub async fn chart_command(args: ChartConfig) -> Result<()> {
    let store = Store::connect_migrated(&args.database_url).await?;
    let stored = StoreConfig { database_url: Some(args.database_url.clone()), chart: Some(args.out.clone()) };
    stored.chart(&store, &args.kind, &args.metric).await
}
