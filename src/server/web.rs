//! The chat page at `/`: static HTML, CSS and JavaScript compiled into the binary, so the page
//! works offline and can never disagree with the server it came with. It talks to the server
//! only through the public API (`/v1/models`, `/v1/chat/completions` with `ffnskip.trace`).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/style.css");

/// Nothing but the page's own files and its own server may be loaded or contacted.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| file("text/html; charset=utf-8", INDEX)))
        .route("/app.js", get(|| file("text/javascript; charset=utf-8", SCRIPT)))
        .route("/style.css", get(|| file("text/css; charset=utf-8", STYLE)))
}

async fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
