//! The organisation's table as this server keeps it in the store: read it, merge a
//! table heard from another server into it, record a state seen here. Every change is
//! written over what was read (the store refuses a write over a newer table, and the
//! change is made again on top).

use std::sync::Arc;

use agora_mail::routing::Table;
use agora_store::Store;

/// This server in the organisation: its name in the table and the shared secret.
#[derive(Clone)]
pub struct Identity {
    pub node: String,
    pub secret: Arc<Vec<u8>>,
}

/// The table now (empty when none was made), with the text it was read from.
pub async fn load(store: &Arc<dyn Store>) -> Result<(Option<String>, Table), String> {
    let text = store.routing_table().await.map_err(|e| e.to_string())?;
    let table = match &text {
        Some(t) => Table::decode(t).map_err(|e| e.to_string())?,
        None => Table::default(),
    };
    Ok((text, table))
}

/// Merges `other` into the stored table; the table after, and whether it changed.
pub async fn merge(store: &Arc<dyn Store>, other: &Table) -> Result<(Table, bool), String> {
    loop {
        let (before, mut t) = load(store).await?;
        if !t.merge(other) {
            return Ok((t, false));
        }
        if store.replace_routing_table(before, t.encode()).await.map_err(|e| e.to_string())? {
            return Ok((t, true));
        }
    }
}

/// Records a connector's state as seen here; true if the table changed.
pub async fn set_state(store: &Arc<dyn Store>, connector: &str, up: bool, node: &str) -> Result<bool, String> {
    loop {
        let (before, mut t) = load(store).await?;
        if !t.set_state(connector, up, node) {
            return Ok(false);
        }
        if store.replace_routing_table(before, t.encode()).await.map_err(|e| e.to_string())? {
            return Ok(true);
        }
    }
}
