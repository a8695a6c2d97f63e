//! Keeps the credential cache in step with the control plane: a long poll for
//! changes after the cache's sequence number, a full re-read every
//! [`FULL_EVERY`] as a safety net, the control URLs tried in turn. The task
//! is the cache's one writer: it saves each new cache, then publishes it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

use crate::{clock::now, vpnlog::report::Batch};

use super::{
    AgentConfig,
    cache::{Cache, Changes},
    firewall::{self, Policy},
};

/// How long one request waits for a change.
const WAIT: Duration = Duration::from_secs(25);
/// How often everything is read again, in case a change was missed.
const FULL_EVERY: Duration = Duration::from_secs(600);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A client for the control plane's agent routes.
pub struct Control {
    agent: ureq::Agent,
    urls: Vec<String>,
    token: String,
    pub counters: Arc<ControlCounters>,
}

/// How the control plane answered, for metrics.
#[derive(Default)]
pub struct ControlCounters {
    /// Unix time of the last answer taken (0: none yet).
    pub answered_at: AtomicU64,
    /// Requests that no control URL answered usably.
    pub failures: AtomicU64,
}

impl Control {
    pub fn new(config: &AgentConfig, token: String) -> Result<Self, String> {
        let mut builder = ureq::Agent::config_builder()
            .timeout_global(Some(WAIT + Duration::from_secs(15)))
            .http_status_as_error(false);
        if let Some(file) = &config.ca_file {
            builder = builder.tls_config(crate::edge::tls::client_trusting(file)?);
        }
        Ok(Self {
            agent: builder.build().new_agent(),
            urls: config.control.clone(),
            token,
            counters: Arc::default(),
        })
    }

    /// Runs `call` against each control URL in turn (with the agent's
    /// token) until one answers 200; `read` takes that answer. Counted.
    fn first<T>(
        &self,
        call: impl Fn(&str, &str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        read: impl FnOnce(&str, ureq::http::Response<ureq::Body>) -> Result<T, String>,
    ) -> Result<T, String> {
        let got = self.try_each(call, read);
        match &got {
            Ok(_) => self.counters.answered_at.store(now(), Relaxed),
            Err(_) => {
                self.counters.failures.fetch_add(1, Relaxed);
            }
        }
        got
    }

    fn try_each<T>(
        &self,
        call: impl Fn(&str, &str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        read: impl FnOnce(&str, ureq::http::Response<ureq::Body>) -> Result<T, String>,
    ) -> Result<T, String> {
        let auth = format!("Bearer {}", self.token);
        let mut problems = Vec::new();
        for base in &self.urls {
            match call(base, &auth) {
                Ok(r) if r.status() == 200 => return read(base, r),
                Ok(r) => problems.push(format!("{base}: HTTP {}", r.status())),
                Err(e) => problems.push(format!("{base}: {e}")),
            }
        }
        Err(problems.join("; "))
    }

    /// Changes after `since`, from the first control URL that answers.
    pub fn changes(&self, since: u64, wait: Duration) -> Result<Changes, String> {
        let path = format!(
            "/agent/v1/credentials?since={since}&wait={}",
            wait.as_secs()
        );
        self.first(
            |base, auth| {
                self.agent
                    .get(&format!("{base}{path}"))
                    .header("Authorization", auth)
                    .call()
            },
            |base, mut r| {
                r.body_mut()
                    .with_config()
                    .limit(64 << 20)
                    .read_json::<Changes>()
                    .map_err(|e| format!("{base}: unreadable answer: {e}"))
            },
        )
    }

    /// Posts a batch of reports to the first control URL that takes it.
    pub fn post_reports(&self, batch: &Batch) -> Result<(), String> {
        self.first(
            |base, auth| {
                self.agent
                    .post(&format!("{base}/agent/v1/reports"))
                    .header("Authorization", auth)
                    .send_json(batch)
            },
            |_, _| Ok(()),
        )
    }
}

/// Installs the firewall rules of `cache` unless they are the ones in place.
async fn firewall(cache: &Cache, applied: &mut Option<Policy>) {
    let Some(policy) = cache.policy() else {
        return;
    };
    if applied.as_ref() == Some(policy) {
        return;
    }
    let p = policy.clone();
    match tokio::task::spawn_blocking(move || firewall::install(&p)).await {
        Ok(Ok(())) => {
            info!(pool = %policy.pool, networks = policy.networks.len(), "firewall rules installed");
            *applied = Some(policy.clone());
        }
        Ok(Err(e)) => warn!(error = %e, "installing the firewall rules; kept the previous ones"),
        Err(e) => warn!(error = %e, "installing the firewall rules"),
    }
}

/// Runs for as long as the agent does; `applied` is the firewall policy in
/// place (`None`: none yet).
pub async fn run(
    control: Arc<Control>,
    config: Arc<AgentConfig>,
    cache: watch::Sender<Arc<Cache>>,
    mut applied: Option<Policy>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut last_full: Option<Instant> = None;
    let mut last_problem = String::new();
    loop {
        let full = last_full.is_none_or(|t| t.elapsed() >= FULL_EVERY);
        let since = if full { 0 } else { cache.borrow().seq };
        let c = control.clone();
        let got = tokio::task::spawn_blocking(move || c.changes(since, WAIT))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let problem = match got {
            Ok(changes) => {
                let mut next = (**cache.borrow()).clone();
                let (server, region) = (changes.server.clone(), changes.region.clone());
                let changed = full || !changes.sites.is_empty() || !changes.deleted.is_empty();
                match next.apply(changes) {
                    Ok(()) if changed => {
                        if let Err(e) = next.save(&config.cache_dir) {
                            warn!(error = %e, "keeping the credential cache on disk");
                        }
                        // Isolation first, then the logins it protects;
                        // the log line last, once logins use this cache.
                        if config.firewall {
                            firewall(&next, &mut applied).await;
                        }
                        let (tunnels, seq) = (next.len(), next.seq);
                        cache.send_replace(Arc::new(next));
                        if full {
                            info!(%server, region = region.as_deref(), tunnels, seq, "credentials read in full");
                            last_full = Some(Instant::now());
                        }
                        None
                    }
                    Ok(()) => None,
                    Err(e) => Some(e),
                }
            }
            Err(e) => Some(e),
        };
        match problem {
            None => {
                if !last_problem.is_empty() {
                    info!("the control plane answers again");
                    last_problem.clear();
                }
                backoff = Duration::from_secs(1);
            }
            Some(p) => {
                if p != last_problem {
                    warn!(problem = %p, retry_in = %humantime::format_duration(backoff), "cannot reach the control plane; logins are answered from the cache");
                    last_problem = p;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
