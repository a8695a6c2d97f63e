//! How a route gives up: a status and a JSON error message, with `attempt!`
//! to return early from a handler on the first failure.

use axum::{http::StatusCode, response::Response};
use uuid::Uuid;

use super::{Api, handlers::error};

/// A failed request: its status and the JSON error message.
pub(super) struct Fail(pub StatusCode, pub String);

impl From<Fail> for Response {
    fn from(Fail(status, message): Fail) -> Self {
        error(status, message)
    }
}

/// Why provisioning does not answer. A reload cannot start it, so the
/// published config holds the `[provision]` the server started with: with
/// one, its tunnel store failed to open; without, it was never started.
pub(super) fn provisioning_off(api: &Api) -> Fail {
    let why = if api.cx.state.snapshot().data.config.provision.is_some() {
        "provisioning is off: its tunnel store could not be opened at start (the log says why); restart once that is fixed"
    } else {
        "provisioning is off: the server started without a [provision] table (a reload does not start it; restart)"
    };
    Fail(StatusCode::NOT_FOUND, why.into())
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
