//! A router's task and this node's claim on its connection: taken before
//! the first viewer's streams start, renewed while it holds it, given up
//! when the task ends. When another node holds it, the viewers here are
//! told to come again (the route then relays them from that node).
//! One-shot calls (resources, a reboot) need no claim: a short second
//! connection is harmless, a second stream per viewer is what the claim
//! prevents.

use std::{sync::atomic::Ordering::Relaxed, time::Duration};

use tokio::time::Instant;

use super::Router;
use crate::live::{
    hub::{Claim, Elsewhere},
    message::Message,
};

/// How often a held claim is renewed (the store's lease lasts three times
/// longer: see `live::connect`).
pub(in crate::live) const RENEW_EVERY: Duration = Duration::from_secs(10);

impl Router {
    /// Claims the connection; false (viewers told, or a retry set) when
    /// this node may not open it now.
    pub(super) async fn claim(&mut self) -> bool {
        match self.shared.connector.claim(self.site).await {
            Claim::Ours => {
                self.claimed = true;
                self.renew_at = Some(Instant::now() + RENEW_EVERY);
                true
            }
            Claim::Elsewhere(holder) => {
                self.moved(&holder);
                false
            }
            Claim::Unknown(why) => {
                let why = format!("cannot tell which node holds this router's connection: {why}");
                self.down("router_unreachable", why);
                false
            }
        }
    }

    /// Renews a held claim; one lost to another node ends this node's
    /// connection and moves its viewers. A database away keeps what runs.
    pub(super) async fn renew(&mut self) {
        match self.shared.connector.claim(self.site).await {
            Claim::Ours | Claim::Unknown(_) => {
                self.renew_at = Some(Instant::now() + RENEW_EVERY);
            }
            Claim::Elsewhere(holder) => {
                self.claimed = false;
                self.renew_at = None;
                self.client = None;
                self.streams.clear();
                self.metrics_streams();
                self.moved(&holder);
            }
        }
    }

    /// Gives the claim up.
    pub(super) fn release(&mut self) {
        if std::mem::take(&mut self.claimed) {
            self.renew_at = None;
            self.shared.connector.release(self.site);
        }
    }

    /// Tells every viewer that `holder` serves this router and lets them go.
    fn moved(&mut self, holder: &Elsewhere) {
        let message = Message::error(
            "moved",
            format!(
                "node {} holds this router's connection: open the view again",
                holder.node
            ),
        );
        self.broadcast(|_| true, &message);
        let gone = self.viewers.len() as i64;
        self.viewers.clear();
        self.shared.metrics.viewers.fetch_sub(gone, Relaxed);
        self.idle_since = Some(Instant::now());
    }
}
