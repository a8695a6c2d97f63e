//! What every [`Store`] promises, as checks run on each backend: SQLite in
//! the unit tests, PostgreSQL in `tests/site_store.rs` (a real server). Each
//! check takes a fresh, empty store over the pool `100.64.0.0/10` with
//! [`LIFETIMES`].

#![allow(clippy::missing_panics_doc)]

use std::{collections::HashSet, net::Ipv4Addr, sync::Arc};

use uuid::Uuid;

use super::{
    Attempt, Finished, JobState, Lifetimes, Outcome, Site, Store,
    reboots::{Claim, HISTORY, RebootState},
};
use crate::tunnels::username::username;

/// The lifetimes every check assumes.
pub const LIFETIMES: Lifetimes = Lifetimes {
    quarantine: 3600,
    rotation_grace: 1000,
    job_expiry: 5000,
};

/// The pool every check assumes.
pub const POOL: &str = "100.64.0.0/10";

/// A check, given a fresh store.
pub type Check = fn(Arc<dyn Store>);

/// Every check, by name.
pub const ALL: &[(&str, Check)] = &[
    (
        "ensure_is_idempotent_and_shows_the_credentials_once",
        ensure_is_idempotent_and_shows_the_credentials_once,
    ),
    (
        "concurrent_ensures_of_one_uuid_give_one_site_and_address",
        concurrent_ensures_of_one_uuid_give_one_site_and_address,
    ),
    (
        "a_job_is_fetched_then_applied_and_its_secret_erased",
        a_job_is_fetched_then_applied_and_its_secret_erased,
    ),
    (
        "results_are_idempotent_and_only_from_the_sites_router",
        results_are_idempotent_and_only_from_the_sites_router,
    ),
    (
        "recreate_keeps_the_applied_secret_until_the_job_is_applied",
        recreate_keeps_the_applied_secret_until_the_job_is_applied,
    ),
    (
        "the_grace_ends_and_a_newer_recreate_supersedes_an_older_one",
        the_grace_ends_and_a_newer_recreate_supersedes_an_older_one,
    ),
    ("open_jobs_expire", open_jobs_expire),
    (
        "a_new_router_token_replaces_the_old_one",
        a_new_router_token_replaces_the_old_one,
    ),
    (
        "a_bootstrap_token_is_spent_once_and_rotates_token_and_secret",
        a_bootstrap_token_is_spent_once_and_rotates_token_and_secret,
    ),
    (
        "an_expired_bootstrap_token_is_refused_and_gone",
        an_expired_bootstrap_token_is_refused_and_gone,
    ),
    (
        "every_credential_change_takes_the_next_sequence_number",
        every_credential_change_takes_the_next_sequence_number,
    ),
    (
        "deleted_addresses_wait_out_the_quarantine",
        deleted_addresses_wait_out_the_quarantine,
    ),
    (
        "a_live_ticket_is_redeemed_once_before_it_expires",
        a_live_ticket_is_redeemed_once_before_it_expires,
    ),
    (
        "live_passwords_follow_the_applied_and_the_open_job",
        live_passwords_follow_the_applied_and_the_open_job,
    ),
    (
        "reboots_keep_their_gap_and_move_only_forward",
        reboots_keep_their_gap_and_move_only_forward,
    ),
];

pub fn reboots_keep_their_gap_and_move_only_forward(store: Arc<dyn Store>) {
    let (site, _) = store.ensure(Uuid::new_v4(), 100).unwrap();
    let claimed = |now| store.claim_reboot(site.uuid, "portal", now, 300).unwrap();
    let Claim::Claimed(first) = claimed(1000) else {
        panic!("the first reboot is claimed");
    };
    let got = store.reboot(first).unwrap().unwrap();
    assert_eq!(
        (got.site, got.user.as_str(), got.created, got.state),
        (site.uuid, "portal", 1000, RebootState::Sending)
    );
    assert_eq!(claimed(1100), Claim::TooSoon { retry_after: 200 });
    assert!(
        !store
            .set_reboot(first, RebootState::Confirmed, 1001, None)
            .unwrap(),
        "confirmed only once sent"
    );
    assert!(
        store
            .set_reboot(first, RebootState::Sent, 1001, None)
            .unwrap()
    );
    assert!(
        !store
            .set_reboot(first, RebootState::Failed, 1002, Some("x"))
            .unwrap(),
        "sent is past failing"
    );
    assert!(
        store
            .set_reboot(first, RebootState::Confirmed, 1030, None)
            .unwrap()
    );
    assert!(
        !store
            .set_reboot(first, RebootState::Unconfirmed, 1600, None)
            .unwrap(),
        "an end is an end"
    );
    let got = store.reboot(first).unwrap().unwrap();
    assert_eq!(
        (got.state, got.finished),
        (RebootState::Confirmed, Some(1030))
    );
    assert_eq!(claimed(1299), Claim::TooSoon { retry_after: 1 });

    // A reboot that failed does not hold the next one back.
    let Claim::Claimed(second) = claimed(1300) else {
        panic!("the gap has passed");
    };
    let why = "x".repeat(2000);
    assert!(
        store
            .set_reboot(second, RebootState::Failed, 1301, Some(&why))
            .unwrap()
    );
    let failed = store.reboot(second).unwrap().unwrap();
    assert_eq!(failed.state, RebootState::Failed);
    assert_eq!(failed.error.unwrap().len(), 500);
    assert!(matches!(claimed(1302), Claim::Claimed(_)));
    // Records older than the history go with a later claim.
    let Claim::Claimed(recent) = claimed(1302 + HISTORY) else {
        panic!("the gap has passed");
    };
    assert_eq!(store.reboot(first).unwrap(), None, "past the history");

    assert_eq!(
        store
            .claim_reboot(Uuid::new_v4(), "portal", 1000, 300)
            .unwrap(),
        Claim::NoSite
    );
    assert_eq!(store.reboot(Uuid::new_v4()).unwrap(), None);
    assert!(store.reboot(recent).unwrap().is_some());
    assert!(store.delete(site.uuid, 2000).unwrap());
    assert_eq!(store.reboot(recent).unwrap(), None, "gone with the site");
}

pub fn live_passwords_follow_the_applied_and_the_open_job(store: Arc<dyn Store>) {
    let (site, _) = store.ensure(Uuid::new_v4(), 100).unwrap();
    let install = store.pending_job(site.uuid, 100).unwrap().unwrap().id;
    assert_eq!(store.live_jobs(site.uuid, 100).unwrap(), [install]);
    let applied = |job| {
        store
            .finish_job(job, Some(site.uuid), Outcome::Applied, 110)
            .unwrap()
    };
    applied(install);
    assert_eq!(store.live_jobs(site.uuid, 110).unwrap(), [install]);
    let recreate = store.recreate(site.uuid, 120).unwrap().unwrap().id;
    assert_eq!(
        store.live_jobs(site.uuid, 120).unwrap(),
        [install, recreate],
        "both until the new one is applied"
    );
    applied(recreate);
    assert_eq!(store.live_jobs(site.uuid, 130).unwrap(), [recreate]);
    assert_ne!(
        store.live_password(site.uuid, install),
        store.live_password(site.uuid, recreate)
    );
    assert!(store.live_jobs(Uuid::new_v4(), 130).unwrap().is_empty());
}

pub fn a_live_ticket_is_redeemed_once_before_it_expires(store: Arc<dyn Store>) {
    let (site, _) = store.ensure(Uuid::new_v4(), 100).unwrap();
    let ticket = store
        .new_live_ticket(site.uuid, "portal", 100, 130)
        .unwrap()
        .expect("a ticket for a site");
    assert_eq!(ticket.len(), 48);
    let other = store
        .new_live_ticket(site.uuid, "admin", 100, 130)
        .unwrap()
        .unwrap();
    let redeemed = store.redeem_live_ticket(&ticket, 129).unwrap().unwrap();
    assert_eq!(
        (redeemed.site, redeemed.user.as_str()),
        (site.uuid, "portal")
    );
    assert_eq!(
        store.redeem_live_ticket(&ticket, 129).unwrap(),
        None,
        "once"
    );
    assert_eq!(store.redeem_live_ticket("not-a-ticket", 129).unwrap(), None);
    assert_eq!(
        store.redeem_live_ticket(&other, 131).unwrap(),
        None,
        "expired"
    );
    assert_eq!(store.redeem_live_ticket(&other, 120).unwrap(), None, "gone");
    assert_eq!(
        store
            .new_live_ticket(Uuid::new_v4(), "portal", 100, 130)
            .unwrap(),
        None,
        "no such site"
    );
    // A deleted site's tickets go with it.
    let late = store
        .new_live_ticket(site.uuid, "portal", 200, 230)
        .unwrap()
        .unwrap();
    assert!(store.delete(site.uuid, 201).unwrap());
    assert_eq!(store.redeem_live_ticket(&late, 202).unwrap(), None);
}

fn ok(store: &dyn Store, site: &Site, secret: &str, now: u64) -> bool {
    store.verify(&site.username, secret, now).unwrap().is_some()
}

pub fn ensure_is_idempotent_and_shows_the_credentials_once(store: Arc<dyn Store>) {
    let id = Uuid::new_v4();
    let (site, created) = store.ensure(id, 10).unwrap();
    let created = created.expect("a new site shows its credentials");
    assert_eq!(site.username, username(&id));
    assert_eq!(site.address, Ipv4Addr::new(100, 64, 0, 2));
    let (again, none) = store.ensure(id, 11).unwrap();
    assert_eq!((again, none), (site.clone(), None));
    assert!(ok(&*store, &site, &created.secret, 12));
    assert!(
        store
            .verify(&id.to_string(), &created.secret, 12)
            .unwrap()
            .is_some()
    );
    assert!(!ok(&*store, &site, "wrong", 12));
    assert!(
        !ok(&*store, &site, &created.router_token, 12),
        "a router token is no tunnel secret"
    );
    assert!(
        store
            .verify("nobody", &created.secret, 12)
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.router_site(&created.router_token).unwrap(),
        Some(site.clone())
    );
    assert_eq!(store.router_site(&created.secret).unwrap(), None);
}

pub fn concurrent_ensures_of_one_uuid_give_one_site_and_address(store: Arc<dyn Store>) {
    let id = Uuid::new_v4();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || store.ensure(id, 0).unwrap())
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let addresses: HashSet<_> = results.iter().map(|(s, _)| s.address).collect();
    assert_eq!(addresses.len(), 1);
    assert_eq!(
        results.iter().filter(|(_, c)| c.is_some()).count(),
        1,
        "one creation"
    );
}

pub fn a_job_is_fetched_then_applied_and_its_secret_erased(store: Arc<dyn Store>) {
    let id = Uuid::new_v4();
    let (_, created) = store.ensure(id, 0).unwrap();
    let install = store.pending_job(id, 1).unwrap().expect("an install job");
    assert_eq!(
        (install.kind.as_str(), install.state),
        ("install", JobState::Pending)
    );
    assert_eq!(install.secret, created.map(|c| c.secret));
    let fetched = store.fetch_job(id, 5).unwrap().unwrap();
    assert_eq!(
        (fetched.state, fetched.attempts, fetched.fetched),
        (JobState::Fetched, 1, Some(5))
    );
    let again = store.fetch_job(id, 6).unwrap().unwrap();
    assert_eq!(
        (again.attempts, again.fetched),
        (2, Some(5)),
        "first fetch time kept"
    );
    let Finished::Done(done) = store
        .finish_job(install.id, Some(id), Outcome::Applied, 7)
        .unwrap()
    else {
        panic!("not done");
    };
    assert_eq!(
        (done.state, done.finished, done.secret),
        (JobState::Applied, Some(7), None)
    );
    assert_eq!(store.job(install.id, 8).unwrap().unwrap().secret, None);
    assert_eq!(store.pending_job(id, 8).unwrap(), None);
    assert_eq!(store.fetch_job(id, 8).unwrap(), None);
}

pub fn results_are_idempotent_and_only_from_the_sites_router(store: Arc<dyn Store>) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    store.ensure(a, 0).unwrap();
    store.ensure(b, 0).unwrap();
    let job = store.pending_job(a, 0).unwrap().unwrap();
    assert_eq!(
        store
            .finish_job(job.id, Some(b), Outcome::Applied, 1)
            .unwrap(),
        Finished::NotFound
    );
    let failed = Outcome::Failed("x".repeat(2000));
    let Finished::Done(first) = store
        .finish_job(job.id, Some(a), failed.clone(), 2)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(first.error.as_ref().map(String::len), Some(500), "bounded");
    assert!(
        matches!(store.finish_job(job.id, Some(a), failed, 3).unwrap(), Finished::Done(j) if j.finished == Some(2))
    );
    assert!(
        matches!(store.finish_job(job.id, Some(a), Outcome::Applied, 4).unwrap(), Finished::Conflict(j) if j.state == JobState::Failed)
    );
    assert_eq!(
        store
            .finish_job(Uuid::new_v4(), None, Outcome::Applied, 5)
            .unwrap(),
        Finished::NotFound
    );
}

pub fn recreate_keeps_the_applied_secret_until_the_job_is_applied(store: Arc<dyn Store>) {
    let id = Uuid::new_v4();
    let (site, created) = store.ensure(id, 0).unwrap();
    let old = created.unwrap().secret;
    let install = store.fetch_job(id, 1).unwrap().unwrap();
    store
        .finish_job(install.id, Some(id), Outcome::Applied, 2)
        .unwrap();

    let job = store.recreate(id, 10).unwrap().unwrap();
    let new = job.secret.clone().unwrap();
    assert!(
        ok(&*store, &site, &old, 11),
        "a live tunnel renegotiating keeps working"
    );
    assert!(ok(&*store, &site, &new, 11));
    store
        .finish_job(job.id, Some(id), Outcome::Applied, 20)
        .unwrap();
    assert!(
        !ok(&*store, &site, &old, 21),
        "applied: only the new secret"
    );
    assert!(ok(&*store, &site, &new, 21));
    assert_eq!(store.recreate(Uuid::new_v4(), 10).unwrap(), None);
}

pub fn the_grace_ends_and_a_newer_recreate_supersedes_an_older_one(store: Arc<dyn Store>) {
    let id = Uuid::new_v4();
    let (site, created) = store.ensure(id, 0).unwrap();
    let applied = created.unwrap().secret;
    let install = store.pending_job(id, 0).unwrap().unwrap();
    store
        .finish_job(install.id, None, Outcome::Applied, 1)
        .unwrap();

    let first = store.recreate(id, 10).unwrap().unwrap();
    let second = store.recreate(id, 20).unwrap().unwrap();
    let first_state = store.job(first.id, 21).unwrap().unwrap();
    assert_eq!(
        (first_state.state, first_state.secret),
        (JobState::Superseded, None)
    );
    assert!(
        ok(&*store, &site, &applied, 21),
        "the last applied secret, not the superseded one"
    );
    assert!(!ok(&*store, &site, first.secret.as_deref().unwrap(), 21));
    assert!(ok(&*store, &site, second.secret.as_deref().unwrap(), 21));
    assert!(
        !ok(&*store, &site, &applied, 20 + 1000),
        "grace over (rotation_grace 1000 s)"
    );
    assert!(ok(
        &*store,
        &site,
        second.secret.as_deref().unwrap(),
        20 + 1000
    ));
}

pub fn open_jobs_expire(store: Arc<dyn Store>) {
    let id = Uuid::new_v4();
    store.ensure(id, 0).unwrap();
    let job = store.pending_job(id, 4999).unwrap().unwrap();
    assert_eq!(
        store.fetch_job(id, 5000).unwrap(),
        None,
        "job_expiry 5000 s"
    );
    let expired = store.job(job.id, 5001).unwrap().unwrap();
    assert_eq!(
        (expired.state, expired.finished),
        (JobState::Expired, Some(5000))
    );
}

pub fn a_new_router_token_replaces_the_old_one(store: Arc<dyn Store>) {
    let id = Uuid::new_v4();
    let (site, created) = store.ensure(id, 0).unwrap();
    let token = store.new_router_token(id).unwrap().unwrap();
    assert_eq!(store.router_site(&token).unwrap(), Some(site));
    assert_eq!(
        store.router_site(&created.unwrap().router_token).unwrap(),
        None
    );
    assert_eq!(store.new_router_token(Uuid::new_v4()).unwrap(), None);
}

pub fn a_bootstrap_token_is_spent_once_and_rotates_token_and_secret(store: Arc<dyn Store>) {
    let (site, created) = store.ensure(Uuid::new_v4(), 10).unwrap();
    let created = created.unwrap();
    let install = store.pending_job(site.uuid, 10).unwrap().unwrap();
    assert!(
        store
            .new_enrollment(Uuid::new_v4(), "7.16", 100)
            .unwrap()
            .is_none()
    );
    let first = store
        .new_enrollment(site.uuid, "7.16", 100)
        .unwrap()
        .unwrap();
    let token = store
        .new_enrollment(site.uuid, "7.16", 100)
        .unwrap()
        .unwrap();
    assert!(
        store.enroll(&first, 20).unwrap().is_none(),
        "replaced by the newer one"
    );
    assert!(store.enroll("nonsense", 20).unwrap().is_none());

    let enrolled = store.enroll(&token, 20).unwrap().expect("a valid token");
    assert_eq!(enrolled.site, site);
    assert_eq!(enrolled.version, "7.16");
    assert_eq!(enrolled.job.kind, "bootstrap");
    let secret = enrolled.job.secret.clone().unwrap();
    assert!(store.enroll(&token, 21).unwrap().is_none(), "spent");
    // The new router token works, the old one no longer; the install job is superseded.
    assert!(store.router_site(&created.router_token).unwrap().is_none());
    assert_eq!(
        store.router_site(&enrolled.router_token).unwrap(),
        Some(site.clone())
    );
    assert_eq!(
        store.job(install.id, 21).unwrap().unwrap().state,
        JobState::Superseded
    );
    assert!(ok(&*store, &site, &secret, 22));
    let done = store
        .finish_job(enrolled.job.id, Some(site.uuid), Outcome::Applied, 23)
        .unwrap();
    assert!(matches!(done, Finished::Done(_)));
    assert!(
        !ok(&*store, &site, &created.secret, 24),
        "the first secret ends when the new one is applied"
    );
    assert!(ok(&*store, &site, &secret, 24));
}

pub fn an_expired_bootstrap_token_is_refused_and_gone(store: Arc<dyn Store>) {
    let (site, _) = store.ensure(Uuid::new_v4(), 10).unwrap();
    let token = store
        .new_enrollment(site.uuid, "6.49", 100)
        .unwrap()
        .unwrap();
    assert!(store.enroll(&token, 101).unwrap().is_none());
    assert!(
        store.enroll(&token, 50).unwrap().is_none(),
        "an expired token is removed"
    );
    assert!(store.pending_job(site.uuid, 102).unwrap().unwrap().kind == "install");
}

pub fn every_credential_change_takes_the_next_sequence_number(store: Arc<dyn Store>) {
    let all = store.credentials(0).unwrap();
    assert_eq!((all.seq, all.sites.len()), (0, 0));
    let (a, created) = store.ensure(Uuid::new_v4(), 10).unwrap();
    let (b, _) = store.ensure(Uuid::new_v4(), 10).unwrap();
    let all = store.credentials(0).unwrap();
    assert_eq!(all.sites.len(), 2);
    assert_eq!(all.sites[0].username, a.username);
    assert_eq!(all.sites[0].address, a.address);
    assert_eq!(
        (store.digests()).check(&created.unwrap().secret, &all.sites[0].secret),
        crate::tunnels::keys::Check::Match
    );
    let install = store.pending_job(a.uuid, 10).unwrap().unwrap();
    store
        .finish_job(install.id, None, Outcome::Applied, 11)
        .unwrap();
    let seen = store.credentials(0).unwrap().seq;
    assert!(
        store.credentials(seen).unwrap().sites.is_empty(),
        "nothing new"
    );
    // A rotation changes a's credential only; a router token does not count.
    store.new_router_token(b.uuid).unwrap();
    let job = store.recreate(a.uuid, 20).unwrap().unwrap();
    let changed = store.credentials(seen).unwrap();
    assert_eq!(changed.sites.len(), 1);
    assert_eq!(changed.sites[0].username, a.username);
    assert!(changed.sites[0].previous.is_some() && changed.sites[0].previous_until == Some(1020));
    // Applying ends the previous secret: a change again.
    store
        .finish_job(job.id, None, Outcome::Applied, 21)
        .unwrap();
    let applied = store.credentials(changed.seq).unwrap();
    assert_eq!(applied.sites[0].previous, None);
    // A deletion is a tombstone.
    store.delete(b.uuid, 22).unwrap();
    let deleted = store.credentials(applied.seq).unwrap();
    assert_eq!(
        (deleted.sites.len(), deleted.deleted),
        (0, vec![b.username.clone()])
    );
    assert!(deleted.seq > applied.seq);
}

pub fn deleted_addresses_wait_out_the_quarantine(store: Arc<dyn Store>) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (site_a, _) = store.ensure(a, 0).unwrap();
    let (site_b, created_b) = store.ensure(b, 0).unwrap();
    assert!(store.delete(a, 100).unwrap());
    assert!(!store.delete(a, 100).unwrap());
    assert_eq!(store.get(a).unwrap(), None);
    assert_eq!(store.get(b).unwrap(), Some(site_b.clone()));
    assert!(ok(&*store, &site_b, &created_b.unwrap().secret, 150));
    assert!(
        store.pending_job(a, 150).unwrap().is_none(),
        "its jobs went with it"
    );
    let (c, _) = store.ensure(Uuid::new_v4(), 200).unwrap();
    assert_ne!(c.address, site_a.address, "quarantined for an hour");
    assert_ne!(c.address, site_b.address);
    assert!(store.addresses().unwrap().contains(&site_a.address));
    let (d, _) = store.ensure(Uuid::new_v4(), 100 + 3600).unwrap();
    assert_eq!(d.address, site_a.address, "reused after the quarantine");
    assert_eq!(store.sites().unwrap(), [d, site_b, c], "by address");
    let attempt = Attempt {
        time: 5,
        username: site_a.username.clone(),
        site: Some(site_a.uuid),
        ok: false,
        source: Some("198.51.100.7".into()),
    };
    store.record_attempt(&attempt).unwrap();
}
