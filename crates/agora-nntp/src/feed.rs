//! The outgoing feed to each configured peer (`[nntp.peers.NAME]`): articles arriving in
//! newsgroups the peer's pattern matches, whatever door they came through, are offered
//! with IHAVE in arrival order. The peer's cursor in the store moves only past articles
//! the peer answered for good (taken, refused, or not wanted), so a restart or a lost
//! connection resends from there and the peer's history drops what it already has:
//! nothing is lost, nothing is stored twice. Articles whose Path holds the peer are
//! not offered back to it.

use std::sync::Arc;
use std::time::Duration;

use agora_directory::granted;
use agora_store::{NewsGroup, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::codec;

/// One peer's outgoing feed.
#[derive(Debug, Clone)]
pub struct PeerFeed {
    /// The name in `[nntp.peers.NAME]` (its cursor in the store).
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Wildmat of the newsgroups it gets.
    pub newsgroups: String,
    /// How it names itself in Path (articles from it are not offered back).
    pub path_name: String,
}

/// Longest reply line read from a peer.
const MAX_REPLY: usize = 4096;
const BATCH: usize = 500;

/// Feeds `peer` until shutdown: woken by new articles, and every minute.
pub async fn run(store: Arc<dyn Store>, hostname: String, peer: PeerFeed, shutdown: CancellationToken) {
    if let Err(e) = store.news_feed_start(&peer.name).await {
        tracing::error!("nntp: feed {}: {e}", peer.name);
        return;
    }
    let mut changes = store.subscribe();
    let mut backoff = Duration::from_secs(2);
    let mut deferred = (0, 0);
    loop {
        let wait = match pass(store.as_ref(), &hostname, &peer, &shutdown, &mut deferred).await {
            Ok(sent) => {
                if sent > 0 {
                    tracing::info!("nntp: feed {}: {sent} articles offered", peer.name);
                }
                backoff = Duration::from_secs(2);
                Duration::from_secs(60)
            }
            Err(e) => {
                tracing::warn!("nntp: feed {}: {e}; trying again in {}s", peer.name, backoff.as_secs());
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(600));
                w
            }
        };
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = shutdown.cancelled() => return,
                change = changes.recv() => match change {
                    // New articles are offered at once, unless the peer is failing.
                    Ok(agora_store::Change::Appended { .. }) | Err(RecvError::Lagged(_)) => {
                        if backoff <= Duration::from_secs(2) {
                            break;
                        }
                    }
                    Err(RecvError::Closed) => {
                        (&mut sleep).await;
                        break;
                    }
                    Ok(_) => {}
                },
            }
        }
    }
}

/// What the peer said of one offer.
enum Answer {
    /// Taken, refused or not wanted: the cursor may move past it.
    Done,
    /// Try later: the cursor stays here.
    Later,
}

/// How often one article may be deferred by the peer (436) before it is passed over.
const MAX_DEFERRALS: u32 = 5;

/// Offers everything after the cursor; returns how many articles were offered. The
/// cursor is saved before any error is returned. `deferred`: the article the peer last
/// asked for later, and how many times in a row.
async fn pass(
    store: &dyn Store,
    hostname: &str,
    peer: &PeerFeed,
    shutdown: &CancellationToken,
    deferred: &mut (i64, u32),
) -> Result<usize, String> {
    let mut offered = 0;
    let mut conn: Option<Client> = None;
    let mut groups: Vec<NewsGroup> = Vec::new();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let batch = store.news_feed_next(&peer.name, BATCH).await.map_err(|e| e.to_string())?;
        let Some(last) = batch.last().map(|a| a.seq) else { break };
        if batch.iter().any(|a| !groups.iter().any(|g| g.folder.mailbox == a.mailbox)) {
            groups = store.news_groups().await.map_err(|e| e.to_string())?;
        }
        let mut done = batch.first().map_or(0, |a| a.seq - 1);
        let mut failure: Option<String> = None;
        for a in &batch {
            // Only the groups anyone may read leave this server, and only those the
            // peer's pattern names; an article without a usable Message-ID cannot go.
            let group = groups.iter().find(|g| g.folder.mailbox == a.mailbox).filter(|g| {
                codec::wildmat(&peer.newsgroups, &g.name) && granted(&g.acl, &["anyone".to_string()]).contains('r')
            });
            let Some(group) = group.filter(|_| codec::is_message_id(&a.message_id)) else {
                done = a.seq;
                continue;
            };
            let raw = match store.read_blob(&a.blob).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("nntp: feed {}: {} not offered: {e}", peer.name, a.message_id);
                    done = a.seq;
                    continue;
                }
            };
            let approver = group.folder.address.clone().unwrap_or_else(|| format!("news@{hostname}"));
            let approved = group.folder.moderated.then_some(approver.as_str());
            let Some(article) = outgoing(&raw, &group.name, hostname, &peer.path_name, approved) else {
                done = a.seq;
                continue;
            };
            if conn.is_none() {
                match Client::connect(peer).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { break };
            offered += 1;
            match c.ihave(&a.message_id, &article).await {
                Ok(Answer::Done) => done = a.seq,
                Ok(Answer::Later) if *deferred == (a.seq, MAX_DEFERRALS - 1) => {
                    tracing::warn!(
                        "nntp: feed {}: {} deferred {MAX_DEFERRALS} times: passed over",
                        peer.name,
                        a.message_id
                    );
                    done = a.seq;
                }
                Ok(Answer::Later) => {
                    *deferred = if deferred.0 == a.seq { (a.seq, deferred.1 + 1) } else { (a.seq, 1) };
                    failure = Some(format!("{} asked for {} later", peer.name, a.message_id));
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        store.news_feed_advance(&peer.name, done.max(0)).await.map_err(|e| e.to_string())?;
        if let Some(f) = failure {
            return Err(f);
        }
        if done < last {
            break;
        }
    }
    if let Some(mut c) = conn {
        c.quit().await;
    }
    Ok(offered)
}

/// The article as offered: the newsgroup and Path a mailed-in message lacks are added,
/// and for a moderated group (where only approved articles are) the Approved field;
/// None when it must not go (the peer is in its Path, or it has no Message-ID).
fn outgoing(raw: &[u8], group: &str, hostname: &str, peer_path: &str, approved: Option<&str>) -> Option<Vec<u8>> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| raw.windows(2).position(|w| w == b"\n\n"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let has =
        |name: &str| head.lines().any(|l| l.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name)));
    if !has("message-id") {
        return None;
    }
    let path = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case("path")).map(|(_, v)| v.trim()));
    if let Some(p) = path
        && p.split('!').any(|id| id.trim().eq_ignore_ascii_case(peer_path))
    {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + 128);
    if path.is_none() {
        out.extend_from_slice(format!("Path: {hostname}!not-for-mail\r\n").as_bytes());
    }
    if !has("newsgroups") {
        out.extend_from_slice(format!("Newsgroups: {group}\r\n").as_bytes());
    }
    if let Some(by) = approved
        && !has("approved")
    {
        out.extend_from_slice(format!("Approved: {by}\r\n").as_bytes());
    }
    out.extend_from_slice(raw);
    Some(out)
}

/// A client connection to a peer.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    async fn connect(peer: &PeerFeed) -> Result<Client, String> {
        let stream = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect((peer.host.as_str(), peer.port)))
            .await
            .map_err(|_| format!("connecting to {}:{} timed out", peer.host, peer.port))?
            .map_err(|e| format!("connecting to {}:{}: {e}", peer.host, peer.port))?;
        let mut c = Client { reader: BufReader::new(stream) };
        let greeting = c.reply().await?;
        if !(greeting.starts_with("200") || greeting.starts_with("201")) {
            return Err(format!("{} greeted with {greeting:?}", peer.name));
        }
        Ok(c)
    }

    async fn reply(&mut self) -> Result<String, String> {
        let mut line = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(300),
            (&mut self.reader).take(MAX_REPLY as u64).read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| "the peer did not answer".to_string())?
        .map_err(|e| e.to_string())?;
        if read == 0 || !line.ends_with(b"\n") {
            return Err("the peer closed the connection".into());
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    }

    async fn send(&mut self, data: &[u8]) -> Result<(), String> {
        let s = self.reader.get_mut();
        s.write_all(data).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())
    }

    async fn ihave(&mut self, id: &str, article: &[u8]) -> Result<Answer, String> {
        self.send(format!("IHAVE {id}\r\n").as_bytes()).await?;
        let r = self.reply().await?;
        match r.get(..3) {
            Some("335") => {}
            // 501: this Message-ID is not acceptable there; the others may be.
            Some("435") | Some("437") | Some("501") => return Ok(Answer::Done),
            Some("436") => return Ok(Answer::Later),
            _ => return Err(format!("IHAVE {id}: {r}")),
        }
        let mut out = Vec::with_capacity(article.len() + article.len() / 32 + 8);
        agora_net::dot::stuff(article, None, &mut out);
        self.send(&out).await?;
        let r = self.reply().await?;
        match r.get(..3) {
            Some("235") | Some("437") => Ok(Answer::Done),
            Some("436") => Ok(Answer::Later),
            _ => Err(format!("sending {id}: {r}")),
        }
    }

    async fn quit(&mut self) {
        if self.send(b"QUIT\r\n").await.is_ok() {
            let _ = self.reply().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_articles() {
        let mailed = b"From: a@b\r\nSubject: s\r\nMessage-ID: <m@b>\r\n\r\nbody\r\n";
        let out = String::from_utf8(outgoing(mailed, "agora.sales", "news.test", "inn.test", None).unwrap()).unwrap();
        assert!(out.starts_with("Path: news.test!not-for-mail\r\nNewsgroups: agora.sales\r\nFrom: a@b\r\n"), "{out}");
        let posted = b"Path: news.test!not-for-mail\r\nNewsgroups: x.y\r\nMessage-ID: <m@b>\r\n\r\nb\r\n";
        assert_eq!(outgoing(posted, "agora.sales", "news.test", "inn.test", None).unwrap(), posted.to_vec());
        let from_peer = b"Path: news.test!INN.test!not-for-mail\r\nNewsgroups: x.y\r\nMessage-ID: <m@b>\r\n\r\nb\r\n";
        let approved = outgoing(posted, "x.y", "news.test", "inn.test", Some("mod@b")).unwrap();
        assert!(approved.starts_with(b"Approved: mod@b\r\nPath: news.test!not-for-mail\r\n"));
        assert!(outgoing(from_peer, "x.y", "news.test", "inn.test", None).is_none(), "not back to where it came from");
        assert!(outgoing(b"Subject: s\r\n\r\nb\r\n", "x.y", "news.test", "inn.test", None).is_none());
    }
}
