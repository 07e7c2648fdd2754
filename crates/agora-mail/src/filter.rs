//! Sieve at delivery: each local recipient's active script decides where its copy goes
//! (folders, flags, redirects, rejections, vacation replies, header edits).

use agora_store::AccountId;

use crate::Mail;

impl Mail {
    /// Whoever changes an account's Sieve scripts calls this (ManageSieve, the webmail).
    pub fn sieve_changed(&self, account: AccountId) {
        let _ = account;
        *self.sieve.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The accounts that have an active script, each compiled.
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    pub(crate) active: std::collections::HashMap<AccountId, std::sync::Arc<agora_sieve::Script>>,
}
