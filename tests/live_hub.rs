//! The live view's hub against the RouterOS API stand-in: one connection
//! and one stream per router shared by its viewers, cancelled after the last
//! one leaves, limits, and a router that goes away and comes back.

mod common;

use std::{net::SocketAddr, sync::Arc, sync::atomic::Ordering::Relaxed, time::Duration};

use common::routeros::{Config, RouterOs};
use futures_util::future::BoxFuture;
use mgnt::live::{
    api::{Client, Interfaces, Timeouts},
    hub::{Connector, Hub, Limits, Refused, View, Want},
    message::Message,
};
use uuid::Uuid;

/// Straight to the stand-in, as the read-only user.
struct Direct(SocketAddr);

impl Connector for Direct {
    fn open(&self, _site: Uuid) -> BoxFuture<'static, Result<Client, String>> {
        let addr = self.0;
        Box::pin(async move {
            let client = Client::connect(addr, Timeouts::default())
                .await
                .map_err(|e| e.to_string())?;
            client
                .login("viewer", "view")
                .await
                .map_err(|e| e.to_string())?;
            Ok(client)
        })
    }
}

fn limits() -> Limits {
    Limits {
        max_viewers_per_router: 3,
        max_streams_per_user: 4,
        linger: Duration::from_millis(200),
    }
}

fn traffic(names: &[&str]) -> Want {
    Want {
        interfaces: Some(Interfaces::new(names.iter().copied()).unwrap()),
        log: false,
    }
}

/// The next message, within 20 s (a loaded machine).
async fn next(view: &mut View) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(20), view.messages.recv())
        .await
        .expect("a message in time")
}

async fn next_traffic(view: &mut View) -> String {
    loop {
        match next(view).await {
            Some(Message::Traffic { interface, .. }) => return interface,
            Some(_) => continue,
            None => panic!("the view ended"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_share_one_stream_which_is_cancelled_after_the_last_leaves() {
    let router = RouterOs::start(Config::default());
    let hub = Hub::new(Arc::new(Direct(router.addr())), limits());
    let site = Uuid::new_v4();
    let mut a = hub.view(site, "portal", traffic(&["ether1"])).unwrap();
    let mut b = hub.view(site, "admin", traffic(&["ether1"])).unwrap();
    assert_eq!(next_traffic(&mut a).await, "ether1");
    assert_eq!(next_traffic(&mut b).await, "ether1");
    assert_eq!(router.connections(), 1, "one connection");
    assert_eq!(router.active_streams(), 1, "one stream for both");
    assert_eq!(hub.metrics().viewers.load(Relaxed), 2);

    // Another interface set is a second stream, dropped with its viewer.
    let mut c = hub
        .view(site, "portal", traffic(&["ether1", "bridge1"]))
        .unwrap();
    next_traffic(&mut c).await;
    router
        .until("two streams", |r| r.active_streams() == 2)
        .await;
    drop(c);
    router
        .until("the second cancelled", |r| r.active_streams() == 1)
        .await;

    drop(a);
    assert_eq!(next_traffic(&mut b).await, "ether1", "b still watches");
    drop(b);
    router
        .until("cancelled after the last", |r| r.active_streams() == 0)
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while hub.metrics().routers.load(Relaxed) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the router's task ends"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(hub.metrics().streams.load(Relaxed), 0);
    assert_eq!(hub.metrics().viewers.load(Relaxed), 0);

    // A viewer after that opens a new connection.
    let mut d = hub.view(site, "portal", traffic(&["ether1"])).unwrap();
    next_traffic(&mut d).await;
    assert_eq!(router.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_close_with_a_reason() {
    let router = RouterOs::start(Config::default());
    let hub = Hub::new(Arc::new(Direct(router.addr())), limits());
    let site = Uuid::new_v4();
    let nothing = Want {
        interfaces: None,
        log: false,
    };
    assert_eq!(
        hub.view(site, "portal", nothing).err(),
        Some(Refused::Nothing)
    );
    let mut views: Vec<View> = (0..3)
        .map(|_| hub.view(site, "portal", traffic(&["ether1"])).unwrap())
        .collect();
    for v in &mut views {
        next_traffic(v).await;
    }
    let mut fourth = hub.view(site, "admin", traffic(&["ether1"])).unwrap();
    match next(&mut fourth).await {
        Some(Message::Error { code, .. }) => assert_eq!(code, "too_many_viewers"),
        other => panic!("{other:?}"),
    }
    assert_eq!(next(&mut fourth).await, None, "then closed");
    // The user's fourth view is allowed, the fifth is not.
    let other = Uuid::new_v4();
    let _held = hub.view(other, "portal", traffic(&["ether1"])).unwrap();
    match hub.view(other, "portal", traffic(&["ether1"])) {
        Err(Refused::TooManyStreams { max, .. }) => assert_eq!(max, 4),
        other => panic!("{:?}", other.err()),
    }
    assert_eq!(hub.metrics().refused_viewers.load(Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_that_goes_away_is_reported_and_reconnected() {
    let router = RouterOs::start(Config::default());
    let addr = router.addr();
    let hub = Hub::new(Arc::new(Direct(addr)), limits());
    let site = Uuid::new_v4();
    let mut view = hub
        .view(
            site,
            "portal",
            Want {
                interfaces: Some(Interfaces::new(["ether1"]).unwrap()),
                log: true,
            },
        )
        .unwrap();
    next_traffic(&mut view).await;
    router
        .until("two streams", |r| r.active_streams() == 2)
        .await;
    router.push_log("system,info", "config changed by admin");
    loop {
        if let Some(Message::Log {
            message, topics, ..
        }) = next(&mut view).await
        {
            assert_eq!(message, "config changed by admin");
            assert_eq!(topics, ["system", "info"]);
            break;
        }
    }

    // Gone: the listener too.
    drop(router);
    loop {
        match next(&mut view).await {
            Some(Message::Error { code, .. }) => {
                assert_eq!(code, "router_unreachable");
                break;
            }
            Some(_) => continue,
            None => panic!("the view ended"),
        }
    }
    // Back on the same address: the hub reconnects and samples resume.
    let router = RouterOs::start_on(addr, Config::default());
    assert_eq!(next_traffic(&mut view).await, "ether1");
    router
        .until("both streams again", |r| r.active_streams() == 2)
        .await;
    assert!(hub.metrics().connects.load(Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_user_logs_in_with_the_first_password_the_router_holds() {
    use common::routeros::User;
    use mgnt::live::connect::login_any;
    let mut config = Config::default();
    config.users.push(User {
        name: "mgnt-live",
        password: "applied-job-password",
        read_only: true,
        reboot: true,
    });
    let router = RouterOs::start(config);
    let passwords = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let dial = |addr| {
        move || async move {
            (Client::connect(addr, Timeouts::default()).await).map_err(|e| e.to_string())
        }
    };
    let place = router.addr().to_string();
    // The open job's password first refused, the applied one's accepted.
    let client = login_any(
        dial(router.addr()),
        &place,
        &passwords(&["open-job-password", "applied-job-password"]),
    )
    .await
    .unwrap();
    assert_eq!(router.connections(), 2, "one connection per try");
    drop(client);
    // A router whose user predates both jobs: a clear way out.
    let refused = login_any(
        dial(router.addr()),
        &place,
        &passwords(&["open-job-password"]),
    )
    .await
    .err()
    .unwrap();
    assert!(refused.contains("`mgnt-live`"), "{refused}");
    assert!(refused.contains("recreate"), "{refused}");
    let addr = router.addr();
    drop(router);
    let gone = login_any(dial(addr), &place, &passwords(&["x"]))
        .await
        .err()
        .unwrap();
    assert!(gone.contains("does not answer"), "{gone}");
}
