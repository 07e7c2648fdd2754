//! SMTP for Agora: the pure command codec and the inbound ESMTP session that delivers
//! into the information store.

pub mod auth;
pub mod codec;
pub mod mtasts;
pub mod outbound;
pub mod session;
pub mod tracking;

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_net::{Conn, Service};
use agora_store::Store;
use async_trait::async_trait;

pub use session::{MessageMemory, Session, SmtpConfig};

/// Inbound SMTP (port 25) as a listener service.
pub struct SmtpService {
    memory: MessageMemory,
    cfg: Arc<SmtpConfig>,
    dir: Directory,
    store: Arc<dyn Store>,
    throttle: Arc<Throttle>,
}

impl SmtpService {
    /// `memory` bounds the message data all sessions hold at once.
    pub fn new(
        cfg: SmtpConfig,
        dir: Directory,
        store: Arc<dyn Store>,
        memory: MessageMemory,
        throttle: Arc<Throttle>,
    ) -> SmtpService {
        SmtpService { memory, cfg: Arc::new(cfg), dir, store, throttle }
    }
}

#[async_trait]
impl Service for SmtpService {
    fn busy_reply(&self) -> &'static [u8] {
        b"421 4.3.2 Too many connections, try again later\r\n"
    }

    async fn serve(&self, conn: Conn) {
        Session::new(
            Arc::clone(&self.cfg),
            self.dir.clone(),
            Arc::clone(&self.store),
            self.memory.clone(),
            Arc::clone(&self.throttle),
        )
        .run(conn)
        .await;
    }
}

#[cfg(test)]
mod tests;
