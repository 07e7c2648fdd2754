//! An RPC listener's sessions: whole fragments read off the connection (their length
//! checked against what the association takes), handed to the association, its
//! answers written back; the login throttle and counters when NTLM succeeds.

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_net::{Conn, Service};
use async_trait::async_trait;

use crate::assoc::{Accounts, Association, BoxFuture, Server};
use crate::ntlm::Names;
use crate::pdu;

/// One listener's RPC server.
pub struct RpcService {
    pub server: Arc<Server>,
    pub throttle: Arc<Throttle>,
}

#[async_trait]
impl Service for RpcService {
    fn busy_reply(&self) -> &'static [u8] {
        // RPC has nothing to say before a bind: a full server closes.
        b""
    }

    async fn serve(&self, mut conn: Conn) {
        let mut assoc = Association::new(Arc::clone(&self.server), conn.peer.ip(), conn.local.ip());
        let mut logged_in = false;
        loop {
            let mut raw = Vec::with_capacity(pdu::HEADER);
            if let Err(e) = conn.read_more(pdu::HEADER, &mut raw).await {
                if matches!(e, agora_net::Read::Shutdown) {
                    // C706: the server asks the client to end the association.
                    let bye = pdu::Pdu { flags: 3, call_id: 0, body: pdu::Body::Shutdown, auth: None };
                    let _ = conn.send(&pdu::encode(&bye).unwrap_or_default()).await;
                }
                break;
            }
            let len = match pdu::fragment_length(&raw) {
                Ok(n) if n <= assoc.max_fragment() => n,
                // A header that cannot be a fragment, or one larger than agreed: the
                // association ends with a fault (the oversized fragment read first,
                // so that the client reads the fault rather than a reset).
                other => {
                    if let Ok(n) = other {
                        let _ = conn.skip(n - pdu::HEADER).await;
                    }
                    let replies = assoc.fragment(raw).await;
                    for r in &replies {
                        conn.queue(r);
                    }
                    let _ = conn.flush().await;
                    break;
                }
            };
            if conn.read_more(len - pdu::HEADER, &mut raw).await.is_err() {
                break;
            }
            let replies = assoc.fragment(raw).await;
            for r in &replies {
                conn.queue(r);
            }
            if conn.flush().await.is_err() {
                break;
            }
            if !logged_in && let Some(c) = assoc.caller().filter(|c| !c.login.is_empty()) {
                logged_in = true;
                agora_service::login::succeeded(&self.throttle, &mut conn, "rpc", &c.login);
            }
            if assoc.closed {
                break;
            }
        }
        conn.close().await;
    }
}

/// NTLM's view of the directory.
pub struct DirectoryAccounts {
    pub dir: Directory,
    pub throttle: Arc<Throttle>,
    pub names: Names,
}

impl Accounts for DirectoryAccounts {
    fn ntlm_secret<'a>(
        &'a self,
        user: &'a str,
        domain: &'a str,
        _peer: std::net::IpAddr,
    ) -> BoxFuture<'a, Option<([u8; 16], String)>> {
        Box::pin(async move {
            match self.dir.ntlm_account(user, domain).await {
                Ok(found) => found.map(|(account, hash)| (hash, account.login)),
                Err(e) => {
                    tracing::warn!("rpc: looking up {user:?} for NTLM: {e}");
                    None
                }
            }
        })
    }

    fn failed<'a>(&'a self, user: &'a str, peer: std::net::IpAddr) -> BoxFuture<'a, ()> {
        Box::pin(agora_service::login::failed(&self.throttle, peer, "rpc", Some(user)))
    }

    fn names(&self) -> Names {
        self.names.clone()
    }
}
