//! An API client that can only send [`Command`]s: several commands in flight
//! on one connection, each reply routed to its command by `.tag`.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU32},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot},
};

use super::{
    command::Command,
    connection::{Inner, Timeouts, collect_route},
    demux::{self, Route, Shared, StreamState},
    error::ClientError,
    reply::Attrs,
    subscription::Subscription,
    word::Limits,
};

/// Samples a stream holds for a consumer that has not read them yet; beyond,
/// new ones are dropped and counted ([`Subscription::lost`]).
pub const STREAM_QUEUE: usize = 64;

/// A connection to one router's API. Cloning shares the connection; it
/// closes when the last clone and the last [`Subscription`] are dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Sentences queued for the writer before senders wait.
const WRITE_QUEUE: usize = 64;

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

    /// Whether the connection has ended (the router closed it, say).
    pub fn ended(&self) -> bool {
        demux::lock(&self.inner.routes).ended().is_some()
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
