//! `agora replication status`: the change log this server keeps for replicas, the
//! consumers it has served with how far behind each is, and a replica's own state.

use agora_ldap::sync::Csn;
use agora_store::DirectoryStore;
use anyhow::Result;

use crate::Cli;

fn when(secs: i64) -> String {
    if secs <= 0 { "never".into() } else { agora_store::time::rfc3339(secs) }
}

pub async fn status(cli: &Cli) -> Result<()> {
    let (store, _) = crate::admin::open_store(cli).await?;
    let out = status_of(&store).await;
    store.close();
    out
}

async fn status_of(store: &std::sync::Arc<agora_store::sql::SqlStore>) -> Result<()> {
    let log = store.sync_log().await?;
    let csns: Vec<(Csn, bool)> = log.iter().filter_map(|r| Some((Csn::parse(&r.csn)?, r.deleted))).collect();
    let newest = csns.iter().map(|(c, _)| *c).max();
    let deletes = csns.iter().filter(|(_, d)| *d).count();
    let horizon = store.sync_values("horizon").await?.into_iter().next().and_then(|(_, v)| Csn::parse(&v));
    println!("change log:   {} entries, {deletes} deletes remembered", csns.len() - deletes);
    match newest {
        Some(c) => println!("newest:       {} ({})", c.text(), when(c.secs())),
        None => println!("newest:       none yet (the server records changes while it runs)"),
    }
    if let Some(h) = horizon {
        println!("horizon:      {} (older cookies get a full refresh)", h.text());
    }
    let consumers = store.sync_values("consumer.").await?;
    if consumers.is_empty() {
        println!("consumers:    none seen");
    }
    for (key, value) in consumers {
        let who = key.trim_start_matches("consumer.");
        let f: Vec<&str> = value.split('\t').collect();
        let [peer, mode, csn, seen, state, refresh] = f[..] else { continue };
        let csn = Csn::parse(csn);
        let behind: Vec<Csn> = csns.iter().map(|(c, _)| *c).filter(|c| csn.is_none_or(|k| *c > k)).collect();
        let lag_secs = match (behind.iter().min(), newest, csn) {
            (None, _, _) => 0,
            (Some(_), Some(n), Some(k)) => (n.secs() - k.secs()).max(0),
            (Some(first), Some(n), None) => (n.secs() - first.secs()).max(0),
            _ => 0,
        };
        println!(
            "consumer:     {who} from {peer}, {mode}, {state}, last seen {}; cookie {}; behind by {} changes, {lag_secs} s; last refresh: {refresh}",
            when(seen.parse().unwrap_or(0)),
            csn.map_or("none".into(), |c| c.text()),
            behind.len()
        );
    }
    let mut replica = store.sync_values("replica.").await?;
    // The provider first, then each naming context copied from it.
    replica.sort_by_key(|(k, _)| k != "replica.provider");
    for (key, value) in replica {
        if key == "replica.provider" {
            println!("replica of:   {value}");
            continue;
        }
        if let Some(domain) = key.strip_prefix("replica.domain.") {
            println!("read-only:    {domain} (copied from {value}: make changes there)");
            continue;
        }
        let base = key.trim_start_matches("replica.");
        let f: Vec<&str> = value.split('\t').collect();
        let [_, state, cookie, seen, detail] = f[..] else { continue };
        let cookie = cookie.split(',').find_map(|p| p.strip_prefix("csn=")).unwrap_or(cookie);
        let lag = cookie
            .split(';')
            .filter_map(Csn::parse)
            .max()
            .map(|c| format!(", newest change held from {}", when(c.secs())))
            .unwrap_or_default();
        println!(
            "copying:      {base}: {state} since {}{}; cookie {}{lag}",
            when(seen.parse().unwrap_or(0)),
            if detail.is_empty() { String::new() } else { format!(" ({detail})") },
            if cookie.is_empty() { "none" } else { cookie },
        );
    }
    Ok(())
}
