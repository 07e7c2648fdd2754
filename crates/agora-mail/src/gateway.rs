//! Gateways to other mail systems (X.400 today): a protocol crate registers one at
//! start-up, and the outbound transport hands it the queued mail for the domains it
//! claims, so such mail keeps the one queue, its retries and its reports.

use std::sync::Arc;

/// What became of one recipient handed to a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken over by the other system (the note says where, for tracking).
    Delivered(String),
    /// Try again later.
    Deferred(String),
    /// Refused for good: the sender gets a report.
    Failed(String),
}

#[async_trait::async_trait]
pub trait Gateway: Send + Sync {
    /// Its name in logs.
    fn name(&self) -> &str;
    /// Whether mail for `domain` goes through this gateway.
    async fn claims(&self, domain: &str) -> bool;
    /// Delivers one message to its recipients (all of one claimed domain); one
    /// outcome per recipient, in order.
    async fn deliver(&self, from: &str, recipients: &[String], message: &[u8]) -> Vec<Outcome>;
}

/// The gateways this server runs.
#[derive(Default)]
pub struct Gateways(std::sync::RwLock<Vec<Arc<dyn Gateway>>>);

impl std::fmt::Debug for Gateways {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gateways")
    }
}

impl Gateways {
    pub fn add(&self, g: Arc<dyn Gateway>) {
        if let Ok(mut list) = self.0.write() {
            list.push(g);
        }
    }

    /// The gateway that claims `domain`, if one does.
    pub async fn for_domain(&self, domain: &str) -> Option<Arc<dyn Gateway>> {
        let list: Vec<Arc<dyn Gateway>> = self.0.read().map(|l| l.clone()).unwrap_or_default();
        for g in list {
            if g.claims(domain).await {
                return Some(g);
            }
        }
        None
    }
}
