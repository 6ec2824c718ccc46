//! The live web dashboard (`--ui-addr`) and the Prometheus endpoint
//! (`--metrics-addr`) of a running query, served by the `eddy` process
//! itself: no CDN, no network fetch, everything the page needs is in this
//! binary.
//!
//! Routes of the dashboard:
//!
//! | path | what |
//! | --- | --- |
//! | `/` | the page (query graph, rates and backpressure, latency over time, checkpoint history, watermarks, and the application's panel) |
//! | `/dashboard.js` | its script |
//! | `/api/progress` | [`QueryMonitor::progress`] as JSON |
//! | `/api/graph` | the plan: nodes and edges |
//! | `/api/history` | one sample a second and every checkpoint ([`history`]) |
//! | `/api/app` | the application's panel (the demo's alerts and machine map), or `null` |
//! | `/metrics` | the Prometheus text, as on `--metrics-addr` |

pub mod history;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::task::JoinHandle;

use crate::http::{self, Response, Routes};
use eddy::runtime::plan::{ExchangeKind, NodeKind, MAIN_OUTPUT};
use eddy::runtime::prometheus::Exposition;
use eddy::runtime::QueryMonitor;
use history::History;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("dashboard.js");

/// An application's panel: JSON the page shows under the query's.
pub type Panel = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;
/// An application's metric families, appended to the Prometheus text.
pub type MetricFamilies = Arc<dyn Fn(&mut Exposition) + Send + Sync>;

/// What an application adds: a JSON panel and its own metric families.
#[derive(Clone, Default)]
pub struct AppHooks {
    /// Title shown in the page header.
    pub title: String,
    /// The panel the page shows under the query's (the demo: alerts and
    /// machines).
    pub panel: Option<Panel>,
    /// Families appended to the Prometheus text.
    pub metrics: Option<MetricFamilies>,
}

/// Where a command serves its endpoints: `--ui-addr` and `--metrics-addr`
/// (a port, on loopback, or HOST:PORT; port 0 picks a free one and prints
/// it). Flattened into every command that runs a query.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EndpointArgs {
    /// Serve the live dashboard here.
    #[arg(long, value_parser = crate::http::parse_addr)]
    pub ui_addr: Option<SocketAddr>,
    /// Serve Prometheus metrics on `/metrics` here.
    #[arg(long, value_parser = crate::http::parse_addr)]
    pub metrics_addr: Option<SocketAddr>,
}

/// The running endpoints; dropping it stops them.
pub struct Endpoints {
    /// Where the dashboard listens.
    pub ui: Option<SocketAddr>,
    /// Where the Prometheus text is served.
    pub metrics: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The Prometheus text: the query's families, then the application's.
pub fn metrics_text(monitor: &QueryMonitor, hooks: &AppHooks) -> String {
    let mut e = Exposition::new();
    monitor.write_prometheus(&mut e);
    if let Some(m) = &hooks.metrics {
        m(&mut e);
    }
    e.into_string()
}

fn metrics_response(monitor: &QueryMonitor, hooks: &AppHooks) -> Response {
    Response::ok(
        "text/plain; version=0.0.4; charset=utf-8",
        metrics_text(monitor, hooks),
    )
}

/// The plan as the page draws it.
pub fn graph_json(monitor: &QueryMonitor) -> serde_json::Value {
    let g = monitor.logical();
    let nodes: Vec<_> = g
        .nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "kind": match n.kind {
                    NodeKind::Source => "source",
                    NodeKind::Operator => "operator",
                    NodeKind::Sink => "sink",
                },
                "parallelism": n.parallelism,
                "keyed": n.keyed,
            })
        })
        .collect();
    let edges: Vec<_> = g
        .edges
        .iter()
        .map(|e| {
            json!({
                "from": e.from,
                "to": e.to,
                "exchange": match e.exchange {
                    ExchangeKind::Default => "forward",
                    ExchangeKind::Hash => "hash",
                    ExchangeKind::Rebalance => "rebalance",
                    ExchangeKind::Broadcast => "broadcast",
                },
                "side": e.from_port != MAIN_OUTPUT,
            })
        })
        .collect();
    json!({ "nodes": nodes, "edges": edges })
}

/// Starts the endpoints asked for: the dashboard on `ui_addr` (with a
/// sampler for its history), the Prometheus text on `metrics_addr`.
/// Prints where they listen.
///
/// # Errors
/// An address cannot be bound.
pub async fn start(
    monitor: QueryMonitor,
    hooks: AppHooks,
    at: &EndpointArgs,
) -> std::io::Result<Endpoints> {
    let (ui, metrics) = (at.ui_addr, at.metrics_addr);
    let mut out = Endpoints {
        ui: None,
        metrics: None,
        tasks: Vec::new(),
    };
    if let Some(addr) = metrics {
        let (m, h) = (monitor.clone(), hooks.clone());
        let routes: Routes =
            Arc::new(move |path: &str| (path == "/metrics").then(|| metrics_response(&m, &h)));
        let (bound, task) = http::serve(addr, routes).await?;
        println!("Prometheus metrics: http://{bound}/metrics");
        out.metrics = Some(bound);
        out.tasks.push(task);
    }
    if let Some(addr) = ui {
        let history = Arc::new(Mutex::new(History::default()));
        out.tasks.push(tokio::spawn(history::sample(
            monitor.clone(),
            history.clone(),
        )));
        let routes: Routes = Arc::new(move |path: &str| {
            Some(match path {
                "/" | "/index.html" => Response::ok("text/html; charset=utf-8", PAGE),
                "/dashboard.js" => Response::ok("text/javascript; charset=utf-8", SCRIPT),
                "/api/progress" => Response::json(&monitor.progress()),
                "/api/graph" => Response::json(&graph_json(&monitor)),
                "/api/history" => {
                    let h = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    Response::json(&h)
                }
                "/api/app" => Response::json(&json!({
                    "title": hooks.title,
                    "panel": hooks.panel.as_ref().map(|p| p()),
                })),
                "/metrics" => metrics_response(&monitor, &hooks),
                _ => return None,
            })
        });
        let (bound, task) = http::serve(addr, routes).await?;
        println!("dashboard: http://{bound}/");
        out.ui = Some(bound);
        out.tasks.push(task);
    }
    Ok(out)
}
