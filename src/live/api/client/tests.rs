//! The client against a scripted router on an in-memory pipe: what the
//! stand-in server of the integration tests cannot easily provoke.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::live::api::{
    command::Interfaces,
    word::{Parser, Sentence, compose_sentence},
};

/// The router's end of the pipe.
struct Router {
    io: DuplexStream,
    parser: Parser,
}

impl Router {
    async fn read(&mut self) -> Sentence {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(s) = self.parser.next_sentence().unwrap() {
                return s;
            }
            let n = self.io.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed");
            self.parser.feed(&buf[..n]);
        }
    }

    /// Reads a command and returns its tag.
    async fn command(&mut self, path: &str) -> String {
        let words = self.read().await;
        assert_eq!(words[0], path);
        let tag = words.iter().find_map(|w| w.strip_prefix(".tag="));
        tag.expect("tagged").to_owned()
    }

    async fn send(&mut self, sentences: &[Vec<String>]) {
        let mut bytes = Vec::new();
        for words in sentences {
            bytes.extend(compose_sentence(words, &Limits::default()).unwrap());
        }
        self.io.write_all(&bytes).await.unwrap();
    }
}

fn sentence(words: &[&str], tag: &str) -> Vec<String> {
    let mut out: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
    out.push(format!(".tag={tag}"));
    out
}

fn pair() -> (Client, Router) {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let timeouts = Timeouts {
        reply: Duration::from_secs(20),
        ..Timeouts::default()
    };
    let router = Router {
        io: theirs,
        parser: Parser::default(),
    };
    (Client::new(ours, timeouts), router)
}

fn monitor() -> Command {
    Command::MonitorTraffic {
        interfaces: Interfaces::new(["ether1"]).unwrap(),
        once: false,
    }
}

#[tokio::test]
async fn a_slow_reader_loses_samples_counted_without_holding_up_others() {
    let (client, mut router) = pair();
    let mut stream = client.subscribe(&Command::LogFollow).await.unwrap();
    let tag = router.command("/log/print").await;
    let flood: Vec<Vec<String>> = (0..STREAM_QUEUE + 36)
        .map(|i| sentence(&["!re", &format!("=message=line {i}")], &tag))
        .collect();
    router.send(&flood).await;
    // Nothing read from the stream yet: a one-shot command still gets its
    // answer, so the reader went past the full queue.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(&Command::ResourcePrint).await }
    });
    let print = router.command("/system/resource/print").await;
    router
        .send(&[
            sentence(&["!re", "=version=7.18"], &print),
            sentence(&["!done"], &print),
        ])
        .await;
    let rows = call.await.unwrap().unwrap();
    assert_eq!(rows[0]["version"], "7.18");
    assert_eq!(stream.lost(), 36);
    for i in 0..STREAM_QUEUE {
        let item = stream.next().await.unwrap().unwrap();
        assert_eq!(item["message"], format!("line {i}"));
    }
    router.send(&[sentence(&["!done"], &tag)]).await;
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn empty_answers_and_late_sentences_for_ended_commands() {
    let (client, mut router) = pair();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(&Command::InterfacePrint).await }
    });
    let tag = router.command("/interface/print").await;
    router
        .send(&[
            sentence(&["!empty"], &tag),
            sentence(&["!done"], &tag),
            sentence(&["!re", "=name=late"], &tag),
            vec!["!re".to_owned(), "=name=untagged".to_owned()],
            sentence(&["!newfangled"], &tag),
        ])
        .await;
    assert!(call.await.unwrap().unwrap().is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client.stray() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "{}", client.stray());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn fatal_ends_every_stream_and_later_commands() {
    let (client, mut router) = pair();
    let mut traffic = client.subscribe(&monitor()).await.unwrap();
    let mut log = client.subscribe(&Command::LogListen).await.unwrap();
    let tag = router.command("/interface/monitor-traffic").await;
    router.command("/log/listen").await;
    router
        .send(&[
            sentence(&["!re", "=name=ether1"], &tag),
            vec![
                "!fatal".to_owned(),
                "session terminated on request".to_owned(),
            ],
        ])
        .await;
    assert_eq!(traffic.next().await.unwrap().unwrap()["name"], "ether1");
    let fatal = |r: Option<Result<Attrs, ClientError>>| matches!(r, Some(Err(ClientError::Fatal(m))) if m == "session terminated on request");
    assert!(fatal(traffic.next().await));
    assert!(traffic.next().await.is_none());
    assert!(fatal(log.next().await));
    let later = client.call(&Command::ResourcePrint).await;
    assert!(fatal(Some(later.map(|_| Attrs::new()))));
}

#[tokio::test]
async fn a_trap_on_a_one_shot_command_is_its_error() {
    let (client, mut router) = pair();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(&Command::ResourcePrint).await }
    });
    let tag = router.command("/system/resource/print").await;
    router
        .send(&[
            sentence(&["!trap", "=message=not enough permissions (9)"], &tag),
            sentence(&["!done"], &tag),
        ])
        .await;
    assert!(matches!(
        call.await.unwrap(),
        Err(ClientError::Trap { category: None, message }) if message == "not enough permissions (9)"
    ));
}

#[tokio::test]
async fn commands_go_through_the_method_that_fits_them() {
    let (client, _router) = pair();
    assert!(matches!(
        client.call(&Command::LogFollow).await,
        Err(ClientError::NotOneShot("/log/print"))
    ));
    assert!(matches!(
        client.call(&Command::Reboot).await,
        Err(ClientError::OwnMethod("/system/reboot"))
    ));
    assert!(matches!(
        client.subscribe(&Command::Cancel { tag: 1 }).await,
        Err(ClientError::OwnMethod("/cancel"))
    ));
    assert!(matches!(
        client.subscribe(&Command::InterfacePrint).await,
        Err(ClientError::NotStream("/interface/print"))
    ));
}

#[tokio::test]
async fn a_dropped_subscription_is_cancelled_in_the_background() {
    let (client, mut router) = pair();
    let stream = client.subscribe(&monitor()).await.unwrap();
    let tag = router.command("/interface/monitor-traffic").await;
    drop(stream);
    let cancel = router.read().await;
    assert_eq!(cancel[0], "/cancel");
    assert_eq!(cancel[1], format!("=tag={tag}"));
}

/// A pipe whose router end never reads: writes stall once 16 bytes wait.
fn stalled(timeouts: Timeouts) -> (Client, DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(16);
    (Client::new(ours, timeouts), theirs)
}

#[tokio::test(start_paused = true)]
async fn a_router_that_stops_reading_times_out_login_then_ends_the_connection() {
    let timeouts = Timeouts {
        login: Duration::from_secs(2),
        reply: Duration::from_secs(3),
        ..Timeouts::default()
    };
    let (client, _router) = stalled(timeouts);
    assert!(matches!(
        client.login("admin", "secret").await,
        Err(ClientError::Timeout("login", _))
    ));
    // The stalled write is given up at the reply timeout, and with it the
    // connection: half a sentence may be on the wire.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(matches!(
        client.call(&Command::ResourcePrint).await,
        Err(ClientError::Timeout("write", _))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_reboot_the_router_says_nothing_about_is_sent() {
    let (client, mut router) = pair();
    let reboot = tokio::spawn({
        let client = client.clone();
        async move { client.reboot().await }
    });
    router.command("/system/reboot").await;
    assert!(reboot.await.unwrap().is_ok());
}
