//! How a table is split, decided from its statistics alone: one part, key ranges (page probes or quantiles of a page
//! sample, and how large a sample), or ctid page ranges, each with the reason in words. No I/O: the planner reads the
//! statistics and the boundary keys; this module decides.

use crate::contract::model::{Bounds, KeyType, KeyValue};

/// What the planner knows of a table when it chooses.
#[derive(Debug, Clone)]
pub(super) struct Shape {
    /// Parts wanted (from the size, the budgets and the caps).
    pub(super) parts: u32,
    pub(super) bytes: u64,
    pub(super) rows: f64,
    /// Heap pages (exact for tables; 0 for partitioned parents, whose size is their leaves').
    pub(super) pages: u64,
    /// `relkind`: r table, p partitioned, m materialized view, v view, f foreign table.
    pub(super) kind: char,
    pub(super) key_types: Vec<KeyType>,
    pub(super) server_version_num: i32,
    pub(super) target_part_bytes: u64,
    /// A fixed part count was asked for.
    pub(super) fixed_parts: bool,
    pub(super) static_source: bool,
    pub(super) samples_per_part: u32,
    /// The planning budget is spent: read no more boundary keys where the source allows.
    pub(super) over_budget: bool,
}

impl Shape {
    fn heap(&self) -> bool {
        matches!(self.kind, 'r' | 'm')
    }

    /// Whether it can be read in heap-page ranges (TID range scans: PostgreSQL 14+).
    fn by_pages(&self) -> bool {
        self.heap() && self.server_version_num >= 140_000 && self.pages > 0
    }

    fn has_key(&self) -> bool {
        !self.key_types.is_empty()
    }

    /// Pages of the whole table, partitioned parents included (estimated from their size).
    fn total_pages(&self) -> u64 {
        if self.kind == 'p' {
            self.bytes / 8192
        } else {
            self.pages
        }
    }
}

/// The first decision: one part, key ranges, or ctid ranges.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Choice {
    Single { reason: String },
    KeyRanges,
    Ctid { bounds: Vec<Bounds>, reason: String },
}

pub(super) fn choose(s: &Shape) -> Choice {
    if s.parts <= 1 {
        let why = if s.bytes <= s.target_part_bytes && !s.fixed_parts {
            "fits in one part"
        } else {
            "one part wanted"
        };
        return Choice::Single {
            reason: format!("{}: {why}", crate::contract::plan::human_bytes(s.bytes)),
        };
    }
    if s.over_budget && s.static_source && s.by_pages() {
        return by_pages(s, "the planning budget was spent", "no key read (the source is static)");
    }
    if s.has_key() && s.kind != 'f' && s.kind != 'v' {
        return Choice::KeyRanges;
    }
    if !s.has_key() && s.heap() && !s.static_source {
        return Choice::Single {
            reason: format!(
                "one part: no primary key or unique NOT NULL index on a live source ({} wanted). Ranges by ctid are \
                 read in separate snapshots, and a row an UPDATE moves between them is read twice or not at all; add \
                 a key, or run from a snapshot (settings.static_source) to split it",
                s.parts
            ),
        };
    }
    if s.by_pages() {
        return by_pages(s, "no primary key or unique NOT NULL index", "");
    }
    let why = if !s.has_key() && s.heap() {
        "no usable key and PostgreSQL < 14 (no TID range scans)"
    } else if !s.has_key() {
        "no usable key and not a heap table"
    } else {
        "views and foreign tables are read whole"
    };
    Choice::Single {
        reason: format!("one part: {why}"),
    }
}

/// Equal heap-page ranges by ctid, and why.
fn by_pages(s: &Shape, why: &str, after: &str) -> Choice {
    let bounds = ctid_ranges(s.pages, s.parts);
    let after = if after.is_empty() {
        String::new()
    } else {
        format!(", {after}")
    };
    let reason = format!(
        "{why}: {} equal ranges of {} heap pages by ctid{after}",
        bounds.len(),
        s.pages
    );
    Choice::Ctid { bounds, reason }
}

/// How key boundaries are found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum KeyMethod {
    /// The first keys on `parts - 1` evenly spaced heap pages: a physically ordered, non-text key on a heap of
    /// PostgreSQL 14+ with at least two pages a part.
    Probes,
    /// Quantiles of a page sample of this percent of the table.
    Sample { percent: f64 },
}

/// Probes when the key is physically ordered (|correlation| ≥ 0.99) and can be probed; else a page sample sized so
/// each part gets `samples_per_part` independent keys.
pub(super) fn key_method(s: &Shape, correlation: f64) -> KeyMethod {
    let probeable = s
        .key_types
        .iter()
        .all(|t| !matches!(t, KeyType::Text | KeyType::Varchar | KeyType::Bpchar));
    if s.heap() && correlation >= 0.99 && probeable && s.server_version_num >= 140_000 && s.pages >= 2 * s.parts as u64
    {
        return KeyMethod::Probes;
    }
    KeyMethod::Sample {
        percent: sample_percent(s, correlation),
    }
}

/// The page sample that gives each part `samples_per_part` independent keys. How independent are the rows of one
/// page? A physically ordered key (correlation ±1) makes a sampled page worth one key; a scattered key makes every row
/// of it a sample. Rows written together often share a key prefix (clustering the statistic does not see), so a page
/// counts a quarter of that.
pub(super) fn sample_percent(s: &Shape, correlation: f64) -> f64 {
    let total_pages = s.total_pages();
    if total_pages == 0 {
        return 100.0;
    }
    let rows_per_page = (s.rows.max(1.0) / total_pages as f64).max(1.0);
    let keys_per_page = ((1.0 + (rows_per_page - 1.0) * (1.0 - correlation)) / 4.0).max(1.0);
    let pages_wanted = s.samples_per_part as f64 * s.parts as f64 / keys_per_page;
    (100.0 * pages_wanted / total_pages as f64).min(100.0)
}

/// Ranges from strictly increasing boundary keys: the first open below, the last open above, each upper bound the
/// next one's lower bound, so every row is in exactly one.
pub(super) fn key_ranges(boundaries: Vec<Vec<KeyValue>>) -> Vec<Bounds> {
    let mut out = Vec::with_capacity(boundaries.len() + 1);
    let mut lower: Option<Vec<KeyValue>> = None;
    for upper in boundaries.into_iter().map(Some).chain(std::iter::once(None)) {
        out.push(Bounds::Key {
            lower: lower.clone(),
            upper: upper.clone(),
        });
        lower = upper;
    }
    out
}

/// `parts` equal ranges of heap pages (at most one a page), the last open above: the page count is a snapshot.
pub(super) fn ctid_ranges(pages: u64, parts: u32) -> Vec<Bounds> {
    let n = (parts as u64).min(pages).max(1);
    (0..n)
        .map(|i| Bounds::Ctid {
            first_page: (pages * i / n) as u32,
            end_page: (i + 1 < n).then(|| (pages * (i + 1) / n) as u32),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            parts: 8,
            bytes: 8 << 30,
            rows: 10_000_000.0,
            pages: 1_000_000,
            kind: 'r',
            key_types: vec![KeyType::Int8],
            server_version_num: 150_000,
            target_part_bytes: 1 << 30,
            fixed_parts: false,
            static_source: false,
            samples_per_part: 2000,
            over_budget: false,
        }
    }

    #[test]
    fn past_the_planning_budget_a_static_source_is_split_by_pages_without_reading_a_key() {
        let spent = Shape {
            over_budget: true,
            static_source: true,
            ..shape()
        };
        assert!(
            matches!(&choose(&spent), Choice::Ctid { bounds, reason } if bounds.len() == 8 && reason.contains("budget"))
        );
        // A live source keeps its key ranges (ctid ranges read in separate snapshots would lose or repeat rows).
        let live = Shape {
            static_source: false,
            ..spent.clone()
        };
        assert_eq!(choose(&live), Choice::KeyRanges);
        // Within the budget, a static source's key is read as always.
        let within = Shape {
            over_budget: false,
            ..spent
        };
        assert_eq!(choose(&within), Choice::KeyRanges);
    }

    #[test]
    fn one_part_key_ranges_or_ctid_ranges_by_the_table() {
        let s = shape();
        assert_eq!(choose(&s), Choice::KeyRanges);
        let small = Shape {
            parts: 1,
            bytes: 10,
            ..s.clone()
        };
        assert!(matches!(choose(&small), Choice::Single { reason } if reason.contains("fits in one part")));
        let keyless = Shape {
            key_types: vec![],
            ..s.clone()
        };
        assert!(matches!(choose(&keyless), Choice::Single { reason } if reason.contains("live source")));
        let quiet = Shape {
            static_source: true,
            ..keyless.clone()
        };
        assert!(matches!(&choose(&quiet), Choice::Ctid { bounds, .. } if bounds.len() == 8));
        let old = Shape {
            server_version_num: 130_000,
            ..quiet
        };
        assert!(matches!(choose(&old), Choice::Single { reason } if reason.contains("< 14")));
        let view = Shape { kind: 'v', ..s };
        assert!(matches!(choose(&view), Choice::Single { reason } if reason.contains("views")));
    }

    #[test]
    fn ordered_keys_are_probed_scattered_ones_sampled_by_need() {
        let s = shape();
        assert_eq!(key_method(&s, 1.0), KeyMethod::Probes);
        let text = Shape {
            key_types: vec![KeyType::Text],
            ..s.clone()
        };
        assert!(
            matches!(key_method(&text, 1.0), KeyMethod::Sample { .. }),
            "text keys are not probed"
        );
        // 10 rows a page, scattered: a page is worth 2.5 keys, so 8 × 2000 / 2.5 pages of 1M: 0.64%.
        let KeyMethod::Sample { percent } = key_method(&s, 0.0) else {
            panic!("sampled")
        };
        assert!((percent - 0.64).abs() < 1e-9, "{percent}");
        // Ordered (a page is worth one key): 8 × 2000 pages = 1.6%; a tiny table is read whole.
        assert!((sample_percent(&s, 1.0) - 1.6).abs() < 1e-9);
        let tiny = Shape {
            pages: 10,
            rows: 100.0,
            ..s
        };
        assert_eq!(sample_percent(&tiny, 0.0), 100.0);
    }

    #[test]
    fn ranges_tile_the_key_space_and_the_pages() {
        let k = |v: &str| vec![KeyValue::new(KeyType::Int8, v)];
        let r = key_ranges(vec![k("10"), k("20")]);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            Bounds::Key {
                lower: None,
                upper: Some(k("10"))
            }
        );
        assert_eq!(
            r[2],
            Bounds::Key {
                lower: Some(k("20")),
                upper: None
            }
        );
        assert_eq!(key_ranges(vec![]), vec![Bounds::ALL]);
        let c = ctid_ranges(10, 4);
        assert_eq!(
            c.first(),
            Some(&Bounds::Ctid {
                first_page: 0,
                end_page: Some(2)
            })
        );
        assert_eq!(
            c.last(),
            Some(&Bounds::Ctid {
                first_page: 7,
                end_page: None
            })
        );
        assert_eq!(ctid_ranges(2, 8).len(), 2, "never more ranges than pages");
    }
}
