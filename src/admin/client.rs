//! The command-line side of the admin API (`mgnt drain`, `undrain`, `status`).

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde_json::Value;

use super::auth::{AuthError, Tokens};
use crate::config::{ApiConfig, Config};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot reach the admin API at {url}: {source}")]
    Http { url: String, source: ureq::Error },
    #[error("{status}: {body}")]
    Status { status: u16, body: String },
    #[error("the API's CA ({file}): {reason}")]
    Ca { file: PathBuf, reason: String },
}

/// A client for the server that `config` describes.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// The API's base URL for a client on this machine: `https://` when the
/// API has TLS, and a loopback address for a wildcard `listen`.
fn base(api: &ApiConfig) -> String {
    let mut addr = api.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if api.tls.is_some() { "https" } else { "http" };
    format!("{scheme}://{addr}")
}

/// An HTTP agent trusting `api.tls_ca_file` (else the public roots).
fn agent(api: &ApiConfig, timeout: Duration) -> Result<ureq::Agent, ClientError> {
    let mut builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout));
    if let Some(file) = &api.tls_ca_file {
        let tls = crate::edge::tls::client_trusting(file).map_err(|reason| ClientError::Ca {
            file: file.clone(),
            reason,
        })?;
        builder = builder.tls_config(tls);
    }
    Ok(builder.build().into())
}

impl Client {
    /// Uses `api.listen` and the first token of `api.token_file` (or `api.token_env`).
    pub fn new(config: &Config) -> Result<Self, ClientError> {
        let api = &config.api;
        // The client never creates a token file of its own.
        let (tokens, _) = Tokens::load(api, false)?;
        Ok(Self {
            base: base(api),
            token: tokens.first().to_owned(),
            agent: agent(api, Duration::from_secs(30))?,
        })
    }

    /// Uses `api.listen` with `token` (the OpenVPN hook's).
    pub fn with_token(config: &Config, token: String) -> Result<Self, ClientError> {
        Ok(Self {
            base: base(&config.api),
            token,
            agent: agent(&config.api, Duration::from_secs(10))?,
        })
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        self.call("POST", path, body)
    }

    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.call("DELETE", path, None)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let http = |source| ClientError::Http {
            url: url.clone(),
            source,
        };
        let response = if method == "GET" {
            self.agent.get(&url).header("Authorization", &auth).call()
        } else if method == "DELETE" {
            self.agent
                .delete(&url)
                .header("Authorization", &auth)
                .call()
        } else {
            let req = self.agent.post(&url).header("Authorization", &auth);
            match body {
                Some(b) => req.send_json(b),
                None => req.send_empty(),
            }
        };
        let mut response = response.map_err(http)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(http)?;
        if !(200..300).contains(&status) {
            return Err(ClientError::Status { status, body: text });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}
