//! The wall clock, in the forms the records on the stage carry.

/// Now as RFC 3339 in UTC to the second (`2026-12-02T06:35:00Z`), and compact for run ids (`20261202T063500Z`).
pub fn now_rfc3339() -> (String, String) {
    let now = chrono::Utc::now();
    (
        now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        now.format("%Y%m%dT%H%M%SZ").to_string(),
    )
}

/// Now as seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Seconds since the Unix epoch of an RFC 3339 time (`2026-12-02T06:35:00.123Z`, `…+00:00`).
pub fn parse_rfc3339(t: &str) -> Option<f64> {
    let d = chrono::DateTime::parse_from_rfc3339(t).ok()?;
    Some(d.timestamp_millis() as f64 / 1000.0)
}

/// Seconds since the Unix epoch as RFC 3339 in UTC to the second (`1970-01-01T00:00:00Z` when out of range).
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A new run id: the time, compact, and 8 random hex digits.
pub fn new_run_id() -> String {
    let (_, compact) = now_rfc3339();
    format!("{compact}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
