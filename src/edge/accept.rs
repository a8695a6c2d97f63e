//! Accepting a connection without spinning on errors.

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::{TcpListener, TcpStream};

/// The next connection on `listener`. An accept error (EMFILE and friends)
/// is handed to `report` and followed by a short pause, instead of a loop
/// that spins on the error while the file descriptors stay exhausted.
pub async fn next(listener: &TcpListener, report: impl Fn(&io::Error)) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(got) => return got,
            Err(error) => {
                report(&error);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
