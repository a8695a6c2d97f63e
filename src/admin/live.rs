//! Routes of the read-only live view (`[live]`): tickets, which a browser
//! page redeems once to open a router's live view without holding a token.

use std::sync::Arc;

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    Api, Caller,
    fail::{attempt, uuid},
    handlers::error,
    sites::{blocking, store},
};
use crate::clock;

/// `POST /v1/sites/{uuid}/live/ticket`: a single-use ticket for the site's
/// live view, issued to the calling token's name, valid `[live] ticket_ttl`.
pub async fn ticket(
    State(api): State<Arc<Api>>,
    Extension(Caller(user)): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Some(live) = api.cx.state.snapshot().data.config.live.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "the live view is off: the config has no [live] table",
        );
    };
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    let now = clock::now();
    let expires = now + live.ticket_ttl.as_secs();
    let issued = attempt!(blocking(move || store.new_live_ticket(id, &user, now, expires)).await);
    match issued {
        Some(ticket) => (
            StatusCode::CREATED,
            Json(json!({ "ticket": ticket, "site": id, "expires": expires })),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no site {id}")),
    }
}
