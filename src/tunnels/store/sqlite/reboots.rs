//! Reboot records in SQLite.

use rusqlite::{OptionalExtension, ToSql, TransactionBehavior, params};
use uuid::Uuid;

use super::{
    super::{
        StoreError, clip_error,
        reboots::{Claim, HISTORY, Reboot, RebootState, RebootStore, claim},
    },
    SqliteStore,
};

impl RebootStore for SqliteStore {
    fn claim_reboot(
        &self,
        site: Uuid,
        user: &str,
        now: u64,
        gap: u64,
    ) -> Result<Claim, StoreError> {
        let mut inner = self.lock();
        // Immediate: the look at the last reboot and the insert are one step.
        let tx = inner
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let site_text = site.to_string();
        let known: Option<i64> = tx
            .query_row("SELECT 1 FROM sites WHERE uuid = ?1", [&site_text], |r| {
                r.get(0)
            })
            .optional()?;
        if known.is_none() {
            return Ok(Claim::NoSite);
        }
        let old = now.saturating_sub(HISTORY) as i64;
        tx.execute("DELETE FROM reboots WHERE created < ?1", [old])?;
        let last: Option<i64> = tx.query_row(
            "SELECT MAX(created) FROM reboots WHERE site = ?1 AND state != 'failed'",
            [&site_text],
            |r| r.get(0),
        )?;
        if let Err(retry_after) = claim(last.map(|t| t as u64), now, gap) {
            return Ok(Claim::TooSoon { retry_after });
        }
        let id = Uuid::new_v4();
        tx.execute(
            "INSERT INTO reboots (id, site, user, created, state) VALUES (?1, ?2, ?3, ?4, 'sending')",
            params![id.to_string(), site_text, user, now as i64],
        )?;
        tx.commit()?;
        Ok(Claim::Claimed(id))
    }

    fn set_reboot(
        &self,
        id: Uuid,
        state: RebootState,
        now: u64,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let from = state.from();
        let finished = (state != RebootState::Sent).then_some(now as i64);
        let states: Vec<String> = (5..5 + from.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "UPDATE reboots SET state = ?1, finished = ?2, error = ?3
             WHERE id = ?4 AND state IN ({})",
            states.join(", ")
        );
        let (name, error, id) = (state.as_str(), error.map(clip_error), id.to_string());
        let mut values: Vec<&dyn ToSql> = vec![&name, &finished, &error, &id];
        values.extend(from.iter().map(|s| s as &dyn ToSql));
        let n = self.lock().db.execute(&sql, values.as_slice())?;
        Ok(n > 0)
    }

    fn reboot(&self, id: Uuid) -> Result<Option<Reboot>, StoreError> {
        let row = self
            .lock()
            .db
            .query_row(
                "SELECT site, user, created, state, finished, error FROM reboots WHERE id = ?1",
                [id.to_string()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((site, user, created, state, finished, error)) = row else {
            return Ok(None);
        };
        let corrupt = |what: String| StoreError::Corrupt(format!("reboot {id}: {what}"));
        Ok(Some(Reboot {
            id,
            site: Uuid::parse_str(&site).map_err(|e| corrupt(e.to_string()))?,
            user,
            created: created as u64,
            state: RebootState::parse(&state).ok_or_else(|| corrupt(format!("state {state}")))?,
            finished: finished.map(|t| t as u64),
            error,
        }))
    }
}
