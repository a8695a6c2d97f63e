//! The agent's credential cache: what the control plane last said about
//! every tunnel's login, kept in step by changes and kept on disk, so logins
//! are answered while the control plane is away, also after a restart.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::firewall::Policy;
use crate::tunnels::{
    keys::{Check, Digests},
    store::Credential,
};

/// The file in `cache_dir`.
const FILE: &str = "credentials.json";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not a credential cache: {message}")]
    Format { file: PathBuf, message: String },
}

/// What the control plane sends (`GET /agent/v1/credentials`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub server: String,
    pub region: Option<String>,
    pub seq: u64,
    pub full: bool,
    pub sites: Vec<Credential>,
    pub deleted: Vec<String>,
    pub netmask: Ipv4Addr,
    pub digest_key: String,
    /// What may cross the server (the agent's firewall rules).
    pub policy: Policy,
}

/// How a login went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        address: Ipv4Addr,
        netmask: Ipv4Addr,
    },
    Deny(&'static str),
}

/// The cache as kept on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stored {
    seq: u64,
    netmask: Option<Ipv4Addr>,
    digest_key: String,
    sites: Vec<Credential>,
    #[serde(default)]
    policy: Option<Policy>,
}

#[derive(Debug, Clone, Default)]
pub struct Cache {
    /// The newest change it holds.
    pub seq: u64,
    netmask: Option<Ipv4Addr>,
    digests: Option<Digests>,
    digest_key: String,
    sites: HashMap<String, Credential>,
    policy: Option<Policy>,
}

impl Cache {
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    pub fn contains(&self, username: &str) -> bool {
        self.sites.contains_key(username)
    }

    /// Whether it came from the control plane (directly or through the
    /// file): an empty cache that never heard from it proves no tunnel gone.
    pub fn known(&self) -> bool {
        self.digests.is_some()
    }

    /// What may cross the server, as the control plane last said.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// Applies changes from the control plane (a full answer replaces all).
    pub fn apply(&mut self, changes: Changes) -> Result<(), String> {
        let digests = Digests::from_hex(&changes.digest_key)
            .ok_or("the control plane sent no usable digest key")?;
        if changes.full {
            self.sites.clear();
        }
        for gone in &changes.deleted {
            self.sites.remove(gone);
        }
        for site in changes.sites {
            self.sites.insert(site.username.clone(), site);
        }
        self.seq = changes.seq;
        self.netmask = Some(changes.netmask);
        self.digests = Some(digests);
        self.digest_key = changes.digest_key;
        self.policy = Some(changes.policy);
        Ok(())
    }

    /// Whether `username` with `password` may log in at `now`: the current
    /// secret, or the last applied one while its rotation grace lasts.
    pub fn decide(&self, username: &str, password: &str, now: u64) -> Decision {
        let (Some(digests), Some(netmask)) = (&self.digests, self.netmask) else {
            return Decision::Deny("the agent has no credentials yet");
        };
        let Some(site) = self.sites.get(username) else {
            return Decision::Deny("no such tunnel");
        };
        let matches = |stored: &str| digests.check(password, stored) != Check::NoMatch;
        // The previous secret only while its grace lasts, and only if the
        // current one did not match (a legacy hash costs an argon2 run).
        let in_grace = site.previous_until.is_some_and(|until| now <= until);
        let previous = site.previous.as_deref().filter(|_| in_grace);
        if matches(&site.secret) || previous.is_some_and(matches) {
            Decision::Allow {
                address: site.address,
                netmask,
            }
        } else {
            Decision::Deny("wrong secret")
        }
    }

    /// Reads the cache kept in `dir` (an empty one when there is none).
    pub fn load(dir: &Path) -> Result<Self, CacheError> {
        let file = dir.join(FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(CacheError::Io { file, source }),
        };
        let stored: Stored = serde_json::from_str(&text).map_err(|e| CacheError::Format {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let digests = Digests::from_hex(&stored.digest_key);
        Ok(Self {
            seq: stored.seq,
            netmask: stored.netmask,
            digests,
            digest_key: stored.digest_key,
            sites: stored
                .sites
                .into_iter()
                .map(|s| (s.username.clone(), s))
                .collect(),
            policy: stored.policy,
        })
    }

    /// Writes the cache into `dir` atomically, readable by its owner only
    /// (it holds the digest key).
    pub fn save(&self, dir: &Path) -> Result<(), CacheError> {
        use std::os::unix::fs::PermissionsExt;
        let file = dir.join(FILE);
        let io = |source| CacheError::Io {
            file: file.clone(),
            source,
        };
        crate::durable::private_dir(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let stored = Stored {
            seq: self.seq,
            netmask: self.netmask,
            digest_key: self.digest_key.clone(),
            sites: self.sites.values().cloned().collect(),
            policy: self.policy.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| io(std::io::Error::other(e)))?;
        crate::durable::write_atomic(&file, &bytes).map_err(io)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(io)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::tunnels::keys::Keys;

    pub(in crate::agent) fn changes(
        keys: &Keys,
        full: bool,
        sites: Vec<Credential>,
        deleted: Vec<String>,
    ) -> Changes {
        Changes {
            server: "vpn1".into(),
            region: Some("europe1".into()),
            seq: 7,
            full,
            sites,
            deleted,
            netmask: Ipv4Addr::new(255, 192, 0, 0),
            digest_key: keys.digests().to_hex(),
            policy: Policy {
                pool: "100.64.0.0/10".parse().unwrap(),
                networks: vec![],
                inbound: vec![],
                outbound: vec![],
            },
        }
    }

    pub(in crate::agent) fn site(
        keys: &Keys,
        user: &str,
        secret: &str,
        previous: Option<(&str, u64)>,
    ) -> Credential {
        Credential {
            username: user.into(),
            address: Ipv4Addr::new(100, 64, 0, 2),
            secret: keys.digest(secret),
            previous: previous.map(|(p, _)| keys.digest(p)),
            previous_until: previous.map(|(_, u)| u),
        }
    }

    #[test]
    fn logins_follow_the_secrets_and_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(&dir.path().join("k")).unwrap();
        let mut cache = Cache::default();
        assert!(matches!(cache.decide("a", "x", 0), Decision::Deny(_)));
        assert!(!cache.known());
        let a = site(&keys, "a", "new", Some(("old", 100)));
        cache.apply(changes(&keys, true, vec![a], vec![])).unwrap();
        assert!(cache.known());
        let allow = Decision::Allow {
            address: Ipv4Addr::new(100, 64, 0, 2),
            netmask: Ipv4Addr::new(255, 192, 0, 0),
        };
        assert_eq!(cache.decide("a", "new", 50), allow);
        assert_eq!(cache.decide("a", "old", 100), allow, "within the grace");
        assert_eq!(
            cache.decide("a", "old", 101),
            Decision::Deny("wrong secret")
        );
        assert_eq!(
            cache.decide("b", "new", 50),
            Decision::Deny("no such tunnel")
        );
        cache
            .apply(changes(&keys, false, vec![], vec!["a".into()]))
            .unwrap();
        assert!(!cache.contains("a"));
    }

    #[test]
    fn the_cache_survives_a_restart_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(&dir.path().join("k")).unwrap();
        let mut cache = Cache::default();
        let a = site(&keys, "a", "s", None);
        cache.apply(changes(&keys, true, vec![a], vec![])).unwrap();
        let at = dir.path().join("cache");
        cache.save(&at).unwrap();
        let mode = std::fs::metadata(at.join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = Cache::load(&at).unwrap();
        assert_eq!((back.seq, back.len()), (7, 1));
        assert_eq!(back.policy(), cache.policy());
        assert!(matches!(back.decide("a", "s", 0), Decision::Allow { .. }));
        std::fs::write(at.join(FILE), "{not json").unwrap();
        assert!(matches!(Cache::load(&at), Err(CacheError::Format { .. })));
        assert!(Cache::load(&dir.path().join("none")).unwrap().is_empty());
    }
}
