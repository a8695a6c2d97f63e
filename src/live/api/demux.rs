//! One reader per connection: sentences parsed as they arrive and handed to
//! the command whose `.tag` they carry. Nothing here waits on a consumer, so a
//! slow one cannot hold up the others or the socket.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    sync::{mpsc, oneshot},
};

use super::{
    error::ClientError,
    reply::{Attrs, Reply, Tagged},
    word::{Limits, Parser},
};

/// Most items a one-shot command may answer with (interfaces, log lines).
pub const MAX_ITEMS: usize = 10_000;

/// How a command's replies reach its caller.
pub(super) enum Route {
    /// Items gathered until `!done`, then handed over at once.
    Collect {
        items: Vec<Attrs>,
        overflow: bool,
        trap: Option<ClientError>,
        done: oneshot::Sender<Result<Vec<Attrs>, ClientError>>,
    },
    /// Items queued as they come; a full queue drops them (counted).
    Stream {
        items: mpsc::Sender<Attrs>,
        state: Arc<StreamState>,
    },
}

/// What a stream's consumer reads once its queue is closed.
#[derive(Default)]
pub(super) struct StreamState {
    pub lost: AtomicU64,
    end: Mutex<Option<Result<(), ClientError>>>,
}

impl StreamState {
    /// The first end reported wins: a `!trap` before the `!done` that follows it.
    fn end_with(&self, end: Result<(), ClientError>) {
        let mut slot = self.end.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(end);
    }

    pub fn take_end(&self) -> Option<Result<(), ClientError>> {
        self.end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The commands in flight on one connection, by tag.
#[derive(Default)]
pub(super) struct Routes {
    table: HashMap<u32, Route>,
    /// Why the connection ended, once it has: later commands fail with it.
    ended: Option<ClientError>,
    /// Sentences for no command in flight (late replies to a cancelled one).
    stray: u64,
}

pub(super) type Shared = Arc<Mutex<Routes>>;

pub(super) fn lock(routes: &Shared) -> std::sync::MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Routes {
    pub fn insert(&mut self, tag: u32, route: Route) -> Result<(), ClientError> {
        if let Some(e) = &self.ended {
            return Err(e.clone());
        }
        self.table.insert(tag, route);
        Ok(())
    }

    pub fn remove(&mut self, tag: u32) {
        self.table.remove(&tag);
    }

    pub fn stray(&self) -> u64 {
        self.stray
    }

    fn dispatch(&mut self, tagged: Tagged) {
        let route = tagged
            .tag
            .as_deref()
            .and_then(|t| t.parse::<u32>().ok())
            .and_then(|tag| Some(tag).zip(self.table.get_mut(&tag)));
        let Some((tag, route)) = route else {
            self.stray += 1;
            return;
        };
        let finished = match (route, tagged.reply) {
            (_, Reply::Empty) => false,
            (_, Reply::Fatal(_)) => false,
            (
                Route::Collect {
                    items, overflow, ..
                },
                Reply::Re(attrs),
            ) => {
                if items.len() < MAX_ITEMS {
                    items.push(attrs);
                } else {
                    *overflow = true;
                }
                false
            }
            (Route::Collect { trap, .. }, Reply::Trap { category, message }) => {
                trap.get_or_insert(ClientError::Trap { category, message });
                false
            }
            (Route::Stream { items, state }, Reply::Re(attrs)) => {
                if let Err(mpsc::error::TrySendError::Full(_)) = items.try_send(attrs) {
                    state.lost.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
            (Route::Stream { state, .. }, Reply::Trap { category, message }) => {
                state.end_with(Err(ClientError::Trap { category, message }));
                false
            }
            (_, Reply::Done(_)) => true,
        };
        if finished && let Some(route) = self.table.remove(&tag) {
            finish(route, Ok(()));
        }
    }

    /// Why the connection ended, if it has.
    pub fn ended(&self) -> Option<ClientError> {
        self.ended.clone()
    }

    /// Ends every command in flight with `error`, and refuses later ones.
    /// The first reason stays: a write failure, then the reader's end of
    /// stream, reports the write failure.
    pub fn end(&mut self, error: ClientError) {
        for (_, route) in self.table.drain() {
            finish(route, Err(error.clone()));
        }
        self.ended.get_or_insert(error);
    }
}

/// Hands a command its outcome. A stream's queue closes when its sender is
/// dropped here, after its end is recorded.
fn finish(route: Route, end: Result<(), ClientError>) {
    match route {
        Route::Collect {
            items,
            overflow,
            trap,
            done,
        } => {
            let outcome = match (end, trap) {
                (Err(e), _) | (Ok(()), Some(e)) => Err(e),
                (Ok(()), None) if overflow => Err(ClientError::TooManyItems(MAX_ITEMS)),
                (Ok(()), None) => Ok(items),
            };
            // The caller may have given up waiting; nothing to tell then.
            let _ = done.send(outcome);
        }
        Route::Stream { state, .. } => state.end_with(end),
    }
}

/// Reads sentences until the connection ends, then ends every command with
/// the reason: `!fatal`, end of stream, a read error or bytes that are not
/// the protocol.
pub(super) async fn read<R: AsyncRead + Unpin>(mut io: R, routes: Shared, limits: Limits) {
    let mut parser = Parser::new(limits);
    let mut buf = vec![0u8; 16 * 1024];
    let error = loop {
        match io.read(&mut buf).await {
            Ok(0) => break ClientError::Closed,
            Ok(n) => parser.feed(&buf[..n]),
            Err(e) => break e.into(),
        }
        if let Err(e) = drain(&mut parser, &routes) {
            break e;
        }
    };
    tracing::debug!(error = %error, "router connection ended");
    lock(&routes).end(error);
}

fn drain(parser: &mut Parser, routes: &Shared) -> Result<(), ClientError> {
    while let Some(words) = parser.next_sentence()? {
        match Reply::parse(&words) {
            Ok(Tagged {
                reply: Reply::Fatal(message),
                ..
            }) => return Err(ClientError::Fatal(message)),
            Ok(tagged) => lock(routes).dispatch(tagged),
            // A reply word from a newer RouterOS: skipped, as `!empty`
            // should have been by older clients.
            Err(e) => {
                tracing::debug!(error = %e, "router reply skipped");
                lock(routes).stray += 1;
            }
        }
    }
    Ok(())
}
