//! OpenVPN's management interface as a connection: connecting and logging
//! in, splitting what arrives into bounded lines, noticing an interface that
//! stopped answering ([`Watchdog`]), and holding a session for as long as
//! the process runs (again after every failure, with backoff, each ending
//! counted in [`Reconnects`]). Both the log watcher ([`crate::vpnlog`]) and
//! the agent ([`crate::agent`]) speak through it; what they say is theirs.

use std::{
    future::Future,
    net::SocketAddr,
    path::Path,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use tokio::{
    io::AsyncWriteExt,
    net::TcpStream,
    time::{Instant, Interval, MissedTickBehavior, interval_at, sleep, sleep_until, timeout},
};
use tracing::warn;

/// Longest line accepted from a management interface.
pub const MAX_LINE: usize = 64 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("no connection within 10 s")]
    ConnectTimeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the interface asks for a password: set management_password_file")]
    NeedsPassword,
    #[error("reading the password file {0}: {1}")]
    PasswordFile(String, std::io::Error),
    #[error("a line longer than {MAX_LINE} bytes")]
    LongLine,
    #[error("the interface closed the connection")]
    Closed,
    #[error("the interface stopped answering")]
    Silent,
}

/// Connects to `addr` and sends the password (first line of `password_file`).
pub async fn connect(
    addr: SocketAddr,
    password_file: Option<&Path>,
) -> Result<TcpStream, ManagementError> {
    let mut stream = timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| ManagementError::ConnectTimeout)?
        .map_err(ManagementError::Connect)?;
    if let Some(file) = password_file {
        let text = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| ManagementError::PasswordFile(file.display().to_string(), e))?;
        let password = text.lines().next().unwrap_or("");
        stream.write_all(format!("{password}\n").as_bytes()).await?;
    }
    Ok(stream)
}

/// Splits the bytes that arrive into lines.
#[derive(Debug)]
pub struct Lines {
    buf: Vec<u8>,
    /// Whether a password was sent (else a password prompt is an error).
    logged_in: bool,
}

impl Lines {
    pub fn new(logged_in: bool) -> Self {
        Self {
            buf: Vec::with_capacity(4096),
            logged_in,
        }
    }

    /// Feeds `bytes`; `each` gets every complete line (without its line end).
    pub fn feed(
        &mut self,
        bytes: &[u8],
        mut each: impl FnMut(&str),
    ) -> Result<(), ManagementError> {
        self.buf.extend_from_slice(bytes);
        let mut used = 0;
        while let Some(end) = self.buf[used..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.buf[used..used + end]);
            each(line.trim_end_matches('\r'));
            used += end + 1;
        }
        self.buf.drain(..used);
        if self.buf.starts_with(b"ENTER PASSWORD:") && !self.logged_in {
            return Err(ManagementError::NeedsPassword);
        }
        if self.buf.len() > MAX_LINE {
            return Err(ManagementError::LongLine);
        }
        Ok(())
    }
}

/// Asks the interface something every `probe_every` and tells when nothing
/// came back for `limit`. OpenVPN answers every command, so a connection
/// that stays open but silent means a stopped or wedged process: without
/// this, a session would wait on it forever (TCP keeps a stopped peer's
/// connection open, and the kernel even accepts new ones for it).
#[derive(Debug)]
pub struct Watchdog {
    probe: Interval,
    limit: Duration,
    heard: Instant,
}

impl Watchdog {
    /// The first probe goes `probe_every` from now (the session's opening
    /// commands are the first thing to answer).
    pub fn new(probe_every: Duration, limit: Duration) -> Self {
        let now = Instant::now();
        let mut probe = interval_at(now + probe_every, probe_every);
        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            probe,
            limit,
            heard: now,
        }
    }

    /// Something arrived from the interface.
    pub fn heard(&mut self) {
        self.heard = Instant::now();
    }

    /// Waits until the interface is to be asked something (so that it has
    /// something to answer), or fails with [`ManagementError::Silent`] once
    /// nothing was heard for the limit, whichever comes first.
    pub async fn due(&mut self) -> Result<(), ManagementError> {
        tokio::select! {
            // Silence wins a tie: a probe then would only wait for nothing.
            biased;
            () = sleep_until(self.heard + self.limit) => Err(ManagementError::Silent),
            _ = self.probe.tick() => Ok(()),
        }
    }
}

/// Why a management session ended, as metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The interface closed the connection.
    Closed,
    /// It stopped answering ([`Watchdog`]).
    Silent,
    /// Anything else: no connection, a refused password, a read error.
    Error,
}

impl Ending {
    pub const ALL: [Ending; 3] = [Ending::Closed, Ending::Silent, Ending::Error];

    pub fn of(result: &Result<(), ManagementError>) -> Self {
        match result {
            Ok(()) | Err(ManagementError::Closed) => Self::Closed,
            Err(ManagementError::Silent) => Self::Silent,
            Err(_) => Self::Error,
        }
    }

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Silent => "silent",
            Self::Error => "error",
        }
    }
}

/// Sessions ended (and made again), by [`Ending`].
#[derive(Debug, Default)]
pub struct Reconnects([AtomicU64; Ending::ALL.len()]);

impl Reconnects {
    pub fn count(&self, ending: Ending) {
        self.0[ending as usize].fetch_add(1, Relaxed);
    }

    pub fn get(&self, ending: Ending) -> u64 {
        self.0[ending as usize].load(Relaxed)
    }

    /// Each ending with its counter, for metrics.
    pub fn by_reason(&self) -> impl Iterator<Item = (&'static str, &AtomicU64)> {
        Ending::ALL.iter().map(|&e| (e.name(), &self.0[e as usize]))
    }
}

/// Runs `session` for as long as the process runs: again after it ends or
/// fails, with backoff (1 s doubling to 30 s, back to 1 s after a session
/// that lasted longer than that), each ending counted in `reconnects`. A
/// problem is logged when it changes, not on every retry; `label` says whose
/// session it is.
pub async fn keep<F, Fut>(addr: SocketAddr, label: &str, reconnects: &Reconnects, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ManagementError>>,
{
    let mut backoff = Duration::from_secs(1);
    let mut last_problem = String::new();
    loop {
        let began = Instant::now();
        let result = session().await;
        reconnects.count(Ending::of(&result));
        let problem = match result {
            Ok(()) => ManagementError::Closed.to_string(),
            Err(e) => e.to_string(),
        };
        if began.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_secs(1);
        }
        if problem != last_problem {
            warn!(%label, %addr, problem = %problem, retry_in = %humantime::format_duration(backoff), "OpenVPN management interface");
            last_problem = problem;
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_bounded_and_a_prompt_without_password_is_an_error() {
        let mut lines = Lines::new(false);
        let mut got = Vec::new();
        lines
            .feed(b">INFO:hello\r\n>CLIENT:CONN", |l| got.push(l.to_owned()))
            .unwrap();
        lines
            .feed(b"ECT,1,2\n", |l| got.push(l.to_owned()))
            .unwrap();
        assert_eq!(got, [">INFO:hello", ">CLIENT:CONNECT,1,2"]);
        assert!(matches!(
            lines.feed(b"ENTER PASSWORD:", |_| {}),
            Err(ManagementError::NeedsPassword)
        ));
        let mut lines = Lines::new(true);
        assert!(lines.feed(b"ENTER PASSWORD:", |_| {}).is_ok());
        assert!(matches!(
            lines.feed(&vec![b'x'; MAX_LINE + 1], |_| {}),
            Err(ManagementError::LongLine)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_probes_and_tells_silence_at_its_limit() {
        let start = Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(15), Duration::from_secs(45));
        // Answered probes keep the session alive for as long as they come.
        for n in 1..=10u32 {
            assert!(dog.due().await.is_ok());
            assert_eq!(start.elapsed(), Duration::from_secs(15) * n);
            dog.heard();
        }
        // Then nothing: two more probes, and silence 45 s after the last answer.
        let last = Instant::now();
        assert!(dog.due().await.is_ok());
        assert!(dog.due().await.is_ok());
        assert!(matches!(dog.due().await, Err(ManagementError::Silent)));
        assert_eq!(last.elapsed(), Duration::from_secs(45));
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_shorter_than_the_probe_interval_still_holds() {
        let start = Instant::now();
        let mut dog = Watchdog::new(Duration::from_secs(60), Duration::from_secs(45));
        assert!(matches!(dog.due().await, Err(ManagementError::Silent)));
        assert_eq!(start.elapsed(), Duration::from_secs(45));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_counts_every_ending_by_its_reason() {
        let reconnects = Reconnects::default();
        let mut results = vec![
            Err(ManagementError::Silent),
            Err(ManagementError::ConnectTimeout),
            Ok(()),
            Err(ManagementError::Silent),
        ];
        let addr: SocketAddr = "127.0.0.1:7505".parse().unwrap();
        let kept = keep(addr, "test", &reconnects, || {
            let next = results.pop();
            async move { next.unwrap_or(Err(ManagementError::Closed)) }
        });
        // Four sessions and their backoffs (1 + 2 + 4 + 8 s) fit in 20 s.
        let _ = timeout(Duration::from_secs(20), kept).await;
        let got: Vec<_> = Ending::ALL.map(|e| reconnects.get(e)).into();
        assert_eq!(got, [1 + 1, 2, 1], "closed, silent, error");
    }
}
