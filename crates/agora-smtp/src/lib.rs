//! SMTP for Agora: the pure command codec, the ESMTP session (inbound and submission)
//! that hands mail to the mail core, and the outbound transport that speaks SMTP to
//! other servers.

pub mod codec;
pub mod outbound;
pub mod service;
pub mod session;

use std::sync::Arc;

use agora_directory::throttle::Throttle;
use agora_mail::Mail;
use agora_net::{Conn, Service};
use async_trait::async_trait;

pub use session::{MessageMemory, Session, SmtpConfig};

/// Inbound SMTP (port 25) as a listener service.
pub struct SmtpService {
    memory: MessageMemory,
    cfg: Arc<SmtpConfig>,
    mail: Arc<Mail>,
    throttle: Arc<Throttle>,
}

impl SmtpService {
    /// `memory` bounds the message data all sessions hold at once.
    pub fn new(cfg: SmtpConfig, mail: Arc<Mail>, memory: MessageMemory, throttle: Arc<Throttle>) -> SmtpService {
        SmtpService { memory, cfg: Arc::new(cfg), mail, throttle }
    }
}

#[async_trait]
impl Service for SmtpService {
    fn busy_reply(&self) -> &'static [u8] {
        b"421 4.3.2 Too many connections, try again later\r\n"
    }

    async fn serve(&self, conn: Conn) {
        Session::new(Arc::clone(&self.cfg), Arc::clone(&self.mail), self.memory.clone(), Arc::clone(&self.throttle))
            .run(conn)
            .await;
    }
}

#[cfg(test)]
mod tests;
