//! Live-view leases in PostgreSQL: one row per router, its holder's name,
//! API URL and expiry; taken, renewed and given up in one statement each.

use uuid::Uuid;

use super::{
    super::{
        StoreError,
        leases::{Holder, LeaseStore, Lessee},
    },
    PgSiteStore, col,
};

impl LeaseStore for PgSiteStore {
    fn take_live_lease(
        &self,
        site: Uuid,
        who: Lessee<'_>,
        now: u64,
        until: u64,
    ) -> Result<Holder, StoreError> {
        self.run(async {
            let c = self.client().await?;
            // Ours when free, expired or already ours; a row comes back then.
            let taken = c
                .query_opt(
                    "INSERT INTO live_leases (site, node, api_url, until) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (site) DO UPDATE
                         SET node = EXCLUDED.node, api_url = EXCLUDED.api_url, until = EXCLUDED.until
                         WHERE live_leases.node = EXCLUDED.node OR live_leases.until < $5
                     RETURNING node",
                    &[&site, &who.node, &who.api_url, &(until as i64), &(now as i64)],
                )
                .await?;
            if taken.is_some() {
                return Ok(Holder::Us);
            }
            let row = c
                .query_opt(
                    "SELECT node, api_url FROM live_leases WHERE site = $1",
                    &[&site],
                )
                .await?;
            match row {
                Some(r) => Ok(Holder::Other {
                    node: col(&r, 0)?,
                    api_url: col(&r, 1)?,
                }),
                // Given up in between: the next try takes it.
                None => Err(StoreError::Unavailable(
                    "the lease changed hands while taken; try again".into(),
                )),
            }
        })
    }

    fn live_lease_holder(&self, site: Uuid, node: &str, now: u64) -> Result<Holder, StoreError> {
        self.run(async {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT node, api_url FROM live_leases
                     WHERE site = $1 AND node <> $2 AND until >= $3",
                    &[&site, &node, &(now as i64)],
                )
                .await?;
            match row {
                Some(r) => Ok(Holder::Other {
                    node: col(&r, 0)?,
                    api_url: col(&r, 1)?,
                }),
                None => Ok(Holder::Us),
            }
        })
    }

    fn release_live_lease(&self, site: Uuid, node: &str) -> Result<(), StoreError> {
        self.run(async {
            self.client()
                .await?
                .execute(
                    "DELETE FROM live_leases WHERE site = $1 AND node = $2",
                    &[&site, &node],
                )
                .await?;
            Ok(())
        })
    }
}
