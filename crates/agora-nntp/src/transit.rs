//! Articles coming in from peers (IHAVE, CHECK/TAKETHIS): whether one is wanted (not
//! in the history, not being received on another connection), and taking it in —
//! relaying checks, no older than the history remembers, the groups carried here that
//! the peer exchanges with us, nothing for a moderated group without Approved — stored
//! durably before the peer is told. Shared by every connection.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use agora_store::{AccountId, Delivery, DeliveryTarget, Flags, PUBLIC_OWNER, Store, StoreError, now};
use tokio::sync::OnceCell;

use crate::article;

pub enum Offer {
    Wanted,
    /// Being received on another connection.
    Busy,
    Unwanted,
    /// A fault here: the peer should offer it again later.
    Fault,
}

pub enum Taken {
    Stored,
    Rejected(String),
    /// Being received on another connection.
    Busy,
    /// A fault here: the peer should offer it again.
    Fault,
}

pub struct Transit {
    store: Arc<dyn Store>,
    hostname: String,
    max_article: usize,
    /// Articles older than this (seconds) are refused: the history may have forgotten them.
    max_age: i64,
    owner: OnceCell<AccountId>,
    receiving: Mutex<HashSet<String>>,
}

/// Removes a Message-ID from the set being received when its transfer ends.
struct Receiving<'a>(&'a Mutex<HashSet<String>>, String);

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.0.lock() {
            set.remove(&self.1);
        }
    }
}

impl Transit {
    pub fn new(store: Arc<dyn Store>, hostname: String, max_article: usize, history_days: u32) -> Transit {
        Transit {
            store,
            hostname,
            max_article,
            max_age: i64::from(history_days.max(1)) * 86_400,
            owner: OnceCell::new(),
            receiving: Mutex::new(HashSet::new()),
        }
    }

    /// The account that owns the public folders.
    pub async fn owner(&self) -> agora_store::Result<AccountId> {
        self.owner
            .get_or_try_init(|| async {
                self.store
                    .account_by_login(PUBLIC_OWNER)
                    .await?
                    .map(|a| a.id)
                    .ok_or_else(|| StoreError::NotFound("public folders".into()))
            })
            .await
            .copied()
    }

    fn is_receiving(&self, id: &str) -> bool {
        self.receiving.lock().map(|s| s.contains(id)).unwrap_or(false)
    }

    pub async fn wanted(&self, id: &str) -> Offer {
        if self.is_receiving(id) {
            return Offer::Busy;
        }
        match self.store.news_seen(id).await {
            Ok(false) => Offer::Wanted,
            Ok(true) => Offer::Unwanted,
            Err(e) => {
                tracing::error!("nntp: history: {e}");
                Offer::Fault
            }
        }
    }

    /// Stores an article in public folders (targets by path), durably: the caller may
    /// acknowledge it once this returns.
    pub async fn store_article(&self, article: Vec<u8>, mut targets: Vec<DeliveryTarget>) -> agora_store::Result<()> {
        let owner = self.owner().await?;
        for t in &mut targets {
            t.account = owner;
        }
        let body = self.store.stage(article).await?;
        self.store
            .deliver(Delivery {
                body,
                internal_date: now(),
                envelope: None,
                flags: Flags::default(),
                keywords: Vec::new(),
                targets,
                relay: Vec::new(),
                enforce_quota: false,
            })
            .await?;
        Ok(())
    }

    /// Keeps a refused Message-ID in the history, so that it is not offered again.
    pub async fn remember(&self, id: &str) {
        if let Err(e) = self.store.remember_news(vec![id.to_string()], now()).await {
            tracing::warn!("nntp: history: {e}");
        }
    }

    /// Takes in an article a peer sent under `id`; `groups` is the wildmat of the
    /// newsgroups this peer exchanges with us.
    pub async fn take(&self, id: &str, raw: Vec<u8>, groups_of_peer: &str) -> Taken {
        let _guard = {
            let Ok(mut set) = self.receiving.lock() else { return Taken::Fault };
            if !set.insert(id.to_string()) {
                return Taken::Busy;
            }
            Receiving(&self.receiving, id.to_string())
        };
        match self.store.news_seen(id).await {
            Ok(false) => {}
            Ok(true) => return Taken::Rejected("duplicate".into()),
            Err(e) => {
                tracing::error!("nntp: history: {e}");
                return Taken::Fault;
            }
        }
        if article::date(&raw).is_some_and(|d| d < now() - self.max_age) {
            self.remember(id).await;
            return Taken::Rejected("too old: older than the history remembers".into());
        }
        let relayed = match article::relay(&raw, id, &self.hostname, self.max_article) {
            Ok(r) => r,
            Err(why) => {
                tracing::info!("nntp: refused {id} from a peer: {why}");
                self.remember(id).await;
                return Taken::Rejected(why);
            }
        };
        let groups = match self.store.news_groups().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("nntp: listing newsgroups: {e}");
                return Taken::Fault;
            }
        };
        let carried: Vec<_> = relayed
            .newsgroups
            .iter()
            .filter(|n| crate::codec::wildmat(groups_of_peer, n))
            .filter_map(|n| groups.iter().find(|g| &g.name == n))
            .collect();
        if carried.is_empty() {
            self.remember(id).await;
            return Taken::Rejected("no newsgroup carried here".into());
        }
        // RFC 5537 §3.6: an unapproved article for a moderated group is refused whole.
        if !relayed.approved && carried.iter().any(|g| g.folder.moderated) {
            self.remember(id).await;
            return Taken::Rejected("unapproved for a moderated group".into());
        }
        let targets: Vec<DeliveryTarget> =
            carried.iter().map(|g| DeliveryTarget { account: 0, mailbox: g.folder.path.clone() }).collect();
        let stored = self.store_article(relayed.article, targets).await;
        match stored {
            Ok(_) => {
                tracing::info!("nntp: received {id} for {}", relayed.newsgroups.join(","));
                Taken::Stored
            }
            Err(e) => {
                tracing::error!("nntp: storing {id}: {e}");
                Taken::Fault
            }
        }
    }
}
