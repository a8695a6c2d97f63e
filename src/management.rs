//! OpenVPN's management interface as a connection: connecting and logging
//! in, splitting what arrives into bounded lines, and holding a session for
//! as long as the process runs (again after every failure, with backoff).
//! Both the log watcher ([`crate::vpnlog`]) and the agent ([`crate::agent`])
//! speak through it; what they say is theirs.

use std::{future::Future, net::SocketAddr, path::Path, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::TcpStream,
    time::{Instant, sleep, timeout},
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

/// Runs `session` for as long as the process runs: again after it ends or
/// fails, with backoff (1 s doubling to 30 s, back to 1 s after a session
/// that lasted longer than that). A problem is logged when it changes, not on
/// every retry; `label` says whose session it is.
pub async fn keep<F, Fut>(addr: SocketAddr, label: &str, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ManagementError>>,
{
    let mut backoff = Duration::from_secs(1);
    let mut last_problem = String::new();
    loop {
        let began = Instant::now();
        let problem = match session().await {
            Ok(()) => ManagementError::Closed.to_string(),
            Err(e) => e.to_string(),
        };
        if began.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_secs(1);
        }
        if problem != last_problem {
            warn!(%label, %addr, problem = %problem, retry_in = ?backoff, "OpenVPN management interface");
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
}
