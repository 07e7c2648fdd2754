//! `agora node`: the nodes that share one store, as they register themselves.

use agora_store::{ClusterStore, HEARTBEAT_TTL, NodeInfo, now};
use anyhow::Result;

use crate::{Cli, NodeCmd};

/// Whether a node's last heartbeat is recent enough to call it alive.
pub fn alive(n: &NodeInfo, at: i64) -> bool {
    at - n.heartbeat <= HEARTBEAT_TTL
}

pub async fn node(cli: &Cli, cmd: &NodeCmd) -> Result<()> {
    let (store, _) = crate::admin::open_store(cli).await?;
    match cmd {
        NodeCmd::List { json } => {
            let nodes = store.nodes().await?;
            let t = now();
            if *json {
                for n in &nodes {
                    println!(
                        "{}",
                        serde_json::json!({
                            "name": n.name, "address": n.address, "role": n.role, "version": n.version,
                            "started": n.started, "heartbeat": n.heartbeat, "alive": alive(n, t),
                        })
                    );
                }
            } else if nodes.is_empty() {
                println!("no node has registered with this store yet (each does when `agora serve` starts)");
            } else {
                println!("{:<16} {:<24} {:<10} {:<10} {:<12} state", "node", "address", "role", "version", "last seen");
                for n in &nodes {
                    let state = if alive(n, t) { "alive" } else { "down" };
                    let ago = format!("{}s ago", (t - n.heartbeat).max(0));
                    println!("{:<16} {:<24} {:<10} {:<10} {:<12} {state}", n.name, n.address, n.role, n.version, ago);
                }
            }
        }
        NodeCmd::Remove { name } => {
            store.remove_node(name).await?;
            println!("node {name} removed");
        }
    }
    store.close();
    Ok(())
}
