//! LDAP for Agora: the directory every service uses, served over LDAPv3 (389/390 with
//! StartTLS, 636 with TLS) and as a read-only Global Catalog (3268/3269).

mod ber;
pub mod dn;
pub mod filter;
pub mod matching;
pub mod replica;
pub mod schema;
pub mod service;
pub mod session;
pub mod sync;
pub mod syncmsg;
pub mod tree;
mod write;

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_net::{Conn, Service};
use agora_service::snapshot::Snapshot;
use agora_store::Store;
use async_trait::async_trait;

pub use session::{LdapConfig, Session};

/// What every LDAP connection shares: the store, the directory and the current tree.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub dir: Directory,
    pub throttle: Arc<Throttle>,
    tree: Snapshot<tree::Tree>,
    /// The replication log (RFC 4533) kept from the tree.
    pub sync: sync::SyncLog,
}

impl Shared {
    pub fn new(store: Arc<dyn Store>, dir: Directory, throttle: Arc<Throttle>) -> Arc<Shared> {
        Arc::new(Shared { store, dir, throttle, tree: Snapshot::default(), sync: sync::SyncLog::default() })
    }

    /// The tree at the store's current directory version, rebuilt if anything changed.
    pub async fn tree(&self) -> Result<Arc<tree::Tree>, agora_store::StoreError> {
        self.tree
            .get(&*self.store, || async {
                let started = std::time::Instant::now();
                let src = tree::Source::read(&self.store).await?;
                let read = started.elapsed();
                let t = tokio::task::spawn_blocking(move || tree::Tree::build(src))
                    .await
                    .map_err(|e| agora_store::StoreError::Invalid(format!("building the directory tree: {e}")))?;
                tracing::debug!(
                    "ldap: directory tree of {} entries read in {read:?}, built in {:?}",
                    t.entries.len(),
                    started.elapsed() - read
                );
                Ok(t)
            })
            .await
    }
}

/// One listener's LDAP: the directory (389/390/636) or the Global Catalog (3268/3269).
pub struct LdapService {
    cfg: Arc<LdapConfig>,
    shared: Arc<Shared>,
}

impl LdapService {
    pub fn new(cfg: LdapConfig, shared: Arc<Shared>) -> LdapService {
        LdapService { cfg: Arc::new(cfg), shared }
    }
}

#[async_trait]
impl Service for LdapService {
    fn busy_reply(&self) -> &'static [u8] {
        session::busy_notice()
    }

    async fn serve(&self, conn: Conn) {
        Session::new(Arc::clone(&self.cfg), Arc::clone(&self.shared)).run(conn).await;
    }
}

#[cfg(test)]
mod tests;
