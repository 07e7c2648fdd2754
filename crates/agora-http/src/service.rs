//! HTTP's registration: 80 (redirects to HTTPS) and 443 (TLS, HTTP/1.1 and HTTP/2),
//! and the `[http]` section.

use std::sync::Arc;

use agora_net::TlsMode;
use agora_service::{Built, Context, ListenerDecl, Section, Service, Timeouts, secs};
use serde::{Deserialize, Serialize};

use crate::{HttpService, Role, Shared};

pub static SERVICE: Service<HttpSection> = Service {
    name: "http",
    listeners: &[
        ListenerDecl {
            key: "http",
            port: 80,
            tls: TlsMode::None,
            role: "HTTP (redirects to HTTPS)",
            datagram: false,
            loopback: false,
            logins: false,
        },
        ListenerDecl {
            key: "https",
            port: 443,
            tls: TlsMode::Implicit,
            role: "HTTPS: autoconfig, MTA-STS",
            datagram: false,
            loopback: false,
            logins: false,
        },
        ListenerDecl {
            key: "admin",
            port: 9025,
            tls: TlsMode::None,
            role: "health for supervisors (loopback)",
            datagram: false,
            loopback: true,
            logins: false,
        },
    ],
    build,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Strict-Transport-Security max-age on HTTPS answers, seconds (0: none).
    pub hsts_max_age: u64,
    /// Largest request head accepted, bytes.
    pub max_header_bytes: usize,
    /// A request head must arrive within this many seconds.
    pub header_timeout_secs: u64,
    /// A kept-alive connection without a request for this long is closed.
    pub idle_timeout_secs: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            hsts_max_age: 31_536_000,
            max_header_bytes: 16 * 1024,
            header_timeout_secs: 20,
            idle_timeout_secs: 60,
        }
    }
}

impl Section for HttpSection {
    const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("hsts_max_age", "", "Strict-Transport-Security max-age on HTTPS answers, seconds (0: none)"),
        ("max_header_bytes", "", "largest request head (request line and headers) accepted"),
        ("header_timeout_secs", "", "a request head must arrive within this long (no slowloris)"),
        ("idle_timeout_secs", "", "HTTP/2 keep-alive pings after this long without traffic"),
    ];
    fn timeouts(&self) -> Timeouts {
        Timeouts { preauth: secs(self.header_timeout_secs), idle: secs(self.idle_timeout_secs) }
    }
}

fn build(ctx: &Context, s: HttpSection) -> Result<Built, String> {
    let shared = Arc::new(Shared {
        store: Arc::clone(&ctx.store),
        hostname: ctx.hostname.clone(),
        listening: ctx.listening.clone(),
        tls: ctx.tls.clone(),
        hsts: (s.hsts_max_age > 0)
            .then(|| hyper::header::HeaderValue::from_str(&format!("max-age={}", s.hsts_max_age)).ok())
            .flatten(),
        max_header_bytes: s.max_header_bytes.clamp(1024, 1 << 20),
        domains: Default::default(),
        acme_tokens: Default::default(),
        metrics_page: Default::default(),
        metrics_rendering: Default::default(),
        webmail: Arc::new(agora_webmail::Webmail {
            store: Arc::clone(&ctx.store),
            dir: ctx.dir.clone(),
            throttle: Arc::clone(&ctx.throttle),
            mail: Arc::clone(&ctx.mail),
            hostname: ctx.hostname.clone(),
            shutdown: ctx.shutdown.clone(),
            streams: Default::default(),
            max_message_size: ctx.limits.max_message_size,
            zone: ctx.zone.clone(),
            dns_check: ctx.dns_check.clone(),
            tracking_log: Some(ctx.data_dir.join("tracking.log")),
            metrics: Some(agora_service::metrics::render),
            history: Default::default(),
        }),
    });
    let mut tasks: Vec<agora_service::Task> = Vec::new();
    if let (Some(settings), Some(tls)) = (&ctx.acme, &ctx.tls) {
        let on = |key: &str| ctx.listening.iter().any(|(k, _)| k == key);
        let acme = crate::acme::Acme::new(
            settings.clone(),
            &ctx.data_dir,
            &ctx.hostname,
            Arc::clone(&ctx.store),
            Arc::clone(tls),
            Arc::clone(&shared.acme_tokens),
            (on("http"), on("https")),
        )?;
        acme.install_stored();
        let shutdown = ctx.shutdown.clone();
        tasks.push(Box::pin(Arc::new(acme).run(shutdown)));
    }
    tasks.push(Box::pin(Arc::clone(&shared.webmail).expire_sessions(ctx.shutdown.clone())));
    tasks.push(Box::pin(Arc::clone(&shared.webmail).sample_metrics(ctx.shutdown.clone())));
    let plain = Arc::new(HttpService::new(Arc::clone(&shared), Role::Plain));
    let secure = Arc::new(HttpService::new(Arc::clone(&shared), Role::Secure));
    let admin = Arc::new(HttpService::new(shared, Role::Admin));
    Ok(Built { handlers: vec![("http", plain), ("https", secure), ("admin", admin)], tasks, ..Built::default() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_is_in_the_default_file() {
        assert!(
            agora_service::undocumented::<super::HttpSection>(<super::HttpSection as agora_service::Section>::HELP)
                .is_empty()
        );
    }
}
