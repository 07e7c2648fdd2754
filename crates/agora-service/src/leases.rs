//! Counted leases on an account: the POP3 maildrop lock (one holder) and the IMAP
//! sessions of one user (up to a limit). Held in this process today; when several
//! processes share a store, only `Leases` changes (holders just take and drop).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The leases a service hands out, by kind and account.
#[derive(Debug, Clone, Default)]
pub struct Leases(Arc<Mutex<HashMap<(&'static str, i64), usize>>>);

/// One lease; dropping it (the session ends) gives it back.
#[derive(Debug)]
pub struct Lease {
    leases: Leases,
    key: (&'static str, i64),
}

impl Leases {
    /// A lease of `kind` on `account`, unless `max` are already out.
    pub fn take(&self, kind: &'static str, account: i64, max: usize) -> Option<Lease> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry((kind, account)).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Lease { leases: self.clone(), key: (kind, account) })
    }

    /// How many leases of `kind` on `account` are out.
    pub fn held(&self, kind: &'static str, account: i64) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&(kind, account)).copied().unwrap_or(0)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut m = self.leases.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_and_given_back() {
        let l = Leases::default();
        let a = l.take("pop3", 1, 1).expect("first");
        assert!(l.take("pop3", 1, 1).is_none(), "one holder");
        assert!(l.take("pop3", 2, 1).is_some() && l.take("imap", 1, 2).is_some(), "per account and kind");
        drop(a);
        assert_eq!(l.held("pop3", 1), 0);
        assert!(l.take("pop3", 1, 1).is_some());
    }
}
