//! How many parts each table gets: from its size, the time budget of a part and Redshift's slices, capped per table,
//! then scaled down together when the run would exceed its cap.

use super::select::Relation;
use crate::contract::plan::{PlanRequest, PlanSettings};

/// The number of parts for a table of `bytes`: by size, raised so a part finishes inside the time budget at the
/// expected throughput, raised again to spread a large table over the extractors that run at once (the run lasts as
/// long as its largest table, and Lambda bills the same GB-s for the same bytes in more, shorter parts); with more
/// parts than extractors at once, rounded up to whole waves of them (5 parts on 4 extractors would run a second wave
/// of one part, as long as the first: 8 smaller parts run two full waves, each shorter); rounded up to a multiple of
/// the slices when there are more parts than slices; capped.
pub(crate) fn part_count(bytes: u64, s: &PlanSettings) -> (u32, Option<String>) {
    if bytes == 0 {
        return (1, None);
    }
    if let Some(p) = s.parts {
        return fixed_parts(p, s);
    }
    let by_size = bytes.div_ceil(s.target_part_bytes.max(1));
    let by_time = bytes.div_ceil((s.throughput_bytes_per_sec.max(1)).saturating_mul(s.part_seconds_budget.max(1)));
    let by_spread = (bytes / s.min_part_bytes.max(1)).min(s.max_concurrency.max(1) as u64);
    let mut p = by_size.max(by_time).max(by_spread).max(1);
    let wave = s.max_concurrency.max(1) as u64;
    if p > wave {
        p = p.div_ceil(wave) * wave;
    }
    let slices = s.slices.max(1) as u64;
    if p > slices && slices > 1 {
        p = p.div_ceil(slices) * slices;
    }
    let max = s.max_parts_per_table.max(1) as u64;
    if p > max {
        let capped = if max > slices && slices > 1 {
            max / slices * slices
        } else {
            max
        };
        let note = format!(
            "{p} parts wanted (size {by_size}, time budget {by_time}) but clamped to max_parts_per_table = {capped}"
        );
        return (capped as u32, Some(note));
    }
    (p as u32, None)
}

/// A fixed part count (`parts`, or a table's override) within 1 ..= max_parts_per_table, saying so when it was not.
fn fixed_parts(p: u32, s: &PlanSettings) -> (u32, Option<String>) {
    let max = s.max_parts_per_table.max(1);
    let n = p.clamp(1, max);
    let note = (n != p).then(|| format!("{p} parts asked for, clamped to {n} (max_parts_per_table = {max})"));
    (n, note)
}

/// The parts of every selected table (an override's fixed count, else [`part_count`]) with each table's clamp note,
/// and the note of the run-level cap when it applied.
pub(super) fn wanted_parts(selected: &[&Relation], req: &PlanRequest) -> (Vec<(u32, Option<String>)>, Option<String>) {
    let settings = &req.settings;
    let mut wanted: Vec<(u32, Option<String>)> = selected
        .iter()
        .map(
            |r| match req.overrides.get(&r.table.to_string()).and_then(|o| o.parts) {
                Some(p) => fixed_parts(p, settings),
                None => part_count(r.bytes, settings),
            },
        )
        .collect();
    let total: u64 = wanted.iter().map(|w| w.0 as u64).sum();
    if total <= settings.max_parts_per_run as u64 {
        return (wanted, None);
    }
    let scale = settings.max_parts_per_run as f64 / total as f64;
    for w in &mut wanted {
        w.0 = ((w.0 as f64 * scale).floor() as u32).max(1);
    }
    let note = format!(
        "{total} parts wanted in all, clamped to max_parts_per_run = {} by scaling every table down",
        settings.max_parts_per_run
    );
    (wanted, Some(note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_part_count_past_the_cap_says_it_was_clamped() {
        let s = PlanSettings {
            parts: Some(500),
            max_parts_per_table: 64,
            ..PlanSettings::default()
        };
        let (n, note) = part_count(1 << 30, &s);
        assert_eq!(n, 64);
        assert!(note.is_some_and(|n| n.contains("500 parts asked for, clamped to 64")));
        let (n, note) = part_count(1 << 30, &PlanSettings { parts: Some(0), ..s });
        assert_eq!((n, note.is_some()), (1, true));
    }

    #[test]
    fn part_count_follows_size_time_and_slices() {
        let s = PlanSettings {
            target_part_bytes: 100,
            throughput_bytes_per_sec: 1,
            part_seconds_budget: 1000,
            ..Default::default()
        };
        assert_eq!(part_count(0, &s).0, 1, "an empty table is one part");
        assert_eq!(part_count(50, &s).0, 1, "a tiny table is one part");
        assert_eq!(part_count(1000, &s).0, 10);
        let slow = PlanSettings {
            throughput_bytes_per_sec: 1,
            part_seconds_budget: 50,
            ..s.clone()
        };
        assert_eq!(
            part_count(1000, &slow).0,
            32,
            "raised to finish inside the time budget (20), then to two full waves of 16 extractors"
        );
        let waves = PlanSettings {
            max_concurrency: 4,
            ..s.clone()
        };
        assert_eq!(part_count(500, &waves).0, 8, "5 parts on 4 extractors: two full waves");
        assert_eq!(part_count(400, &waves).0, 4, "one full wave stays");
        assert_eq!(part_count(300, &waves).0, 3, "fewer parts than extractors stay");
        let sliced = PlanSettings { slices: 4, ..s.clone() };
        assert_eq!(
            part_count(1000, &sliced).0,
            12,
            "rounded up to a multiple of the slices"
        );
        assert_eq!(
            part_count(300, &sliced).0,
            3,
            "fewer parts than slices stay as they are"
        );
        let capped = PlanSettings {
            slices: 4,
            max_parts_per_table: 10,
            ..s
        };
        let (p, note) = part_count(5000, &capped);
        assert_eq!(p, 8);
        assert!(note.is_some_and(|n| n.contains("clamped")));
        let spread = PlanSettings {
            target_part_bytes: 1000,
            min_part_bytes: 100,
            max_concurrency: 4,
            throughput_bytes_per_sec: 1000,
            ..Default::default()
        };
        assert_eq!(part_count(150, &spread).0, 1, "under twice the minimum part: whole");
        assert_eq!(
            part_count(250, &spread).0,
            2,
            "spread over parts of at least the minimum"
        );
        assert_eq!(
            part_count(900, &spread).0,
            4,
            "at most as many parts as extractors at once"
        );
        let fixed = PlanSettings {
            parts: Some(6),
            ..Default::default()
        };
        assert_eq!(part_count(10, &fixed), (6, None));
    }
}
