//! A site's RouterOS scripts, rendered from the configuration.

use uuid::Uuid;

use super::{
    pool,
    routeros::{Ca, Poller, ScriptError, TunnelScript, Version, poller},
    store::Site,
};
use crate::config::{Config, ProvisionConfig, RoutersConfig};

/// The router endpoint's path for the CA routers install.
pub const CA_PATH: &str = "/router/v1/ca.pem";

/// What a job carries that only its router may see.
#[derive(Debug, Clone, Copy)]
pub struct JobSecrets<'a> {
    /// The tunnel secret.
    pub tunnel: &'a str,
    /// The live-view user's password: only in jobs fetched on the router
    /// endpoint (never in the admin API's copy, which leaves the user be).
    pub live: Option<&'a str>,
}

/// What rendering needs from the configuration.
pub struct Scripts<'a> {
    provision: &'a ProvisionConfig,
    routers: Option<&'a RoutersConfig>,
}

impl<'a> Scripts<'a> {
    /// `None` when provisioning is off.
    pub fn new(config: &'a Config) -> Option<Self> {
        Some(Self {
            provision: config.provision.as_ref()?,
            routers: config.routers.as_ref(),
        })
    }

    /// The CA download (only with a router endpoint to serve it).
    fn ca<'s>(&'s self, url: &'s str) -> Option<Ca<'s>> {
        let bundle = self.provision.ca.as_ref()?;
        self.routers?;
        Some(Ca {
            url,
            fingerprints: &bundle.fingerprints,
        })
    }

    fn ca_url(&self) -> String {
        self.routers
            .map(|r| format!("{}{CA_PATH}", r.public_url))
            .unwrap_or_default()
    }

    /// The job `job` installing `secrets` on `site`'s router.
    pub fn job(
        &self,
        site: &Site,
        job: Uuid,
        secrets: JobSecrets<'_>,
        version: Version,
    ) -> Result<String, ScriptError> {
        let url = self.ca_url();
        self.tunnel(site, job, secrets, &url).render(version)
    }

    fn tunnel<'s>(
        &'s self,
        site: &'s Site,
        job: Uuid,
        secrets: JobSecrets<'s>,
        ca_url: &'s str,
    ) -> TunnelScript<'s> {
        let p = self.provision;
        TunnelScript {
            uuid: site.uuid,
            job,
            username: &site.username,
            password: secrets.tunnel,
            connect_to: &p.connect_to,
            port: p.port,
            auth: &p.auth,
            server_address: pool::gateway(p.pool),
            management: &p.management_networks,
            ca: self.ca(ca_url),
            live_password: secrets.live,
        }
    }

    /// The bootstrap: the poller with `router_token`, then the install job.
    /// `None` without a router endpoint.
    pub fn bootstrap(
        &self,
        site: &Site,
        job: Uuid,
        secrets: JobSecrets<'_>,
        router_token: &str,
        version: Version,
    ) -> Option<Result<String, ScriptError>> {
        let routers = self.routers?;
        let url = self.ca_url();
        let poller = Poller {
            site: site.uuid,
            base: &routers.public_url,
            router_token,
            interval: routers.poll_interval,
        };
        Some(poller::bootstrap(
            &poller,
            &self.tunnel(site, job, secrets, &url),
            version,
        ))
    }
}
