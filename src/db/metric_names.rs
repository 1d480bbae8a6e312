//! The database's metric names, help texts and buckets (the telemetry crate has the rest).

use stallscope_telemetry::metric_names::LAG_BUCKETS;

pub const DB_POOL_CONNECTIONS: &str = "stallscope_db_pool_connections";
pub const DB_POOL_MAX_CONNECTIONS: &str = "stallscope_db_pool_max_connections";
pub const DB_POOL_ACQUIRE_WAIT: &str = "stallscope_db_pool_acquire_wait_seconds";
pub const DB_QUERY_DURATION: &str = "stallscope_db_query_duration_seconds";

/// Pool waits and queries are healthy well under a millisecond, like executor lag, and the
/// lesson's deliberate database sleeps still land below the 10 s bucket.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (DB_POOL_ACQUIRE_WAIT, LAG_BUCKETS),
    (DB_QUERY_DURATION, LAG_BUCKETS),
];

/// Registers help text and units with the `metrics` facade (emitted as `# HELP`).
pub fn describe() {
    use metrics::{Unit, describe_gauge, describe_histogram};
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Open database connections by backend, pool (async: diesel-async, sync: diesel) and state (in_use, idle)."
    );
    describe_gauge!(
        DB_POOL_MAX_CONNECTIONS,
        "Most connections the pool may open (--db-pool-size), by backend and pool."
    );
    describe_histogram!(
        DB_POOL_ACQUIRE_WAIT,
        Unit::Seconds,
        "Time spent waiting to check a connection out of the pool (connecting included), by backend and pool."
    );
    describe_histogram!(
        DB_QUERY_DURATION,
        Unit::Seconds,
        "Time from sending a query to having its result (checkout excluded), by backend and operation."
    );
}
