//! What can go wrong talking to a router, as one cloneable error: the end of
//! a connection is reported to every command that was waiting on it.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use super::word::WordError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: Arc<io::Error>,
    },
    #[error("connecting to {0}: no answer within {1:?}")]
    ConnectTimeout(SocketAddr, Duration),
    /// The router's own words, such as "invalid user name or password (6)".
    #[error("login refused: {0}")]
    LoginRefused(String),
    #[error("{0}: no answer within {1:?}")]
    Timeout(&'static str, Duration),
    /// A `!trap`: the command failed or was interrupted.
    #[error("router refused the command: {message}{}", category.map(|c| format!(" (category {c})")).unwrap_or_default())]
    Trap {
        category: Option<u32>,
        message: String,
    },
    /// A `!fatal`: the router closes the connection.
    #[error("router ended the connection: {0}")]
    Fatal(String),
    #[error("connection closed")]
    Closed,
    /// Reading failed.
    #[error("connection: {0}")]
    Io(Arc<io::Error>),
    /// Writing failed: what was being sent may not have reached the router.
    #[error("sending: {0}")]
    Write(Arc<io::Error>),
    #[error("protocol: {0}")]
    Protocol(#[from] WordError),
    #[error("{0} runs until cancelled: subscribe to it")]
    NotOneShot(&'static str),
    #[error("{0} is not a stream: call it")]
    NotStream(&'static str),
    #[error("{0} is sent by a method of its own (login, reboot, cancel)")]
    OwnMethod(&'static str),
    #[error("more than {0} items in one answer")]
    TooManyItems(usize),
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(Arc::new(e))
    }
}
