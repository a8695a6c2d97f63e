//! Bearer tokens for the admin API.
//!
//! Tokens come from a file (`TOKEN` or `NAME:TOKEN` per line) or an environment
//! variable named in the config, never from the config itself. A missing
//! token file is created with a random token (mode 0600) on first start, but
//! only while the API listens on loopback: anywhere else an operator must
//! provide one.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use subtle::ConstantTimeEq;

use crate::config::ApiConfig;

/// Shortest token accepted; shorter ones are guessable.
const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{file}: cannot read token file: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: cannot create token file: {source}")]
    Create {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: token shorter than {MIN_TOKEN_LEN} characters")]
    Short { file: PathBuf, line: usize },
    #[error("{file}:{line}: an agent token needs its server's name (`NAME:TOKEN`)")]
    Unnamed { file: PathBuf, line: usize },
    #[error(
        "refusing to serve the admin API on {listen} without a token: create {file} or set api.token_env"
    )]
    NoToken {
        listen: std::net::SocketAddr,
        file: PathBuf,
    },
}

/// The accepted tokens, by name.
#[derive(Clone)]
pub struct Tokens(Vec<(String, String)>);

/// What loading found, for the start-up log.
pub enum Origin {
    Loaded,
    Created(PathBuf),
}

impl Tokens {
    /// Reads the tokens; a server (`may_create`) creates a missing file on loopback.
    pub fn load(api: &ApiConfig, may_create: bool) -> Result<(Self, Origin), AuthError> {
        let mut origin = Origin::Loaded;
        if may_create {
            // The server's start: a token file others could read is made private.
            tighten(&api.token_file)?;
        }
        let mut tokens = match std::fs::read_to_string(&api.token_file) {
            Ok(text) => parse(&text, &api.token_file)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if may_create && api.listen.ip().is_loopback() {
                    let token = create(&api.token_file)?;
                    origin = Origin::Created(api.token_file.clone());
                    vec![("admin".to_owned(), token)]
                } else {
                    Vec::new()
                }
            }
            Err(source) => {
                return Err(AuthError::Read {
                    file: api.token_file.clone(),
                    source,
                });
            }
        };
        let from_env = api
            .token_env
            .as_ref()
            .and_then(|var| std::env::var(var).ok());
        let from_env = from_env.map(|v| v.trim().to_owned());
        if let Some(v) = from_env.filter(|v| v.chars().count() >= MIN_TOKEN_LEN) {
            tokens.push(("env".to_owned(), v));
        }
        if tokens.is_empty() {
            return Err(AuthError::NoToken {
                listen: api.listen,
                file: api.token_file.clone(),
            });
        }
        Ok((Self(tokens), origin))
    }

    /// Agents' tokens from `[api] agent_token_file` (none without it): every
    /// line `NAME:TOKEN`, the name being the server's identity.
    pub fn load_agents(file: Option<&Path>) -> Result<Self, AuthError> {
        let Some(file) = file else {
            return Ok(Self(Vec::new()));
        };
        tighten(file)?;
        let text = std::fs::read_to_string(file).map_err(|source| AuthError::Read {
            file: file.to_owned(),
            source,
        })?;
        let lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#'));
        for (i, line) in lines {
            if !line.contains(':') {
                return Err(AuthError::Unnamed {
                    file: file.to_owned(),
                    line: i + 1,
                });
            }
        }
        Ok(Self(parse(&text, file)?))
    }

    /// No token at all (routes behind it answer 401).
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// The OpenVPN hook's token (`[provision] hook_token_file`), created with
    /// a random token (mode 0600) when missing.
    pub fn load_hook(file: &Path) -> Result<Self, AuthError> {
        let token = match std::fs::read_to_string(file) {
            Ok(text) => text.lines().next().unwrap_or("").trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(file)?,
            Err(source) => {
                return Err(AuthError::Read {
                    file: file.to_owned(),
                    source,
                });
            }
        };
        if token.len() < MIN_TOKEN_LEN {
            return Err(AuthError::Short {
                file: file.to_owned(),
                line: 1,
            });
        }
        Ok(Self(vec![("hook".to_owned(), token)]))
    }

    /// The name of the token `presented` matches, comparing every token in constant time.
    pub fn check(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.0 {
            if bool::from(token.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The first token, for the command-line client.
    pub fn first(&self) -> &str {
        &self.0[0].1
    }
}

fn parse(text: &str, file: &Path) -> Result<Vec<(String, String)>, AuthError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, token) = line.split_once(':').unwrap_or(("admin", line));
        // Trimmed before it is measured: padding is no part of a secret.
        let token = token.trim();
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(AuthError::Short {
                file: file.to_owned(),
                line: i + 1,
            });
        }
        out.push((name.trim().to_owned(), token.to_owned()));
    }
    Ok(out)
}

/// Makes an existing token file the owner's only (a missing one is fine).
fn tighten(file: &Path) -> Result<(), AuthError> {
    match crate::durable::tighten(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AuthError::Read {
            file: file.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Creates `file` (mode 0600, never overwriting) holding a fresh random token.
fn create(file: &Path) -> Result<String, AuthError> {
    let err = |source| AuthError::Create {
        file: file.to_owned(),
        source,
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::durable::private_dir(dir).map_err(err)?;
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(err)?;
    f.write_all(format!("{token}\n").as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_with_names_and_comments() {
        let t = parse(
            "# admin tokens\nportal:0123456789abcdef0\n\nfedcba98765432100\n",
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(t[0], ("portal".into(), "0123456789abcdef0".into()));
        assert_eq!(t[1].0, "admin");
        assert!(matches!(
            parse("short\n", Path::new("f")),
            Err(AuthError::Short { line: 1, .. })
        ));
    }

    #[test]
    fn a_token_is_measured_after_its_padding_is_trimmed() {
        let padded = format!("a:{}x\n", " ".repeat(16));
        assert!(matches!(
            parse(&padded, Path::new("f")),
            Err(AuthError::Short { line: 1, .. })
        ));
        let t = parse("a:  0123456789abcdef  \n", Path::new("f")).unwrap();
        assert_eq!(t[0], ("a".into(), "0123456789abcdef".into()));
    }

    #[test]
    fn check_finds_the_matching_name_only() {
        let t = Tokens(vec![
            ("a".into(), "x".repeat(20)),
            ("b".into(), "y".repeat(20)),
        ]);
        assert_eq!(t.check(&"y".repeat(20)), Some("b"));
        assert_eq!(t.check(&"y".repeat(19)), None);
        assert_eq!(t.check(""), None);
    }

    #[test]
    fn the_created_file_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/admin.token");
        let token = create(&file).unwrap();
        assert_eq!(token.len(), 64);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(create(&file).is_err());
    }
}
