//! Expiry of public folders, so a busy newsgroup does not grow forever: per folder,
//! articles older than its `expire_days` and beyond its newest `expire_count` go (by
//! arrival); the news history forgets Message-IDs `history_days` after their articles
//! are gone, so peers cannot feed an expired article back meanwhile.

use std::sync::Arc;
use std::time::Duration;

use agora_store::{Store, now};
use tokio_util::sync::CancellationToken;

/// One pass: returns how many articles expired.
pub async fn expire_once(store: &dyn Store, now: i64, history_days: u32) -> agora_store::Result<usize> {
    let mut expired = 0;
    for folder in store.public_folders().await? {
        if folder.expire_days == 0 && folder.expire_count == 0 {
            continue;
        }
        let list = store.message_list(folder.mailbox).await?;
        let cutoff = (folder.expire_days > 0).then(|| now - i64::from(folder.expire_days) * 86_400);
        let arrived = |m: &agora_store::MessageRef| if m.saved > 0 { m.saved } else { m.internal_date };
        let mut doomed: Vec<u32> =
            list.iter().filter(|m| cutoff.is_some_and(|c| arrived(m) < c)).map(|m| m.uid).collect();
        if folder.expire_count > 0 {
            let by_age: std::collections::HashSet<u32> = doomed.iter().copied().collect();
            let mut kept: Vec<&agora_store::MessageRef> = list.iter().filter(|m| !by_age.contains(&m.uid)).collect();
            let keep = folder.expire_count as usize;
            if kept.len() > keep {
                // The newest stay: by arrival, then by number.
                kept.sort_by_key(|m| (arrived(m), m.uid));
                let extra = kept.len() - keep;
                doomed.extend(kept[..extra].iter().map(|m| m.uid));
            }
        }
        if !doomed.is_empty() {
            doomed.sort_unstable();
            let removed = store.expunge(folder.mailbox, &doomed).await?;
            tracing::info!("nntp: expired {} articles from {}", removed.len(), folder.path);
            expired += removed.len();
        }
    }
    let forgotten = store.forget_news_history(now - i64::from(history_days) * 86_400).await?;
    if forgotten > 0 {
        tracing::debug!("nntp: history forgot {forgotten} message-ids");
    }
    Ok(expired)
}

/// Runs expiry every `interval` until shutdown.
pub async fn run(store: Arc<dyn Store>, interval: Duration, history_days: u32, shutdown: CancellationToken) {
    loop {
        if let Err(e) = expire_once(store.as_ref(), now(), history_days).await {
            tracing::error!("nntp: expiry: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
