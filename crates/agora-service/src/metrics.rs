//! The process's metrics: every crate counts through the `metrics` facade; this module
//! installs the one recorder behind it and renders the Prometheus text format for the
//! administration listener's `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Seconds: a commit is usually a millisecond or two on a disk that syncs honestly.
const COMMIT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Installs the recorder (once per process; later calls keep the first) and describes
/// the metrics so that each has its HELP line. False when another recorder was there.
pub fn install() -> bool {
    if HANDLE.get().is_some() {
        return true;
    }
    let Ok(builder) = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("agora_store_commit_duration_seconds".into()), COMMIT_BUCKETS)
    else {
        return false;
    };
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        return false;
    }
    let _ = HANDLE.set(handle);
    describe();
    true
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("agora_sessions_open", "Connections being served, per listener.");
    describe_gauge!(
        "agora_listener_stress",
        "1 while a listener is in stress mode (its places before login nearly full), else 0."
    );
    describe_counter!("agora_connections_total", "Connections accepted, per listener.");
    describe_counter!(
        "agora_connections_refused_total",
        "Connections turned away at admission, per listener and reason."
    );
    describe_counter!("agora_tls_handshakes_total", "TLS handshakes (implicit and STARTTLS), per listener and result.");
    describe_counter!("agora_commands_total", "Commands received, per protocol.");
    describe_counter!("agora_command_errors_total", "Commands answered with an error, per protocol.");
    describe_counter!("agora_logins_total", "Successful logins, per protocol.");
    describe_counter!("agora_login_failures_total", "Failed logins, per protocol.");
    describe_counter!("agora_messages_received_total", "Messages accepted (SMTP, submission, local injection).");
    describe_counter!(
        "agora_messages_delivered_total",
        "Recipient copies delivered: into a mailbox here or to a remote server."
    );
    describe_counter!("agora_messages_queued_total", "Recipient copies queued for remote delivery.");
    describe_counter!("agora_messages_deferred_total", "Remote delivery attempts that failed temporarily.");
    describe_counter!(
        "agora_messages_bounced_total",
        "Recipient copies given up on, with a failure report to the sender."
    );
    describe_gauge!("agora_queue_messages", "Recipient copies in the outbound queue.");
    describe_gauge!("agora_queue_oldest_age_seconds", Unit::Seconds, "Age of the oldest entry of the outbound queue.");
    describe_histogram!(
        "agora_store_commit_duration_seconds",
        Unit::Seconds,
        "Store write transactions, from BEGIN to a durable COMMIT."
    );
    describe_counter!("agora_store_transactions_total", "Store writes committed (several may share one commit).");
    describe_counter!("agora_store_fsyncs_total", "fsync calls made by the store (log commits and message files).");
    describe_gauge!(
        "agora_tls_certificate_expiry_timestamp_seconds",
        Unit::Seconds,
        "When a served certificate expires (Unix time), per name."
    );
    describe_counter!("agora_acme_orders_total", "ACME certificate orders, per result (issued, failed).");
    describe_gauge!("agora_build_info", "Always 1; the version is a label.");
    describe_gauge!("agora_start_time_seconds", Unit::Seconds, "When the server started (Unix time).");
    metrics::gauge!("agora_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    metrics::gauge!("agora_start_time_seconds").set(now.floor());
    for name in [
        "agora_messages_received_total",
        "agora_messages_queued_total",
        "agora_messages_deferred_total",
        "agora_messages_bounced_total",
        "agora_store_transactions_total",
        "agora_store_fsyncs_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for destination in ["local", "remote"] {
        metrics::counter!("agora_messages_delivered_total", "destination" => destination).absolute(0);
    }
}

/// The current values in the Prometheus text format (version 0.0.4); none before
/// `install`.
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}
