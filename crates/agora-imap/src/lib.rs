//! IMAP for Agora (RFC 9051 / RFC 3501 and extensions): pure parts (the command parser,
//! response data, FETCH items, SEARCH, LIST, the selected view, BINARY decoding) and
//! the session that runs them over the store.

pub mod acl;
mod append;
pub mod binary;
pub mod command;
pub mod fetch;
pub mod list;
mod mailbox;
mod metadata;
pub mod mutf7;
mod notify;
pub mod response;
pub use agora_store::search;
pub mod selected;
pub mod service;
pub mod session;
pub use agora_store::sort;
pub use agora_store::thread;

pub use command::{Command, ParseError, literal_suffix, parse};

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_net::{Conn, Service};
use agora_store::Store;
use async_trait::async_trait;

pub use session::{ImapConfig, Session, UserSessions};

/// IMAP (143 with STARTTLS, 993 with implicit TLS) as a listener service.
pub struct ImapService {
    cfg: Arc<ImapConfig>,
    dir: Directory,
    store: Arc<dyn Store>,
    throttle: Arc<Throttle>,
    sessions: UserSessions,
}

impl ImapService {
    pub fn new(cfg: ImapConfig, dir: Directory, store: Arc<dyn Store>, throttle: Arc<Throttle>) -> ImapService {
        ImapService { cfg: Arc::new(cfg), sessions: UserSessions::for_store(&store), dir, store, throttle }
    }
}

#[async_trait]
impl Service for ImapService {
    fn busy_reply(&self) -> &'static [u8] {
        b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
    }

    async fn serve(&self, conn: Conn) {
        Session::new(
            Arc::clone(&self.cfg),
            self.dir.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.throttle),
            self.sessions.clone(),
        )
        .run(conn)
        .await;
    }
}

#[cfg(test)]
mod tests;
