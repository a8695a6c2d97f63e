//! Reboots asked of sites' routers through the live view. Each is a row in
//! the store, so any node answers for it and the per-site gap between two
//! reboots holds whichever node takes the request.

use serde::Serialize;
use uuid::Uuid;

use super::StoreError;

/// Where a reboot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootState {
    /// Claimed, the command on its way to the router.
    Sending,
    /// The router took the command (or dropped the connection on it).
    Sent,
    /// The command never reached the router, or the router refused it.
    Failed,
    /// The router answered again with an uptime that began after the send.
    Confirmed,
    /// No such answer within `[live] reboot_timeout`.
    Unconfirmed,
}

impl RebootState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Confirmed => "confirmed",
            Self::Unconfirmed => "unconfirmed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            Self::Sending,
            Self::Sent,
            Self::Failed,
            Self::Confirmed,
            Self::Unconfirmed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }

    /// The states a reboot may move to `self` from (one or two): sending
    /// goes on to sent or failed, sent to confirmed; either may end
    /// unconfirmed; nothing leaves an end.
    pub(crate) fn from(self) -> &'static [&'static str] {
        match self {
            Self::Sent | Self::Failed => &["sending"],
            Self::Confirmed => &["sent"],
            Self::Unconfirmed => &["sending", "sent"],
            Self::Sending => &[],
        }
    }
}

/// One reboot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reboot {
    pub id: Uuid,
    pub site: Uuid,
    /// The name of the token that asked.
    pub user: String,
    pub created: u64,
    pub state: RebootState,
    /// When it reached an end (failed, confirmed, unconfirmed).
    pub finished: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Reboot {
    /// The reboot as it stands at `now`: one still waiting past `timeout`
    /// is unconfirmed, even if the node that watched it stopped watching.
    pub fn at(mut self, now: u64, timeout: u64) -> Self {
        let waiting = matches!(self.state, RebootState::Sending | RebootState::Sent);
        if waiting && now >= self.created + timeout {
            self.state = RebootState::Unconfirmed;
            self.finished = Some(self.created + timeout);
        }
        self
    }
}

/// How long a reboot's record is kept (then it goes with the next claim).
pub const HISTORY: u64 = 30 * 86_400;

/// What asking for a reboot gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Recorded as sending; the caller sends it.
    Claimed(Uuid),
    /// The site's last reboot is younger than the gap.
    TooSoon {
        retry_after: u64,
    },
    NoSite,
}

/// The decision of [`RebootStore::claim_reboot`] once the site's newest
/// reboot that was not refused is known.
pub(crate) fn claim(last: Option<u64>, now: u64, gap: u64) -> Result<(), u64> {
    match last {
        Some(last) if now < last + gap => Err(last + gap - now),
        _ => Ok(()),
    }
}

/// Reboot records.
pub trait RebootStore {
    /// Records a reboot of `site` asked by `user`, unless one that did not
    /// fail was asked less than `gap` seconds before `now`; atomic, so two
    /// nodes asked at once record one.
    fn claim_reboot(&self, site: Uuid, user: &str, now: u64, gap: u64)
    -> Result<Claim, StoreError>;
    /// Moves a reboot on to `state` (see [`RebootState::from`]); false when
    /// it had already moved past.
    fn set_reboot(
        &self,
        id: Uuid,
        state: RebootState,
        now: u64,
        error: Option<&str>,
    ) -> Result<bool, StoreError>;
    fn reboot(&self, id: Uuid) -> Result<Option<Reboot>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reboot_waits_out_the_gap_after_the_last_one() {
        assert_eq!(claim(None, 1000, 300), Ok(()));
        assert_eq!(claim(Some(800), 1000, 300), Err(100));
        assert_eq!(claim(Some(700), 1000, 300), Ok(()));
        assert_eq!(claim(Some(1000), 1000, 0), Ok(()));
    }

    #[test]
    fn a_reboot_left_waiting_past_its_timeout_is_unconfirmed() {
        let sent = Reboot {
            id: Uuid::nil(),
            site: Uuid::nil(),
            user: "portal".into(),
            created: 100,
            state: RebootState::Sent,
            finished: None,
            error: None,
        };
        assert_eq!(sent.clone().at(699, 600), sent);
        let late = sent.clone().at(700, 600);
        assert_eq!(late.state, RebootState::Unconfirmed);
        assert_eq!(late.finished, Some(700));
        let confirmed = Reboot {
            state: RebootState::Confirmed,
            finished: Some(130),
            ..sent
        };
        assert_eq!(confirmed.clone().at(10_000, 600), confirmed);
    }

    #[test]
    fn states_move_only_forward() {
        for state in [
            RebootState::Sending,
            RebootState::Sent,
            RebootState::Failed,
            RebootState::Confirmed,
            RebootState::Unconfirmed,
        ] {
            assert_eq!(RebootState::parse(state.as_str()), Some(state));
            assert!(!state.from().contains(&state.as_str()), "{state:?}");
        }
        assert!(RebootState::Failed.from().iter().all(|s| *s == "sending"));
        assert_eq!(RebootState::parse("rebooted"), None);
    }
}
