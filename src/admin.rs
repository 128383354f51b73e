//! The admin endpoint, Envoy-shaped so probes and scrapes carry over:
//!
//! | request | answer |
//! |---|---|
//! | `GET /ready` | 200 `LIVE` while serving; 503 while starting or draining |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /metrics`, `GET /stats/prometheus` | Prometheus text |
//! | `GET /config_dump` | JSON: listeners, routes with resolved endpoints, settings, config file |
//! | `POST /drain_listeners` | stop accepting, keep serving open connections |
//!
//! Other methods on these paths get 405 with `Allow`; other paths 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::router::{Phase, Router};

/// Default admin address: loopback only, Envoy's port.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9901";
/// How long `/config_dump` waits for each backend name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serve admin requests on `listener` for as long as the process runs.
pub async fn serve(listener: TcpListener, router: Arc<Router>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let router = router.clone();
                async move { Ok::<_, Infallible>(handle(req, &router).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, router: &Router) -> Response<Full<Bytes>> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match (req.uri().path(), get, req.method() == Method::POST) {
        ("/ready", true, _) => match router.phase() {
            Phase::Serving => text(StatusCode::OK, "LIVE\n"),
            Phase::Starting => text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n"),
            Phase::Draining => text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n"),
        },
        ("/healthz", true, _) => text(StatusCode::OK, "OK\n"),
        ("/metrics" | "/stats/prometheus", true, _) => {
            let mut response = text(StatusCode::OK, &router.metrics().render());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        ("/config_dump", true, _) => {
            let body = serde_json::to_string_pretty(&config_dump(router).await).unwrap_or_default();
            let mut response = text(StatusCode::OK, &(body + "\n"));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        ("/drain_listeners", _, true) => {
            tracing::info!("admin: drain_listeners");
            router.stop_accepting().await;
            text(StatusCode::OK, "OK\n")
        }
        ("/ready" | "/healthz" | "/metrics" | "/stats/prometheus" | "/config_dump", false, _) => {
            not_allowed("GET, HEAD")
        }
        ("/drain_listeners", _, false) => not_allowed("POST"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /ready /healthz /metrics /config_dump /drain_listeners\n",
        ),
    }
}

/// Listeners, routes with resolved endpoints, settings and the config file.
pub async fn config_dump(router: &Router) -> Value {
    let listeners: Vec<Value> = router.listener_states().into_iter()
        .map(|(port, (addr, accepting))| json!({"gateway_port": port, "address": addr.to_string(), "accepting": accepting}))
        .collect();
    let table = router.table();
    let mut routes = Vec::new();
    for target in table.all() {
        let route = &target.route;
        let mut endpoints = Vec::new();
        for endpoint in &target.endpoints {
            let resolved = match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(endpoint.as_str())).await
            {
                Ok(Ok(addrs)) => json!(addrs.map(|a: SocketAddr| a.to_string()).collect::<Vec<_>>()),
                Ok(Err(e)) => json!({"error": e.to_string()}),
                Err(_) => json!({"error": "resolution timed out"}),
            };
            endpoints.push(json!({"endpoint": endpoint, "resolved": resolved}));
        }
        routes.push(json!({
            "name": route.name,
            "namespace": route.namespace,
            "gateway_port": route.gateway_port,
            "fqdn": route.sni.to_string(),
            "service": {"name": route.service.name, "namespace": route.service.namespace, "port": route.service.port},
            "endpoints": endpoints,
            "endpoints_from": if target.overridden { "--backend" } else { "cluster DNS" },
            "tcp_keepalive": route.keepalive.map(|k| json!({
                "idle_time_seconds": k.idle_time.map(|d| d.as_secs()),
                "interval_seconds": k.interval.map(|d| d.as_secs()),
                "probes": k.probes,
            })),
            "values_index": route.index,
            "values_line": route.at.line,
        }));
    }
    let options = router.options();
    let loaded = router.loaded();
    let limits = &options.limits;
    json!({
        "config": {
            "file": loaded.source.display().to_string(),
            "loaded_at": rfc3339(loaded.at),
        },
        "phase": format!("{:?}", router.phase()).to_lowercase(),
        "open_connections": router.open_connections(),
        "listeners": listeners,
        "routes": routes,
        "settings": {
            "hello_timeout_seconds": limits.hello_timeout.as_secs_f64(),
            "max_hello_bytes": limits.max_hello,
            "connect_timeout_seconds": limits.connect_timeout.as_secs_f64(),
            "idle_timeout_seconds": limits.idle_timeout.as_secs_f64(),
            "zero_copy": limits.zero_copy,
            "socket_buffers": limits.socket_buffers.to_string(),
            "busy_poll_us": limits.busy_poll.as_micros() as u64,
            "max_connections": options.max_connections,
            "max_pending_hellos": options.max_pending_hellos,
            "max_pending_hellos_per_source": options.max_pending_hellos_per_source,
            "cluster_domain": if options.backends.cluster_domain.is_empty() { crate::routes::DEFAULT_CLUSTER_DOMAIN } else { &options.backends.cluster_domain },
            "accept_proxy_protocol": options.accept_proxy_protocol,
            "send_proxy_protocol": options.send_proxy_protocol,
            "allow_cidr": format!("{:?}", options.allow),
        },
    })
}

fn rfc3339(at: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}
