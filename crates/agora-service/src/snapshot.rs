//! A value derived from the directory (LDAP's tree, DNS's zones), kept until the
//! store's directory version moves, then rebuilt at the next use: one rebuild at a
//! time, the other users waiting for it and taking its result.

use std::future::Future;
use std::sync::{Arc, RwLock};

use agora_store::Store;

pub struct Snapshot<T> {
    current: RwLock<Option<(u64, Arc<T>)>>,
    rebuilding: tokio::sync::Mutex<()>,
    /// Moves whenever the value is replaced or forgotten: with the directory version,
    /// what a reader that keeps its own reference checks.
    generation: std::sync::atomic::AtomicU64,
}

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Snapshot { current: RwLock::new(None), rebuilding: tokio::sync::Mutex::new(()), generation: Default::default() }
    }
}

impl<T> std::fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

impl<T> Snapshot<T> {
    fn cached(&self, version: u64) -> Option<Arc<T>> {
        let c = self.current.read().ok()?;
        c.as_ref().filter(|(v, _)| *v == version).map(|(_, t)| Arc::clone(t))
    }

    /// The value if it is of `version` (no rebuild, no waiting).
    pub fn fresh(&self, version: u64) -> Option<Arc<T>> {
        self.cached(version)
    }

    /// The last value built, whatever version it is of.
    pub fn current(&self) -> Option<Arc<T>> {
        self.current.read().ok()?.as_ref().map(|(_, t)| Arc::clone(t))
    }

    /// Forgets the value: the next use rebuilds it (for what changes with time, not
    /// with the directory).
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.current.write() {
            *c = None;
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Changes whenever the value is replaced or forgotten.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The value at the store's current directory version; `build` makes it when
    /// anything changed (the version is read before it reads the store, so a change
    /// made meanwhile brings another rebuild).
    pub async fn get<E, F, Fut>(&self, store: &dyn Store, build: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(t) = self.cached(store.directory_version()) {
            return Ok(t);
        }
        let _guard = self.rebuilding.lock().await;
        let version = store.directory_version();
        if let Some(t) = self.cached(version) {
            return Ok(t);
        }
        let built = Arc::new(build().await?);
        if let Ok(mut c) = self.current.write() {
            *c = Some((version, Arc::clone(&built)));
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(built)
    }
}
