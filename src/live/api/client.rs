//! An API client that can only send [`Command`]s: several commands in flight
//! on one connection, each reply routed to its command by `.tag`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot},
    task::AbortHandle,
};

use super::{
    command::Command,
    demux::{self, Route, Shared, StreamState},
    error::ClientError,
    reply::Attrs,
    subscription::Subscription,
    word::{Limits, compose_sentence},
};

/// Samples a stream holds for a consumer that has not read them yet; beyond,
/// new ones are dropped and counted ([`Subscription::lost`]).
pub const STREAM_QUEUE: usize = 64;

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

/// A connection to one router's API. Cloning shares the connection; it
/// closes when the last clone and the last [`Subscription`] are dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// Whole sentences to the writer task: a command given up half-way
    /// (a timeout) never leaves half a sentence on the wire.
    writer: mpsc::Sender<Vec<u8>>,
    routes: Shared,
    next_tag: AtomicU32,
    reader: AbortHandle,
    limits: Limits,
    pub(super) timeouts: Timeouts,
}

/// Sentences queued for the writer before senders wait.
const WRITE_QUEUE: usize = 64;

impl Drop for Inner {
    /// The writer ends by itself once its queue is drained and closed.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Opens a TCP connection to `addr` (the API listens on 8728).
    pub async fn connect(addr: SocketAddr, timeouts: Timeouts) -> Result<Self, ClientError> {
        let stream = tokio::time::timeout(timeouts.connect, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::ConnectTimeout(addr, timeouts.connect))?
            .map_err(|e| ClientError::Connect {
                addr,
                source: Arc::new(e),
            })?;
        // Samples are small and should leave at once.
        let _ = stream.set_nodelay(true);
        Ok(Self::new(stream, timeouts))
    }

    /// A client over any byte stream (TLS on 8729, a test's duplex). Starts
    /// the connection's reader, so it must run inside a tokio runtime.
    pub fn new<S>(io: S, timeouts: Timeouts) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reading, writing) = tokio::io::split(io);
        let routes = Shared::default();
        let limits = Limits::default();
        let reader = tokio::spawn(demux::read(reading, routes.clone(), limits)).abort_handle();
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(write(writing, queue, routes.clone(), timeouts.reply));
        Self {
            inner: Arc::new(Inner {
                writer,
                routes,
                next_tag: AtomicU32::new(1),
                reader,
                limits,
                timeouts,
            }),
        }
    }

    /// Plain login. A refusal carries the router's message; the router may
    /// close the connection after it.
    pub async fn login(&self, name: &str, password: &str) -> Result<(), ClientError> {
        let login = Command::Login {
            name: name.to_owned(),
            password: password.to_owned(),
        };
        let wait = self.inner.timeouts.login;
        match self.inner.collect(&login, wait, "login").await {
            Ok(_) => Ok(()),
            Err(ClientError::Trap { message, .. }) => Err(ClientError::LoginRefused(message)),
            Err(e) => Err(e),
        }
    }

    /// Runs a command that ends by itself and returns its items (none when
    /// the router answers `!empty`).
    pub async fn call(&self, command: &Command) -> Result<Vec<Attrs>, ClientError> {
        own_method(command)?;
        if command.is_stream() {
            return Err(ClientError::NotOneShot(command.path()));
        }
        let wait = self.inner.timeouts.reply;
        self.inner.collect(command, wait, command.path()).await
    }

    /// Starts a command that runs until cancelled.
    pub async fn subscribe(&self, command: &Command) -> Result<Subscription, ClientError> {
        own_method(command)?;
        if !command.is_stream() {
            return Err(ClientError::NotStream(command.path()));
        }
        let (items, rx) = mpsc::channel(STREAM_QUEUE);
        let state = Arc::new(StreamState::default());
        let route = Route::Stream {
            items,
            state: state.clone(),
        };
        let tag = self.inner.tag();
        self.inner
            .send_within(tag, command, route, "subscribe")
            .await?;
        Ok(Subscription::new(self.inner.clone(), tag, rx, state))
    }

    /// Reboots the router. Sent is done: a router answers `!done` and drops
    /// the connection, or just drops it, or says nothing while it goes down.
    /// Errors are a `!trap` (a user without the reboot policy) and failures
    /// to send.
    pub async fn reboot(&self) -> Result<(), ClientError> {
        let tag = self.inner.tag();
        let (done, outcome) = oneshot::channel();
        let route = collect_route(done);
        self.inner
            .send_within(tag, &Command::Reboot, route, "reboot")
            .await?;
        match tokio::time::timeout(self.inner.timeouts.reply, outcome).await {
            Ok(Ok(Err(
                e @ (ClientError::Trap { .. }
                | ClientError::Write(_)
                | ClientError::Timeout(..)
                | ClientError::Protocol(_)),
            ))) => Err(e),
            Ok(_) => Ok(()),
            Err(_) => {
                self.inner.forget(tag);
                Ok(())
            }
        }
    }

    /// Sentences that arrived for no command in flight: late replies to a
    /// cancelled command, reply words this client does not know.
    pub fn stray(&self) -> u64 {
        demux::lock(&self.inner.routes).stray()
    }
}

/// Refuses the commands [`Client::login`], [`Client::reboot`] and
/// [`Subscription::cancel`] send, whose answers mean something else.
fn own_method(command: &Command) -> Result<(), ClientError> {
    match command {
        Command::Login { .. } | Command::Cancel { .. } | Command::Reboot => {
            Err(ClientError::OwnMethod(command.path()))
        }
        _ => Ok(()),
    }
}

fn collect_route(done: oneshot::Sender<Result<Vec<Attrs>, ClientError>>) -> Route {
    Route::Collect {
        items: Vec::new(),
        overflow: false,
        trap: None,
        done,
    }
}

impl Inner {
    fn tag(&self) -> u32 {
        self.next_tag.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues `command` tagged `tag`, with `route` ready for its replies
    /// first.
    async fn send(&self, tag: u32, command: &Command, route: Route) -> Result<(), ClientError> {
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
    async fn send_within(
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

/// Writes queued sentences until the client is dropped. A write that fails
/// or stalls past `wait` ends the connection: a sentence may be cut short.
async fn write<W: AsyncWrite + Unpin>(
    mut io: W,
    mut queue: mpsc::Receiver<Vec<u8>>,
    routes: Shared,
    wait: Duration,
) {
    while let Some(bytes) = queue.recv().await {
        let written = tokio::time::timeout(wait, async {
            io.write_all(&bytes).await?;
            io.flush().await
        })
        .await;
        let error = match written {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => ClientError::Write(Arc::new(e)),
            Err(_) => ClientError::Timeout("write", wait),
        };
        demux::lock(&routes).end(error);
        return;
    }
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests;
