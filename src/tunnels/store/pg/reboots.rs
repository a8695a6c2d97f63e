//! Reboot records in PostgreSQL.

use uuid::Uuid;

use super::{
    super::{
        StoreError, clip_error,
        reboots::{Claim, HISTORY, Reboot, RebootState, RebootStore, claim},
    },
    PgSiteStore, col,
};

impl RebootStore for PgSiteStore {
    fn claim_reboot(
        &self,
        site: Uuid,
        user: &str,
        now: u64,
        gap: u64,
    ) -> Result<Claim, StoreError> {
        self.run(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            // The site's row, locked: two nodes asked at once take turns.
            let found = tx
                .query_opt("SELECT 1 FROM sites WHERE uuid = $1 FOR UPDATE", &[&site])
                .await?;
            if found.is_none() {
                return Ok(Claim::NoSite);
            }
            let old = now.saturating_sub(HISTORY) as i64;
            tx.execute("DELETE FROM reboots WHERE created < $1", &[&old])
                .await?;
            let row = tx
                .query_one(
                    "SELECT MAX(created) FROM reboots WHERE site = $1 AND state <> 'failed'",
                    &[&site],
                )
                .await?;
            let last: Option<i64> = col(&row, 0)?;
            if let Err(retry_after) = claim(last.map(|t| t as u64), now, gap) {
                return Ok(Claim::TooSoon { retry_after });
            }
            let id = Uuid::new_v4();
            tx.execute(
                "INSERT INTO reboots (id, site, \"user\", created, state)
                 VALUES ($1, $2, $3, $4, 'sending')",
                &[&id, &site, &user, &(now as i64)],
            )
            .await?;
            tx.commit().await?;
            Ok(Claim::Claimed(id))
        })
    }

    fn set_reboot(
        &self,
        id: Uuid,
        state: RebootState,
        now: u64,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let from: Vec<&str> = state.from().to_vec();
        let finished = (state != RebootState::Sent).then_some(now as i64);
        self.run(async {
            let n = self
                .client()
                .await?
                .execute(
                    "UPDATE reboots SET state = $1, finished = $2, error = $3
                     WHERE id = $4 AND state = ANY($5)",
                    &[
                        &state.as_str(),
                        &finished,
                        &error.map(clip_error),
                        &id,
                        &from,
                    ],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn reboot(&self, id: Uuid) -> Result<Option<Reboot>, StoreError> {
        self.run(async {
            let c = self.client().await?;
            let Some(r) = c
                .query_opt(
                    "SELECT site, \"user\", created, state, finished, error FROM reboots
                     WHERE id = $1",
                    &[&id],
                )
                .await?
            else {
                return Ok(None);
            };
            let state: String = col(&r, 3)?;
            let state = RebootState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("reboot {id}: state {state}")))?;
            Ok(Some(Reboot {
                id,
                site: col(&r, 0)?,
                user: col(&r, 1)?,
                created: col::<i64>(&r, 2)? as u64,
                state,
                finished: col::<Option<i64>>(&r, 4)?.map(|t| t as u64),
                error: col(&r, 5)?,
            }))
        })
    }
}
