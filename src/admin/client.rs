//! The command-line side of the admin API (`mgnt drain`, `undrain`, `status`).
//!
//! Its errors are said in the command line's words: which server, which
//! config key, what to run; the HTTP exchange behind them stays out of sight.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde_json::Value;

use super::auth::{AuthError, Tokens};
use crate::config::{ApiConfig, Config, Named};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Auth(#[from] Named<AuthError>),
    #[error(
        "no server at {addr} (is `mgnt serve` running? the address is `api.listen` in {config})"
    )]
    NoServer { addr: String, config: PathBuf },
    #[error("cannot reach the admin API at {url}: {source}")]
    Http { url: String, source: ureq::Error },
    #[error(
        "the token was refused by the server at {addr} (check `api.token_file` or `api.token_env` in {config}: this command sends the first token they hold, which the server must hold too)"
    )]
    Refused { addr: String, config: PathBuf },
    #[error(
        "{config}: key `api.token_file`: no token to send: {file} does not exist (`mgnt serve` creates it at its first start) and `api.token_env` names no set variable"
    )]
    NoToken { file: PathBuf, config: PathBuf },
    /// The server said no; `message` is its reason.
    #[error("{message}")]
    Status {
        status: u16,
        message: String,
        body: Value,
    },
    #[error("the API's CA ({file}): {reason}")]
    Ca { file: PathBuf, reason: String },
}

/// A client for the server that `config` describes.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
    /// The config file, for errors that name its keys.
    config: PathBuf,
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
        let (tokens, _) = Tokens::load(api, false).map_err(|e| match e {
            // The server's words ("refusing to serve") do not fit a client.
            AuthError::NoToken { file, .. } => ClientError::NoToken {
                file,
                config: config.file.clone(),
            },
            e => Named::new(&config.file, "api.token_file", e).into(),
        })?;
        Ok(Self {
            base: base(api),
            token: tokens.first().to_owned(),
            agent: agent(api, Duration::from_secs(30))?,
            config: config.file.clone(),
        })
    }

    /// Uses `api.listen` with `token` (the OpenVPN hook's).
    pub fn with_token(config: &Config, token: String) -> Result<Self, ClientError> {
        Ok(Self {
            base: base(&config.api),
            token,
            agent: agent(&config.api, Duration::from_secs(10))?,
            config: config.file.clone(),
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
        let mut response = response.map_err(|e| self.unreachable(e, &url))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(http)?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !(200..300).contains(&status) {
            return Err(self.refusal(status, body));
        }
        Ok(body)
    }

    /// The server's host and port, as the errors name it.
    fn addr(&self) -> String {
        self.base
            .split_once("://")
            .map_or(&*self.base, |(_, a)| a)
            .to_owned()
    }

    /// A request that got no answer: nothing listening is said as such.
    fn unreachable(&self, source: ureq::Error, url: &str) -> ClientError {
        let refused = match &source {
            ureq::Error::Io(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
            ureq::Error::ConnectionFailed => true,
            _ => false,
        };
        if refused {
            return ClientError::NoServer {
                addr: self.addr(),
                config: self.config.clone(),
            };
        }
        ClientError::Http {
            url: url.to_owned(),
            source,
        }
    }

    /// An answer other than 2xx: the token refused, or the server's reason.
    fn refusal(&self, status: u16, body: Value) -> ClientError {
        if status == 401 {
            return ClientError::Refused {
                addr: self.addr(),
                config: self.config.clone(),
            };
        }
        let message = match &body {
            Value::Object(o) => o.get("error").and_then(Value::as_str).map(str::to_owned),
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            _ => None,
        };
        ClientError::Status {
            status,
            message: message.unwrap_or_else(|| format!("the server answered {status}")),
            body,
        }
    }
}
