//! How a route gives up: a status and a JSON error message, with `attempt!`
//! to return early from a handler on the first failure.

use axum::{http::StatusCode, response::Response};
use uuid::Uuid;

use super::handlers::error;

/// A failed request: its status and the JSON error message.
pub(super) struct Fail(pub StatusCode, pub String);

impl From<Fail> for Response {
    fn from(Fail(status, message): Fail) -> Self {
        error(status, message)
    }
}

/// A UUID from the path, or 400.
pub(super) fn uuid(s: &str) -> Result<Uuid, Fail> {
    Uuid::try_parse(s).map_err(|_| Fail(StatusCode::BAD_REQUEST, format!("`{s}` is not a UUID")))
}

/// The value, or the handler returns the failure as its response.
macro_rules! attempt {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(fail) => return axum::response::Response::from(fail),
        }
    };
}
pub(super) use attempt;
