//! `--api-key`: every `/v1/*` request must carry `Authorization: Bearer KEY`. Keys are compared
//! as SHA-256 digests in constant time, so neither the key's bytes nor its length leak through
//! response timing.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;

pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(expected) = &state.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(digest);
        if !given.is_some_and(|g| same(&g, expected)) {
            return ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong API key").into_response();
        }
    }
    next.run(req).await
}
