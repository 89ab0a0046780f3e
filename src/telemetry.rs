//! Prometheus metrics on a listen address of their own (off unless asked for). Labels stay
//! bounded: actions, outcomes and classes, never order ids or links.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::Store;

/// How often the order gauges are read from the database.
const GAUGE_PERIOD: Duration = Duration::from_secs(10);

/// Installs the process's metrics recorder and serves `/metrics` on `listen`; returns the
/// address it listens on.
pub async fn serve_metrics(
    listen: SocketAddr,
    store: Arc<dyn Store>,
    cancel: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    // Latencies as histograms with buckets from a millisecond to the 30 s request bound.
    let buckets = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets(&buckets)?
        .install_recorder()?;
    let listener = TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let render = handle.clone();
    let app = Router::new().route("/metrics", get(move || async move { render.render() }));
    let stop = cancel.clone();
    tokio::spawn(async move {
        let serving = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serving.await {
            warn!(error = %e, "the metrics listener stopped");
        }
    });
    tokio::spawn(gauges(store, handle, cancel));
    Ok(address)
}

/// Orders by state and the age of the oldest due order, read every few seconds.
async fn gauges(store: Arc<dyn Store>, handle: PrometheusHandle, cancel: CancellationToken) {
    let states = ["Pending", "In progress"];
    while !cancel.is_cancelled() {
        match store.open_order_stats().await {
            Ok((by_status, oldest_due_ms)) => {
                for state in states {
                    let count = by_status
                        .iter()
                        .find(|(s, _)| s == state)
                        .map_or(0, |(_, n)| *n);
                    metrics::gauge!("playpanel_open_orders", "status" => state).set(count as f64);
                }
                metrics::gauge!("playpanel_oldest_due_order_seconds")
                    .set(oldest_due_ms as f64 / 1000.0);
            }
            Err(e) => warn!(error = %e, "could not read order gauges"),
        }
        handle.run_upkeep();
        tokio::select! {
            _ = tokio::time::sleep(GAUGE_PERIOD) => {}
            _ = cancel.cancelled() => {}
        }
    }
}
