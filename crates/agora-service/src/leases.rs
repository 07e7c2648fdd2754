//! Counted leases on an account: the POP3 maildrop lock (one holder) and the IMAP
//! sessions of one user (up to a limit). Counted in this process; when other nodes
//! share the store (PostgreSQL), each lease is also taken in the store, so the limit
//! holds across them, and lapses there if this process stops renewing it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agora_store::Store;

/// The leases a service hands out, by kind and account.
#[derive(Clone, Default)]
pub struct Leases {
    local: Arc<Mutex<HashMap<(&'static str, i64), usize>>>,
    /// The shared store, when other nodes use it too.
    shared: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").field("shared", &self.shared.is_some()).finish()
    }
}

/// One lease; dropping it (the session ends) gives it back.
#[derive(Debug)]
pub struct Lease {
    leases: Leases,
    key: (&'static str, i64),
    /// Its row in the shared store.
    remote: Option<i64>,
}

impl Leases {
    /// Leases for the services of a store: held in the store too when it is shared.
    pub fn for_store(store: &Arc<dyn Store>) -> Leases {
        Leases { local: Arc::default(), shared: store.is_shared().then(|| Arc::clone(store)) }
    }

    /// A lease of `kind` on `account`, unless `max` are already out (here, or on any
    /// node sharing the store). A store that cannot be asked refuses.
    pub async fn take(&self, kind: &'static str, account: i64, max: usize) -> Option<Lease> {
        {
            let mut m = self.local.lock().unwrap_or_else(|e| e.into_inner());
            let n = m.entry((kind, account)).or_insert(0);
            if *n >= max {
                return None;
            }
            *n += 1;
        }
        let mut lease = Lease { leases: self.clone(), key: (kind, account), remote: None };
        if let Some(store) = &self.shared {
            match store.take_lease(kind, account, max).await {
                Ok(Some(id)) => lease.remote = Some(id),
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!("{kind} lease for account {account}: {e}");
                    return None;
                }
            }
        }
        Some(lease)
    }

    /// How many leases of `kind` on `account` this process holds.
    pub fn held(&self, kind: &'static str, account: i64) -> usize {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).get(&(kind, account)).copied().unwrap_or(0)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut m = self.leases.local.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.key);
                }
            }
        }
        // The store's row goes too; if it cannot, it lapses with the next missed renewal.
        if let (Some(id), Some(store)) = (self.remote, self.leases.shared.clone())
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                if let Err(e) = store.drop_lease(id).await {
                    tracing::warn!("dropping lease {id}: {e}");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counted_and_given_back() {
        let l = Leases::default();
        let a = l.take("pop3", 1, 1).await.expect("first");
        assert!(l.take("pop3", 1, 1).await.is_none(), "one holder");
        assert!(l.take("pop3", 2, 1).await.is_some() && l.take("imap", 1, 2).await.is_some(), "per account and kind");
        drop(a);
        assert_eq!(l.held("pop3", 1), 0);
        assert!(l.take("pop3", 1, 1).await.is_some());
    }
}
