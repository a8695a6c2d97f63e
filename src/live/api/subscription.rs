//! A command that streams until cancelled: its samples as they come, how many
//! a slow reader lost, and the cancel that ends it cleanly.

use std::sync::{Arc, atomic::Ordering};

use tokio::sync::mpsc;

use super::{
    command::Command, connection::Inner, demux::StreamState, error::ClientError, reply::Attrs,
};

/// The trap category RouterOS reports for an interrupted command.
const INTERRUPTED: u32 = 2;

pub struct Subscription {
    inner: Arc<Inner>,
    tag: u32,
    items: mpsc::Receiver<Attrs>,
    state: Arc<StreamState>,
    /// Whether the router has been told to stop (or the stream has ended).
    stopped: bool,
}

impl Subscription {
    pub(super) fn new(
        inner: Arc<Inner>,
        tag: u32,
        items: mpsc::Receiver<Attrs>,
        state: Arc<StreamState>,
    ) -> Self {
        Self {
            inner,
            tag,
            items,
            state,
            stopped: false,
        }
    }

    /// The command's tag on the connection.
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// The next item; after the last, the reason the stream ended if it was
    /// not a plain `!done` (a trap, `!fatal`, the connection closing), then
    /// `None` for good.
    pub async fn next(&mut self) -> Option<Result<Attrs, ClientError>> {
        if let Some(item) = self.items.recv().await {
            return Some(Ok(item));
        }
        self.stopped = true;
        match self.state.take_end() {
            Some(Err(e)) => Some(Err(e)),
            _ => None,
        }
    }

    /// Items dropped because the queue was full when they arrived.
    pub fn lost(&self) -> u64 {
        self.state.lost.load(Ordering::Relaxed)
    }

    /// Stops the command: sends `/cancel`, then waits for the router to end
    /// it (`!trap` "interrupted" and `!done`, both expected here) and to
    /// answer the cancel. Items still queued are discarded; sentences the
    /// router sends for the tag afterwards are dropped by the reader.
    pub async fn cancel(mut self) -> Result<(), ClientError> {
        self.stopped = true;
        let wait = self.inner.timeouts.reply;
        let cancel = Command::Cancel { tag: self.tag };
        let ended = async {
            let answer = self.inner.collect(&cancel, wait, "cancel");
            let drained = async { while self.items.recv().await.is_some() {} };
            let (answer, ()) = tokio::join!(answer, drained);
            answer
        };
        let answer = match tokio::time::timeout(wait, ended).await {
            Ok(answer) => answer,
            Err(_) => {
                self.inner.forget(self.tag);
                return Err(ClientError::Timeout("cancel", wait));
            }
        };
        match self.state.take_end() {
            Some(Ok(())) | None => {}
            Some(Err(ClientError::Trap {
                category: Some(INTERRUPTED),
                ..
            })) => {}
            Some(Err(e)) => return Err(e),
        }
        // A stream that had ended by itself leaves nothing to cancel; the
        // router traps the cancel then, which changes nothing.
        match answer {
            Ok(_) | Err(ClientError::Trap { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Subscription {
    /// A stream dropped without [`Subscription::cancel`] is still cancelled,
    /// in the background, so the router stops sending for it.
    fn drop(&mut self) {
        // Ended already (its queue closed): nothing to cancel.
        if self.stopped || self.items.is_closed() {
            return;
        }
        self.inner.forget(self.tag);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (inner, tag) = (self.inner.clone(), self.tag);
        runtime.spawn(async move {
            let wait = inner.timeouts.reply;
            let _ = inner
                .collect(&Command::Cancel { tag }, wait, "cancel")
                .await;
        });
    }
}
