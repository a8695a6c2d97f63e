//! One API session of the stand-in: the commands it knows and their replies.

use super::*;

/// Commands that change the configuration: trapped for read-only users.
const WRITES: &[&str] = &[
    "/interface/set",
    "/interface/disable",
    "/user/add",
    "/user/set",
    "/ip/address/add",
    "/system/reset-configuration",
    "/system/script/run",
];

type Attrs<'a> = HashMap<&'a str, &'a str>;
type Row = Vec<(&'static str, String)>;

impl Session {
    pub(super) fn handle(&mut self, words: &[String]) -> Next {
        let Some((command, rest)) = words.split_first() else {
            return Next::Continue;
        };
        let tag = rest.iter().find_map(|w| w.strip_prefix(".tag="));
        let attrs: Attrs = rest
            .iter()
            .filter_map(|w| w.strip_prefix('=')?.split_once('='))
            .collect();
        let props: Option<Vec<String>> = attrs
            .get(".proplist")
            .map(|p| p.split(',').map(str::to_owned).collect());
        let props = props.as_deref();
        if self.user.is_none() && command != "/login" {
            self.out.send(&["!fatal", "not logged in"], None);
            return Next::Close;
        }
        match command.as_str() {
            "/login" => return self.login(&attrs, tag),
            "/cancel" => self.cancel(attrs.get("tag").copied(), tag),
            "/interface/print" => {
                let rows = (0..self.shared.config.interfaces.len())
                    .map(|i| interface_row(&self.shared, i))
                    .collect();
                self.print(rows, props, tag);
            }
            "/interface/monitor-traffic" => self.monitor(&attrs, props, tag),
            "/log/print" if attrs.contains_key("follow-only") => self.follow(false, props, tag),
            "/log/print" if attrs.contains_key("follow") => self.follow(true, props, tag),
            "/log/print" => {
                let rows = self
                    .shared
                    .logs
                    .lock()
                    .unwrap()
                    .iter()
                    .map(log_row)
                    .collect();
                self.print(rows, props, tag);
            }
            "/log/listen" => self.follow(false, props, tag),
            "/system/resource/print" => self.print(vec![resource_row(&self.shared)], props, tag),
            "/system/reboot" => return self.reboot(tag),
            c if WRITES.contains(&c) => {
                if self.user().read_only {
                    self.trap(None, "not enough permissions (9)", tag);
                } else {
                    self.out.send(&["!done"], tag);
                }
            }
            _ => self.trap(None, "no such command prefix", tag),
        }
        Next::Continue
    }

    fn user(&self) -> &User {
        &self.shared.config.users[self.user.unwrap_or_default()]
    }

    fn trap(&self, category: Option<u32>, message: &str, tag: Option<&str>) {
        let category = category.map(|c| format!("=category={c}"));
        let message = format!("=message={message}");
        let mut words = vec!["!trap"];
        words.extend(category.as_deref());
        words.push(&message);
        self.out.send(&words, tag);
        self.out.send(&["!done"], tag);
    }

    fn login(&mut self, attrs: &Attrs, tag: Option<&str>) -> Next {
        let (name, password) = (attrs.get("name").copied(), attrs.get("password").copied());
        let found = self
            .shared
            .config
            .users
            .iter()
            .position(|u| Some(u.name) == name && Some(u.password) == password);
        match found {
            Some(user) => {
                self.user = Some(user);
                self.shared.logins.fetch_add(1, Ordering::SeqCst);
                self.out.send(&["!done"], tag);
                Next::Continue
            }
            // After a refused login the session is of no use: closed.
            None => {
                self.trap(None, "invalid user name or password (6)", tag);
                Next::Close
            }
        }
    }

    fn print(&self, rows: Vec<Row>, props: Option<&[String]>, tag: Option<&str>) {
        if rows.is_empty() && sends_empty(self.shared.config.version) {
            self.shared.empties.fetch_add(1, Ordering::SeqCst);
            self.out.send(&["!empty"], tag);
        }
        for row in rows {
            self.out.item(&row, props, tag);
        }
        self.out.send(&["!done"], tag);
    }

    fn monitor(&mut self, attrs: &Attrs, props: Option<&[String]>, tag: Option<&str>) {
        let interfaces = &self.shared.config.interfaces;
        let wanted = attrs.get("interface").copied().unwrap_or_default();
        let found: Option<Vec<usize>> = wanted
            .split(',')
            .map(|n| interfaces.iter().position(|i| i.name == n))
            .collect();
        let Some(found) = found else {
            return self.trap(None, "input does not match any value of interface", tag);
        };
        if attrs.contains_key("once") {
            for &i in &found {
                self.out.item(&traffic_row(&self.shared, i, 0), props, tag);
            }
            self.out.send(&["!done"], tag);
            return;
        }
        let interval = attrs
            .get("interval")
            .and_then(|s| parse_interval(s))
            .unwrap_or(self.shared.config.interval);
        let (out, shared) = (self.out.clone(), self.shared.clone());
        let (props, owned_tag) = (props.map(<[String]>::to_vec), tag.map(str::to_owned));
        self.spawn_stream(tag, async move {
            for round in 0.. {
                for &i in &found {
                    let row = traffic_row(&shared, i, round);
                    if !out.item(&row, props.as_deref(), owned_tag.as_deref()) {
                        return;
                    }
                    shared.samples.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(interval).await;
            }
        });
    }

    fn follow(&mut self, existing: bool, props: Option<&[String]>, tag: Option<&str>) {
        // Subscribed before anything else, so no entry pushed from now on is missed.
        let mut feed = self.shared.log_feed.subscribe();
        if existing {
            for entry in self.shared.logs.lock().unwrap().iter() {
                self.out.item(&log_row(entry), props, tag);
            }
        }
        let out = self.out.clone();
        let (props, owned_tag) = (props.map(<[String]>::to_vec), tag.map(str::to_owned));
        self.spawn_stream(tag, async move {
            loop {
                match feed.recv().await {
                    Ok(entry) => {
                        if !out.item(&log_row(&entry), props.as_deref(), owned_tag.as_deref()) {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    fn spawn_stream(
        &mut self,
        tag: Option<&str>,
        stream: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let active = Active::new(self.shared.clone());
        let task = tokio::spawn(async move {
            let _active = active;
            stream.await;
        });
        // Untagged streams cannot be cancelled; they end with the session.
        self.streams
            .insert(tag.unwrap_or_default().to_owned(), task.abort_handle());
    }

    /// Stops the stream tagged `target` as RouterOS does: `!trap`
    /// "interrupted" and `!done` for it, `!done` for the cancel, and then two
    /// more sentences for the dead tag, one at once and one a few
    /// milliseconds later.
    fn cancel(&mut self, target: Option<&str>, tag: Option<&str>) {
        let Some((target, stream)) = target.and_then(|t| self.streams.remove_entry(t)) else {
            return self.trap(None, "unknown command tag", tag);
        };
        stream.abort();
        let target = Some(target.as_str());
        self.out
            .send(&["!trap", "=category=2", "=message=interrupted"], target);
        self.out.send(&["!done"], tag);
        self.out.send(&["!done"], target);
        let late = ["!re", "=name=late"];
        self.out.send(&late, target);
        self.shared.late.fetch_add(1, Ordering::SeqCst);
        let (out, shared, target) = (
            self.out.clone(),
            self.shared.clone(),
            target.map(str::to_owned),
        );
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if out.send(&late, target.as_deref()) {
                shared.late.fetch_add(1, Ordering::SeqCst);
            }
        });
    }

    fn reboot(&mut self, tag: Option<&str>) -> Next {
        if !self.user().reboot {
            self.trap(None, "not enough permissions (9)", tag);
            return Next::Continue;
        }
        self.shared.reboots.fetch_add(1, Ordering::SeqCst);
        *self.shared.booted.lock().unwrap() = Instant::now();
        if self.shared.config.reboot == Reboot::DoneThenDrop {
            self.out.send(&["!done"], tag);
        }
        // Every other session goes down with the router.
        let _ = self.shared.kill.send(Kill::Drop);
        Next::Close
    }
}

/// Counts a running stream for as long as its task lives (aborted included).
struct Active(Arc<Shared>);

impl Active {
    fn new(shared: Arc<Shared>) -> Self {
        shared.active_streams.fetch_add(1, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

fn sends_empty(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (7, 18)
}

/// `100ms`, `1s` or plain seconds (`0.5`), as the console takes them.
fn parse_interval(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    let secs: f64 = s.strip_suffix('s').unwrap_or(s).parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}

fn interface_row(shared: &Shared, i: usize) -> Row {
    let iface = &shared.config.interfaces[i];
    vec![
        (".id", format!("*{:X}", i + 1)),
        ("name", iface.name.to_owned()),
        ("type", iface.kind.to_owned()),
        ("mtu", "1500".to_owned()),
        ("running", iface.running.to_string()),
        ("disabled", "false".to_owned()),
    ]
}

/// Rates that differ by interface and round, so a test can tell samples apart.
fn traffic_row(shared: &Shared, i: usize, round: u64) -> Row {
    let base = (i as u64 + 1) * 1_000_000 + round * 1000;
    vec![
        ("name", shared.config.interfaces[i].name.to_owned()),
        ("rx-packets-per-second", (base / 1000).to_string()),
        ("rx-bits-per-second", base.to_string()),
        ("fp-rx-packets-per-second", "0".to_owned()),
        ("fp-rx-bits-per-second", "0".to_owned()),
        ("tx-packets-per-second", (base / 2000).to_string()),
        ("tx-bits-per-second", (base / 2).to_string()),
        ("rx-drops-per-second", "0".to_owned()),
    ]
}

fn log_row(entry: &LogEntry) -> Row {
    vec![
        (".id", format!("*{:X}", entry.id)),
        ("time", format!("12:00:{:02}", entry.id % 60)),
        ("topics", entry.topics.clone()),
        ("message", entry.message.clone()),
    ]
}

fn resource_row(shared: &Shared) -> Row {
    let uptime = shared.booted.lock().unwrap().elapsed();
    vec![
        ("uptime", format_uptime(uptime)),
        ("version", format!("{} (stable)", shared.config.version)),
        ("build-time", "2025-02-24 09:45:13".to_owned()),
        ("free-memory", "28733440".to_owned()),
        ("total-memory", "67108864".to_owned()),
        ("cpu", "MIPS 24Kc V7.4".to_owned()),
        ("cpu-count", "1".to_owned()),
        ("cpu-load", "3".to_owned()),
        ("architecture-name", "mipsbe".to_owned()),
        ("board-name", "hAP lite".to_owned()),
        ("platform", "MikroTik".to_owned()),
    ]
}

/// RouterOS's style: `3d4h5s`, units that are zero left out.
fn format_uptime(d: Duration) -> String {
    let mut s = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= size {
            out += &format!("{}{unit}", s / size);
            s %= size;
        }
    }
    if s > 0 || out.is_empty() {
        out += &format!("{s}s");
    }
    out
}
