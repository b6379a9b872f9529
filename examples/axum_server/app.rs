//! The example's service: orders, kept in memory (a stand-in for the
//! service's database), created by an idempotent `POST /v1/orders`.
//!
//! | route | does |
//! |---|---|
//! | `POST /v1/orders` | body `{"item": "book", "quantity": 2}`; creates an order, answers 201 with its JSON and a `Location`; requires `Idempotency-Key` |
//! | `GET /v1/orders/count` | `{"count": N}`: how many orders were created |
//! | `GET /v1/orders/{id}` | the order, or 404 |
//!
//! Two body flags simulate what a real handler meets: `"fail_first": true`
//! makes the first attempt for an item fail with 503 (an upstream outage),
//! and `"hold": true` makes the handler wait until [`Orders::open_gate`] is
//! called (a slow side effect, for showing the 409 and the waiting).
//!
//! `POST /v1/orders` is made idempotent by `idemkv_tower::IdempotencyLayer`
//! (see [`idempotency`]): the routes know nothing about keys, nor about the
//! backend that keeps the records (the embedded store here; `idemkv-redis`'s
//! `axum_redis` example serves these same routes over Redis).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use idemkv::{Backend, Fingerprint};
use idemkv_tower::{IdempotencyLayer, Rejection};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// The order service's data. Cheap to clone; clones share the orders.
#[derive(Debug, Clone)]
pub struct Orders {
    inner: Arc<OrdersInner>,
}

#[derive(Debug)]
struct OrdersInner {
    orders: Mutex<Vec<Value>>,
    failed_once: Mutex<HashSet<String>>,
    gate: Semaphore,
}

impl Default for Orders {
    fn default() -> Self {
        Self::new()
    }
}

impl Orders {
    /// No orders yet.
    pub fn new() -> Self {
        Orders {
            inner: Arc::new(OrdersInner {
                orders: Mutex::new(Vec::new()),
                failed_once: Mutex::new(HashSet::new()),
                gate: Semaphore::new(0),
            }),
        }
    }

    /// How many orders were created.
    pub fn count(&self) -> usize {
        self.inner.orders.lock().unwrap().len()
    }

    /// Lets one request with `"hold": true` proceed (now, or when it comes).
    #[allow(dead_code, reason = "the server never holds; the end-to-end test does")]
    pub fn open_gate(&self) {
        self.inner.gate.add_permits(1);
    }
}

/// The example's caller identity when there is no `Authorization` header.
pub const X_TENANT: HeaderName = HeaderName::from_static("x-tenant");
/// The longest `X-Tenant` value accepted, in bytes.
pub const MAX_TENANT_LEN: usize = 128;

/// The idempotency layer over `backend` (the store) with the example's
/// notion of the caller (see [`caller`]) and the crate's defaults
/// otherwise: POST and PATCH need an `Idempotency-Key`, 24 h retention,
/// 1 MiB bodies, a 5xx releases the key, `content-type` and `location` are
/// replayed.
pub fn idempotency<B: Backend>(backend: B) -> IdempotencyLayer<B> {
    IdempotencyLayer::new(backend).caller(caller)
}

/// Who is calling: the `Authorization` header if present (its digest, so
/// credentials are never written to disk), else the `X-Tenant` header,
/// else 401. A real server uses the principal its authentication layer
/// established.
pub fn caller(parts: &Parts) -> Result<String, Rejection> {
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        let digest = Fingerprint::of(auth.as_bytes()).as_u128();
        return Ok(format!("auth:{digest:032x}"));
    }
    match parts.headers.get(&X_TENANT) {
        Some(t) if !t.is_empty() && t.len() <= MAX_TENANT_LEN => {
            Ok(format!("tenant:{}", String::from_utf8_lossy(t.as_bytes())))
        }
        Some(_) => Err(Rejection::bad_request(format!(
            "X-Tenant is 1 to {MAX_TENANT_LEN} bytes"
        ))),
        None => Err(Rejection::unauthorized(
            "send an Authorization or an X-Tenant header",
        )),
    }
}

/// The service with fresh, empty [`Orders`], `POST /v1/orders` behind
/// `idempotency`.
#[allow(
    dead_code,
    reason = "the server builds its app from its options; the end-to-end test uses this"
)]
pub fn app<B: Backend + 'static>(idempotency: IdempotencyLayer<B>) -> Router {
    app_with_orders(Some(idempotency), Orders::new())
}

/// The service over existing `orders` (which outlive a server restart, as a
/// database would); without a layer, `POST /v1/orders` is not idempotent
/// (the benchmark's baseline).
pub fn app_with_orders<B: Backend + 'static>(
    idempotency: Option<IdempotencyLayer<B>>,
    orders: Orders,
) -> Router {
    let mut idempotent = Router::new().route("/v1/orders", post(create_order));
    if let Some(layer) = idempotency {
        idempotent = idempotent.route_layer(layer);
    }
    Router::new()
        .route("/v1/orders/count", get(count_orders))
        .route("/v1/orders/{id}", get(get_order))
        .merge(idempotent)
        .with_state(orders)
}

async fn create_order(State(orders): State<Orders>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(item) = request["item"].as_str() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Invalid order",
            r#"the body is a JSON object with an "item" string"#,
        );
    };
    let quantity = request["quantity"].as_u64().unwrap_or(1);
    if request["fail_first"] == true
        && orders
            .inner
            .failed_once
            .lock()
            .unwrap()
            .insert(item.to_owned())
    {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Upstream unavailable",
            "the inventory service did not answer; retry",
        );
    }
    if request["hold"] == true {
        let permit = orders.inner.gate.acquire().await;
        permit.expect("the gate is never closed").forget();
    }
    let order = {
        let mut all = orders.inner.orders.lock().unwrap();
        let order = json!({
            "id": format!("ord_{:06}", all.len() + 1),
            "item": item,
            "quantity": quantity,
        });
        all.push(order.clone());
        order
    };
    let location = format!("/v1/orders/{}", order["id"].as_str().unwrap_or_default());
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response()
}

async fn count_orders(State(orders): State<Orders>) -> Json<Value> {
    Json(json!({ "count": orders.count() }))
}

async fn get_order(State(orders): State<Orders>, Path(id): Path<String>) -> Response {
    let all = orders.inner.orders.lock().unwrap();
    match all.iter().find(|order| order["id"] == id.as_str()) {
        Some(order) => Json(order.clone()).into_response(),
        None => problem(StatusCode::NOT_FOUND, "No such order", id),
    }
}

/// An RFC 9457 problem response.
fn problem(status: StatusCode, title: &str, detail: impl Into<String>) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}
