//! Prometheus metrics of the whole process: one registry every part records into (the
//! commit pipeline, storage, the database, maintenance and the transports), exposed by the
//! admin listener's `/metrics`. Process-wide, like any Prometheus client's default
//! registry: two catalogs in one process (tests) add to the same series.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitLabels {
    /// append, overwrite, delete, replace, metadata.
    pub operation: String,
    /// committed, replayed, conflict, rejected, unknown.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub op: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// grpc or rest.
    pub transport: String,
    /// The gRPC method or the REST route, e.g. `POST /v1/namespaces/{ns}/tables/{table}`.
    pub method: String,
    /// The gRPC code name or the HTTP status.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// expire, orphans, compact.
    pub job: String,
    /// ok or failed.
    pub outcome: String,
}

fn latency() -> Histogram {
    // 0.5 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Every metric Firn keeps.
pub struct Metrics {
    pub commits: Family<CommitLabels, Counter>,
    pub commit_seconds: Family<CommitLabels, Histogram, fn() -> Histogram>,
    pub rebases: Counter,
    pub batch_size: Histogram,
    pub queue_depth: Gauge,
    pub write_behind_bytes: Gauge,
    pub db_seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    pub db_errors: Family<ErrorLabels, Counter>,
    pub store_seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    pub store_errors: Family<ErrorLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub maintenance_runs: Family<JobLabels, Counter>,
    registry: Registry,
}

impl Metrics {
    fn new() -> Self {
        let m = Self {
            commits: Family::default(),
            commit_seconds: Family::new_with_constructor(latency),
            rebases: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            queue_depth: Gauge::default(),
            write_behind_bytes: Gauge::default(),
            db_seconds: Family::new_with_constructor(latency),
            db_errors: Family::default(),
            store_seconds: Family::new_with_constructor(latency),
            store_errors: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency),
            maintenance_runs: Family::default(),
            registry: Registry::with_prefix("firn"),
        };
        let mut r = Registry::with_prefix("firn");
        r.register(
            "commits",
            "Commits by operation and outcome",
            m.commits.clone(),
        );
        r.register(
            "commit_duration_seconds",
            "Time from a commit's arrival to its answer",
            m.commit_seconds.clone(),
        );
        r.register(
            "commit_rebases",
            "Commits planned again on a newer table state",
            m.rebases.clone(),
        );
        r.register(
            "commit_batch_size",
            "Commits per committer batch (one database transaction)",
            m.batch_size.clone(),
        );
        r.register(
            "committer_queue_depth",
            "Commits waiting for the committer",
            m.queue_depth.clone(),
        );
        r.register(
            "write_behind_bytes",
            "Committed metadata not yet in the object store",
            m.write_behind_bytes.clone(),
        );
        r.register(
            "db_transaction_duration_seconds",
            "Catalog database transactions by what they do",
            m.db_seconds.clone(),
        );
        r.register(
            "db_errors",
            "Catalog database errors by kind",
            m.db_errors.clone(),
        );
        r.register(
            "object_store_request_duration_seconds",
            "Object store requests by operation",
            m.store_seconds.clone(),
        );
        r.register(
            "object_store_errors",
            "Object store errors by operation and kind",
            m.store_errors.clone(),
        );
        r.register(
            "requests",
            "gRPC and REST requests by method and code",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "gRPC and REST request latency by method and code",
            m.request_seconds.clone(),
        );
        r.register(
            "maintenance_runs",
            "Maintenance runs by job and outcome",
            m.maintenance_runs.clone(),
        );
        Self { registry: r, ..m }
    }

    /// The text exposition format of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// Records one commit's answer.
    pub fn commit(&self, operation: &str, outcome: &str, took: Duration) {
        let labels = CommitLabels {
            operation: operation.to_string(),
            outcome: outcome.to_string(),
        };
        self.commits.get_or_create(&labels).inc();
        self.commit_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Records one request a transport answered.
    pub fn request(&self, transport: &str, method: &str, code: &str, took: Duration) {
        let labels = RequestLabels {
            transport: transport.to_string(),
            method: method.to_string(),
            code: code.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Records one object-store request.
    pub fn store<T, E: std::fmt::Display>(
        &self,
        op: &str,
        took: Duration,
        result: &std::result::Result<T, E>,
    ) {
        self.store_seconds
            .get_or_create(&OpLabels { op: op.to_string() })
            .observe(took.as_secs_f64());
        if let Err(e) = result {
            let kind = store_error_kind(&e.to_string());
            self.store_errors
                .get_or_create(&ErrorLabels {
                    op: op.to_string(),
                    kind: kind.to_string(),
                })
                .inc();
        }
    }

    /// Records one database transaction.
    pub fn db(&self, op: &str, took: Duration) {
        self.db_seconds
            .get_or_create(&OpLabels { op: op.to_string() })
            .observe(took.as_secs_f64());
    }

    /// Records one maintenance run.
    pub fn maintenance(&self, job: &str, ok: bool) {
        self.maintenance_runs
            .get_or_create(&JobLabels {
                job: job.to_string(),
                outcome: if ok { "ok" } else { "failed" }.to_string(),
            })
            .inc();
    }
}

/// A coarse kind of an object-store error, from its message (object_store's errors are
/// opaque across backends).
fn store_error_kind(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("not found") || m.contains("404") {
        "not_found"
    } else if m.contains("precondition") || m.contains("already exists") {
        "precondition"
    } else if m.contains("timed out") || m.contains("timeout") {
        "timeout"
    } else if m.contains("permission") || m.contains("403") || m.contains("access denied") {
        "denied"
    } else {
        "other"
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_series_appear_in_the_exposition() {
        let m = Metrics::new();
        m.commit("append", "committed", Duration::from_millis(3));
        m.commit("append", "committed", Duration::from_millis(5));
        m.request(
            "grpc",
            "/firn.catalog.v1.CatalogService/Commit",
            "OK",
            Duration::ZERO,
        );
        m.store(
            "put",
            Duration::ZERO,
            &Err::<(), _>("Object at location x not found"),
        );
        let text = m.encode();
        assert!(
            text.contains(r#"firn_commits_total{operation="append",outcome="committed"} 2"#),
            "{text}"
        );
        assert!(text.contains(
            r#"firn_requests_total{transport="grpc",method="/firn.catalog.v1.CatalogService/Commit",code="OK"} 1"#
        ));
        assert!(text.contains(r#"firn_object_store_errors_total{op="put",kind="not_found"} 1"#));
        assert!(text.contains("firn_commit_duration_seconds_count"));
    }
}
