//! POP3 for Agora: the pure command codec and the session over the information store.

pub mod codec;
pub mod service;
pub mod session;

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_net::{Conn, Service};
use agora_store::Store;
use async_trait::async_trait;

pub use session::{Locks, Pop3Config, Session};

/// POP3 (110 with STLS, 995 with implicit TLS) as a listener service.
pub struct Pop3Service {
    cfg: Arc<Pop3Config>,
    dir: Directory,
    store: Arc<dyn Store>,
    locks: Arc<Locks>,
    throttle: Arc<Throttle>,
}

impl Pop3Service {
    pub fn new(cfg: Pop3Config, dir: Directory, store: Arc<dyn Store>, throttle: Arc<Throttle>) -> Pop3Service {
        Pop3Service { cfg: Arc::new(cfg), locks: Arc::new(Locks::for_store(&store)), dir, store, throttle }
    }
}

#[async_trait]
impl Service for Pop3Service {
    fn busy_reply(&self) -> &'static [u8] {
        b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"
    }

    async fn serve(&self, conn: Conn) {
        Session::new(
            Arc::clone(&self.cfg),
            self.dir.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.locks),
            Arc::clone(&self.throttle),
        )
        .run(conn)
        .await;
    }
}

#[cfg(test)]
mod tests;
