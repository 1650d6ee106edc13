//! Where everything of a run lives on the stage: the one owner of every object key. A run's objects are under
//! `<run>/`; a table's parts, results and manifest under `<run>/<schema>/<table>/`. Names are deterministic, so a
//! retried step overwrites its own objects instead of adding new ones.

use crate::contract::model::{ExtractTask, TableRef};

/// Makes a name safe as one object-key segment: `[A-Za-z0-9_.-]` kept, every other byte `%XX`-encoded. Injective, so
/// distinct tables never share a prefix.
pub fn key_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-') || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `<run>/`: the prefix of everything a run leaves on the stage (what `--restart` deletes).
pub fn run_prefix(run_id: &str) -> String {
    format!("{}/", key_segment(run_id))
}

/// `.state/<schema>/<table>/sync.json`: the sync state of a target loaded incrementally, outside every run's prefix
/// (no run id's key segment starts with a dot, [`key_segment`]), rewritten by every run that commits the table.
pub fn state_key(t: &TableRef) -> String {
    format!(".state/{}/{}/sync.json", key_segment(&t.schema), key_segment(&t.name))
}

/// `<run>/plan.json`: the whole plan.
pub fn plan_key(run_id: &str) -> String {
    format!("{}/plan.json", key_segment(run_id))
}

/// `<run>/tasks.json`: the task list the Distributed Map reads.
pub fn tasks_key(run_id: &str) -> String {
    format!("{}/tasks.json", key_segment(run_id))
}

/// `<run>/map-results`: where the Map's ResultWriter puts the extractors' results.
pub fn map_results_prefix(run_id: &str) -> String {
    format!("{}/map-results", key_segment(run_id))
}

/// `<run>/load.json`: the load's result, table by table.
pub fn load_key(run_id: &str) -> String {
    format!("{}/load.json", key_segment(run_id))
}

/// `<run>/load.json` of the run directory a plan URL names ([`split_plan_url`]).
pub fn load_key_at(run_dir: &str) -> String {
    format!("{run_dir}/load.json")
}

/// `<run>/load-queue.json`: the facts of the tables a load's checks still set up, written by its start.
pub fn load_queue_key(run_id: &str) -> String {
    format!("{}/load-queue.json", key_segment(run_id))
}

/// `<run>/status.json`: a failed run's outcome, written by Cleanup.
pub fn status_key(run_id: &str) -> String {
    format!("{}/status.json", key_segment(run_id))
}

/// `<run>/<schema>/<table>`: where a table's parts and manifest live on the stage.
pub fn table_dir(run_id: &str, t: &TableRef) -> String {
    format!(
        "{}/{}/{}",
        key_segment(run_id),
        key_segment(&t.schema),
        key_segment(&t.name)
    )
}

/// `<run>/<schema>/<table>/manifest.json`: the Redshift COPY manifest of a table.
pub fn manifest_key(run_id: &str, t: &TableRef) -> String {
    format!("{}/manifest.json", table_dir(run_id, t))
}

/// The object key prefix of a task's files: `<run>/<schema>/<table>/part-<range>`; files append `-<n>.parquet`.
/// Deterministic, so a retried task overwrites its own files instead of adding new ones.
pub fn file_key_prefix(task: &ExtractTask) -> String {
    format!(
        "{}/{}/{}/part-{:05}",
        key_segment(&task.run_id),
        key_segment(&task.table.schema),
        key_segment(&task.table.name),
        task.range_index
    )
}

/// Whether `key` is one of the files a task writes (`<run>/<schema>/<table>/part-<range>-<n>.parquet`, as
/// [`file_key_prefix`] and the Parquet writer name them): a result naming any other object (another run's, another
/// table's or range's) is not the task's.
pub fn is_part_file_key(task: &ExtractTask, key: &str) -> bool {
    let prefix = format!("{}-", file_key_prefix(task));
    key.strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(".parquet"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Where a task's `ExtractResult` lands on the stage: `<run>/<schema>/<table>/part-<range>.result.json`.
pub fn result_key(task: &ExtractTask) -> String {
    format!("{}.result.json", file_key_prefix(task))
}

/// Where a failed attempt of a task is recorded: `<run>/<schema>/<table>/part-<range>.attempt-<n>.failed.json`.
pub fn attempt_key(task: &ExtractTask, attempt: u32) -> String {
    format!("{}.attempt-{attempt}.failed.json", file_key_prefix(task))
}

/// Where a range kept from an earlier attempt is recorded: `<run>/<schema>/<table>/part-<range>.kept.json` (listed with
/// the failed attempts: the run's record tells a kept range from one read again without rewriting its result).
pub fn kept_key(task: &ExtractTask) -> String {
    format!("{}.kept.json", file_key_prefix(task))
}

/// `<run>/restore.json`: the snapshot a run restored, and the restored instance's life.
pub fn lock_key(run_id: &str) -> String {
    format!("{}/lock.json", key_segment(run_id))
}

/// The run's restore record: `<run>/restore.json`.
pub fn restore_key(run_id: &str) -> String {
    format!("{}/restore.json", key_segment(run_id))
}

/// `<run>/ledger.json`: the run's record in the ledger (what it did and the facts of its cost).
pub fn ledger_key(run_id: &str) -> String {
    format!("{}/ledger.json", key_segment(run_id))
}

/// `<run>/events.jsonl`: the events the run emitted when it ended (`docs/events.md`), one JSON line each.
pub fn events_key(run_id: &str) -> String {
    format!("{}/events.jsonl", key_segment(run_id))
}

/// `<run>/report.html`: the run's HTML report.
pub fn report_key(run_id: &str) -> String {
    format!("{}/report.html", key_segment(run_id))
}

/// `<stage>/<run>/plan.json` → (stage URL, run directory).
pub fn split_plan_url(plan_url: &str) -> Option<(&str, &str)> {
    plan_url.strip_suffix("/plan.json").and_then(|d| d.rsplit_once('/'))
}

/// An object of a stage as (bucket, key): `s3://bucket/prefix` + `k` is (`bucket`, `prefix/k`); a `file://` stage is
/// its own "bucket" (what the local state machine's item reader and result writer open).
pub fn object_location(stage_url: &str, key: &str) -> (String, String) {
    let url = stage_url.trim_end_matches('/');
    match url.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let key = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}/{key}")
            };
            (bucket.to_string(), key)
        }
        None => (url.to_string(), key.to_string()),
    }
}

/// The stage URL that holds a (bucket, key) of [`object_location`]: `s3://bucket`, or the `file://` stage itself.
pub fn bucket_url(bucket: &str) -> String {
    if bucket.contains("://") {
        bucket.to_string()
    } else {
        format!("s3://{bucket}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_segments_are_safe_and_distinct() {
        assert_eq!(key_segment("public"), "public");
        assert_eq!(key_segment("a/b"), "a%2Fb");
        assert_eq!(key_segment(".."), "%2E.");
        assert_ne!(key_segment("a.b"), key_segment("a%2Eb"));
        assert_eq!(key_segment("ü"), "%C3%BC");
    }
}
