//! `agora x400`: the X.400 MTA's links, checked from the command line.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::Cli;

#[derive(Debug, Subcommand)]
pub enum X400Cmd {
    /// Bind to a partner MTA as the server would, and report each layer's outcome
    /// (TCP, transport, session, presentation, ACSE, RTSE, the P1 bind, release).
    Test {
        /// The partner's name under [x400.partners].
        partner: String,
    },
    /// List the configured partners: MTA name, address, mode, selectors and domains.
    Partners,
}

pub async fn x400(cli: &Cli, cmd: &X400Cmd) -> Result<()> {
    let path = crate::serve::config_path(cli);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let section: agora_x400::service::X400Section =
        agora_service::section(&text, "x400").map_err(|e| anyhow::anyhow!("{}: [x400] {e}", path.display()))?;
    let cfg = crate::config::load_or_default(&path)?.config;
    let hostname = cfg.server.hostname.clone().unwrap_or_else(crate::serve::system_hostname);
    let (store, dir) = crate::admin::open_store(cli).await?;
    let dyn_store: Arc<dyn agora_store::Store> = Arc::new(store);
    let mail = Arc::new(agora_mail::Mail::new(
        agora_mail::MailConfig { hostname: hostname.clone(), ..agora_mail::MailConfig::default() },
        dyn_store,
        dir,
    ));
    let throttle = Arc::new(agora_directory::throttle::Throttle::new());
    let mta = agora_x400::service::mta(&section, &cli.data, &hostname, mail, throttle).map_err(anyhow::Error::msg)?;
    match cmd {
        X400Cmd::Partners => {
            if mta.partners.is_empty() {
                println!("no partners: add them under [x400.partners.NAME]");
            }
            for p in &mta.partners {
                let domains: Vec<String> = p.domains.iter().map(|(d, or)| format!("{d} = {}", or.text())).collect();
                println!(
                    "{}  MTA {}  {}:{}  {} mode  domains: {}",
                    p.key,
                    p.mta_name,
                    p.host,
                    p.port,
                    p.mode.name(),
                    if domains.is_empty() { "-".to_string() } else { domains.join(", ") }
                );
            }
            Ok(())
        }
        X400Cmd::Test { partner } => {
            let p = mta
                .partners
                .iter()
                .find(|p| p.key == *partner || p.mta_name.eq_ignore_ascii_case(partner))
                .with_context(|| format!("no partner {partner} under [x400.partners]"))?;
            println!("binding to {} ({}:{}) as {} in {} mode", p.mta_name, p.host, p.port, mta.name, p.mode.name());
            let steps = mta.test(p).await;
            let mut failed = None;
            for (layer, outcome) in &steps {
                match outcome {
                    Ok(what) => println!("  ok      {layer}: {what}"),
                    Err(why) => {
                        println!("  FAILED  {layer}: {why}");
                        failed = Some(layer.clone());
                    }
                }
            }
            if let Some(layer) = failed {
                bail!("the link to {} fails at {layer}", p.mta_name);
            }
            println!("the link to {} works", p.mta_name);
            Ok(())
        }
    }
}
