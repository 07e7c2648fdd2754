//! Articles coming in from peers (IHAVE, CHECK/TAKETHIS): whether one is wanted (not
//! in the history, not being received on another connection), and taking it in —
//! relaying checks, the groups carried here, moderated groups only with Approved —
//! stored durably before the peer is told. Shared by every connection.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use agora_store::{AccountId, Delivery, DeliveryTarget, Flags, PUBLIC_OWNER, Store, StoreError, now};
use tokio::sync::OnceCell;

use crate::article;

pub enum Offer {
    Wanted,
    /// Being received on another connection: offer it again later.
    Later,
    Unwanted,
}

pub enum Taken {
    Stored,
    Rejected(String),
    /// A fault here: the peer should offer it again.
    Later,
}

pub struct Transit {
    store: Arc<dyn Store>,
    hostname: String,
    max_article: usize,
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
    pub fn new(store: Arc<dyn Store>, hostname: String, max_article: usize) -> Transit {
        Transit { store, hostname, max_article, owner: OnceCell::new(), receiving: Mutex::new(HashSet::new()) }
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
            return Offer::Later;
        }
        match self.store.news_seen(id).await {
            Ok(false) => Offer::Wanted,
            Ok(true) => Offer::Unwanted,
            Err(e) => {
                tracing::error!("nntp: history: {e}");
                Offer::Later
            }
        }
    }

    /// Keeps a refused Message-ID in the history, so that it is not offered again.
    pub async fn remember(&self, id: &str) {
        if let Err(e) = self.store.remember_news(vec![id.to_string()], now()).await {
            tracing::warn!("nntp: history: {e}");
        }
    }

    /// Takes in an article a peer sent under `id`.
    pub async fn take(&self, id: &str, raw: Vec<u8>) -> Taken {
        let _guard = {
            let Ok(mut set) = self.receiving.lock() else { return Taken::Later };
            if !set.insert(id.to_string()) {
                return Taken::Later;
            }
            Receiving(&self.receiving, id.to_string())
        };
        match self.store.news_seen(id).await {
            Ok(false) => {}
            Ok(true) => return Taken::Rejected("duplicate".into()),
            Err(e) => {
                tracing::error!("nntp: history: {e}");
                return Taken::Later;
            }
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
                return Taken::Later;
            }
        };
        let mut targets = Vec::new();
        let mut unapproved = false;
        for name in &relayed.newsgroups {
            if let Some(g) = groups.iter().find(|g| &g.name == name) {
                if g.folder.moderated && !relayed.approved {
                    unapproved = true;
                } else {
                    targets.push(DeliveryTarget { account: 0, mailbox: g.folder.path.clone() });
                }
            }
        }
        if targets.is_empty() {
            self.remember(id).await;
            let why = if unapproved { "unapproved for a moderated group" } else { "no newsgroup carried here" };
            return Taken::Rejected(why.into());
        }
        let owner = match self.owner().await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("nntp: public folders: {e}");
                return Taken::Later;
            }
        };
        for t in &mut targets {
            t.account = owner;
        }
        let stored = async {
            let body = self.store.stage(relayed.article).await?;
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
                .await
        }
        .await;
        match stored {
            Ok(_) => {
                tracing::info!("nntp: received {id} for {}", relayed.newsgroups.join(","));
                Taken::Stored
            }
            Err(e) => {
                tracing::error!("nntp: storing {id}: {e}");
                Taken::Later
            }
        }
    }
}
