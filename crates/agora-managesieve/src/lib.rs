//! ManageSieve for Agora (RFC 5804): the pure command codec and the session over each
//! account's Sieve scripts in the information store.

pub mod codec;
pub mod service;
pub mod session;

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_net::{Conn, Service};
use agora_store::Store;
use async_trait::async_trait;

pub use session::{OnChange, Session, SieveConfig};

/// ManageSieve (4190, STARTTLS) as a listener service.
pub struct ManageSieveService {
    cfg: Arc<SieveConfig>,
    dir: Directory,
    store: Arc<dyn Store>,
    throttle: Arc<Throttle>,
    changed: OnChange,
}

impl ManageSieveService {
    pub fn new(
        cfg: SieveConfig,
        dir: Directory,
        store: Arc<dyn Store>,
        throttle: Arc<Throttle>,
        changed: OnChange,
    ) -> ManageSieveService {
        ManageSieveService { cfg: Arc::new(cfg), dir, store, throttle, changed }
    }
}

#[async_trait]
impl Service for ManageSieveService {
    fn busy_reply(&self) -> &'static [u8] {
        b"BYE (TRYLATER) \"Too many connections, try again later\"\r\n"
    }

    async fn serve(&self, conn: Conn) {
        Session::new(
            Arc::clone(&self.cfg),
            self.dir.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.throttle),
            Arc::clone(&self.changed),
        )
        .run(conn)
        .await;
    }
}

#[cfg(test)]
mod tests;
