//! Per-listener counters (sessions open, accepted, refused, TLS handshakes), their
//! handles made once per listener so that a connection costs no label lookups.

use metrics::{Counter, Gauge};

pub struct ListenerMetrics {
    pub open: Gauge,
    pub accepted: Counter,
    pub refused_limit: Counter,
    pub refused_per_ip: Counter,
    tls_ok: Counter,
    tls_failed: Counter,
}

impl ListenerMetrics {
    pub fn new(listener: &str) -> ListenerMetrics {
        let l = listener.to_string();
        let open = metrics::gauge!("agora_sessions_open", "listener" => l.clone());
        open.set(0.0);
        let refused = |reason: &'static str| {
            let c = metrics::counter!("agora_connections_refused_total", "listener" => l.clone(), "reason" => reason);
            c.absolute(0);
            c
        };
        let tls = |result: &'static str| metrics::counter!("agora_tls_handshakes_total", "listener" => l.clone(), "result" => result);
        let accepted = metrics::counter!("agora_connections_total", "listener" => l.clone());
        accepted.absolute(0);
        ListenerMetrics {
            open,
            accepted,
            refused_limit: refused("limit"),
            refused_per_ip: refused("per_ip"),
            tls_ok: tls("ok"),
            tls_failed: tls("failed"),
        }
    }

    pub fn handshake(&self, ok: bool) {
        if ok { &self.tls_ok } else { &self.tls_failed }.increment(1);
    }
}

/// Counts a session as open while it lives.
pub(crate) struct OpenSession(pub(crate) Gauge);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
