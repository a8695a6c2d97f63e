//! One API connection's state shared by its [`super::Client`] clones and
//! its [`super::Subscription`]s: the writer's queue, the routes of the
//! commands in flight, the next tag.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    task::AbortHandle,
};

use super::{
    command::Command,
    demux::{self, Route, Shared},
    error::ClientError,
    reply::Attrs,
    word::{Limits, compose_sentence},
};

/// How long to wait for a router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub login: Duration,
    /// For a one-shot command's answer, a cancel's, a reboot's.
    pub reply: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            login: Duration::from_secs(10),
            reply: Duration::from_secs(10),
        }
    }
}

pub(super) struct Inner {
    /// Whole sentences to the writer task: a command given up half-way
    /// (a timeout) never leaves half a sentence on the wire.
    pub(super) writer: mpsc::Sender<Vec<u8>>,
    pub(super) routes: Shared,
    pub(super) next_tag: AtomicU32,
    pub(super) reader: AbortHandle,
    pub(super) limits: Limits,
    pub(super) timeouts: Timeouts,
}

impl Drop for Inner {
    /// The writer ends by itself once its queue is drained and closed.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

pub(super) fn collect_route(done: oneshot::Sender<Result<Vec<Attrs>, ClientError>>) -> Route {
    Route::Collect {
        items: Vec::new(),
        overflow: false,
        trap: None,
        done,
    }
}

impl Inner {
    pub(super) fn tag(&self) -> u32 {
        self.next_tag.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues `command` tagged `tag`, with `route` ready for its replies
    /// first.
    pub(super) async fn send(
        &self,
        tag: u32,
        command: &Command,
        route: Route,
    ) -> Result<(), ClientError> {
        let bytes = compose_sentence(&command.render(tag), &self.limits)?;
        demux::lock(&self.routes).insert(tag, route)?;
        if self.writer.send(bytes).await.is_err() {
            // The writer stopped after ending the connection with its reason.
            let mut routes = demux::lock(&self.routes);
            routes.remove(tag);
            return Err(routes.ended().unwrap_or(ClientError::Closed));
        }
        Ok(())
    }

    /// [`Inner::send`], given up after the reply timeout (a writer stuck
    /// behind a router that does not read).
    pub(super) async fn send_within(
        &self,
        tag: u32,
        command: &Command,
        route: Route,
        what: &'static str,
    ) -> Result<(), ClientError> {
        let wait = self.timeouts.reply;
        match tokio::time::timeout(wait, self.send(tag, command, route)).await {
            Ok(sent) => sent,
            Err(_) => {
                self.forget(tag);
                Err(ClientError::Timeout(what, wait))
            }
        }
    }

    /// Sends `command` and waits for its `!done`, `wait` at most for both.
    pub(super) async fn collect(
        &self,
        command: &Command,
        wait: Duration,
        what: &'static str,
    ) -> Result<Vec<Attrs>, ClientError> {
        let tag = self.tag();
        let (done, outcome) = oneshot::channel();
        let answer = async {
            self.send(tag, command, collect_route(done)).await?;
            // Dropped without an outcome: only when the reader is gone.
            outcome.await.unwrap_or(Err(ClientError::Closed))
        };
        match tokio::time::timeout(wait, answer).await {
            Ok(answer) => answer,
            Err(_) => {
                self.forget(tag);
                Err(ClientError::Timeout(what, wait))
            }
        }
    }

    pub(super) fn forget(&self, tag: u32) {
        demux::lock(&self.routes).remove(tag);
    }
}
