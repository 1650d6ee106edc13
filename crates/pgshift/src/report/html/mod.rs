//! The run report as one self-contained HTML file: inline CSS and SVG, no fetch from the network, printable. It shows
//! the run's totals, a timeline of every part attempt on its extractor lane between the plan and each table's load,
//! the concurrency against the Map's limit, per table the rows and bytes per part with their skew and the planner's
//! reasoning, the throughput of the parts, the load's steps, the cost by item, and every failure and retry.
//!
//! A short inline script checks the page as the browser drew it (bars laid out, totals equal to the parts') and
//! records the result on `<body data-check=…>`; the page reads the same without it.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::cost::RunCost;
mod timeline;

use super::record::RunRecord;
use crate::contract::ledger::Basis;
use crate::contract::load::{StepKind, TableLoad};
use crate::contract::model::{ExtractResult, TableRef};
use timeline::{bars, concurrency, timeline};

/// Width of the charts, in SVG units (they scale to the page).
pub(super) const WIDTH: f64 = 1100.0;
/// Left margin of the timeline for the lane labels.
pub(super) const LABEL: f64 = 150.0;
pub(super) const LANE: f64 = 16.0;

/// The whole report.
pub fn render(r: &RunRecord, bill: &RunCost) -> String {
    let mut o = String::with_capacity(64 * 1024 + 600 * r.results.len());
    let bars = bars(r);
    o.push_str(HEAD);
    let _ = write!(o, "<title>pgshift run {}</title></head>", esc(&r.plan.run_id));
    let rows: u64 = r.results.iter().map(|x| x.rows).sum();
    let _ = write!(
        o,
        "<body data-check=\"pending\" data-parts=\"{}\" data-attempts=\"{}\" data-total-rows=\"{rows}\">",
        r.plan.tasks.len(),
        bars.len()
    );
    header(&mut o, r, bill);
    timeline(&mut o, r, &bars);
    concurrency(&mut o, r, &bars);
    tables(&mut o, r);
    throughput(&mut o, r);
    load(&mut o, r);
    cost_items(&mut o, r, bill);
    failures(&mut o, r);
    o.push_str(CHECK);
    o.push_str("</body></html>\n");
    o
}

fn header(o: &mut String, r: &RunRecord, bill: &RunCost) {
    let (start, end) = r.span();
    let rows: u64 = r.results.iter().map(|x| x.rows).sum();
    let read: u64 = r.results.iter().map(|x| x.source_bytes).sum();
    let parquet: u64 = r.results.iter().flat_map(|x| &x.files).map(|f| f.bytes).sum();
    let trigger = match &r.plan.snapshot {
        Some(s) => format!("snapshot {} ({})", s.identifier, s.time),
        None => "manual".to_string(),
    };
    let status = r.status();
    let _ = write!(
        o,
        "<header><h1>pgshift run <code>{}</code> <span class=\"status {}\">{}</span></h1>\
         <p class=\"sub\">planned {} · trigger: {} · source {} (PostgreSQL {}) · stage <code>{}</code></p>\
         <div class=\"tiles\">",
        esc(&r.plan.run_id),
        status.label(),
        status.label(),
        esc(&r.plan.created_at),
        esc(&trigger),
        esc(&r.plan.source.database),
        esc(&r.plan.source.server_version),
        esc(&r.plan.stage),
    );
    let tiles = [
        ("wall time", format!("{:.1} s", end - start), "wall"),
        ("tables", r.plan.tables.len().to_string(), "tables"),
        ("parts", r.plan.tasks.len().to_string(), "parts"),
        ("rows", super::thousands(rows), "rows"),
        ("read from source", mb(read), "read"),
        ("Parquet", mb(parquet), "parquet"),
        ("cost", format!("${:.6}", bill.total), "cost"),
    ];
    for (k, v, id) in tiles {
        let _ = write!(
            o,
            "<div class=\"tile\"><b id=\"total-{id}\">{v}</b><span>{k}</span></div>"
        );
    }
    o.push_str("</div>");
    failure_first(o, r);
    let _ = write!(
        o,
        "<p class=\"note\" id=\"consistency\">{}</p>",
        esc(crate::contract::plan::consistency_line(r.plan.settings.static_source))
    );
    for n in &r.notes {
        let _ = write!(o, "<p class=\"note\">{}</p>", esc(n));
    }
    o.push_str("</header>");
}

/// A failed run's first screen: what failed (the error's name and message in words), where, what the warehouse
/// holds now, and the command that goes on.
fn failure_first(o: &mut String, r: &RunRecord) {
    let Some((name, message)) = &r.failure else {
        return;
    };
    let _ = write!(
        o,
        "<section id=\"failure\" class=\"failure\"><h2>The run failed</h2><dl>\
         <dt>error</dt><dd><code id=\"failure-name\">{}</code> <span id=\"failure-message\">{}</span></dd>\
         <dt>where</dt><dd id=\"failure-where\">{}</dd>\
         <dt>the warehouse now</dt><dd id=\"failure-warehouse\">{}</dd>\
         <dt>next</dt><dd id=\"failure-next\">{}</dd></dl></section>",
        esc(name),
        esc(&short(message, 2000)),
        esc(&r.failed_where().unwrap_or_default()),
        esc(&r.warehouse_now()),
        esc(&r.resume_hint().unwrap_or_default()),
    );
}

/// Per table: how it was split and why, rows and bytes per part with the skew, the slowest parts.
fn tables(o: &mut String, r: &RunRecord) {
    let mut by_table: BTreeMap<&TableRef, Vec<&ExtractResult>> = BTreeMap::new();
    for x in &r.results {
        by_table.entry(&x.table).or_default().push(x);
    }
    o.push_str("<section><h2>Tables</h2>");
    for t in &r.plan.tables {
        let mut parts = by_table.remove(&t.table).unwrap_or_default();
        parts.sort_by_key(|p| p.range_index);
        let rows: u64 = parts.iter().map(|p| p.rows).sum();
        let _ = write!(
            o,
            "<article class=\"table\"><h3>{}</h3><p><b>{}</b> parts of <b>{}</b> planned, {} rows extracted · \
             strategy <code>{}</code>: {}</p>",
            esc(&t.table.to_string()),
            parts.len(),
            t.parts.len(),
            super::thousands(rows),
            t.strategy.kind(),
            esc(&t.reason)
        );
        if parts.len() > 1 {
            let rows_of: Vec<f64> = parts.iter().map(|p| p.rows as f64).collect();
            let bytes_of: Vec<f64> = parts
                .iter()
                .map(|p| p.files.iter().map(|f| f.bytes).sum::<u64>() as f64)
                .collect();
            part_bars(o, "rows per part", &rows_of, &|v| super::thousands(v as u64));
            part_bars(o, "Parquet bytes per part", &bytes_of, &|v| mb(v as u64));
        }
        slowest(o, &parts);
        o.push_str("</article>");
    }
    o.push_str("</section>");
}

/// One bar per part, with max/mean.
fn part_bars(o: &mut String, what: &str, values: &[f64], fmt: &dyn Fn(f64) -> String) {
    let max = values.iter().copied().fold(0.0, f64::max).max(1e-9);
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let w = (WIDTH - 20.0) / values.len() as f64;
    let _ = write!(
        o,
        "<p class=\"sub\">{what}: max/mean <b class=\"skew\">{:.3}</b> (1.000 is perfect balance)</p>\
         <svg viewBox=\"0 0 {WIDTH} 70\" class=\"parts\" role=\"img\">",
        if mean > 0.0 { max / mean } else { 1.0 }
    );
    for (i, v) in values.iter().enumerate() {
        let h = v / max * 60.0;
        let _ = write!(
            o,
            "<rect class=\"pbar\" x=\"{:.2}\" y=\"{:.1}\" width=\"{:.2}\" height=\"{h:.1}\"><title>range {i}: {}</title></rect>",
            10.0 + i as f64 * w,
            65.0 - h,
            (w * 0.85).max(0.5),
            fmt(*v)
        );
    }
    let my = 65.0 - mean / max * 60.0;
    let _ = write!(
        o,
        "<line class=\"mean\" x1=\"10\" x2=\"{}\" y1=\"{my:.1}\" y2=\"{my:.1}\"/></svg>",
        WIDTH - 10.0
    );
}

/// The five slowest parts of a table.
fn slowest(o: &mut String, parts: &[&ExtractResult]) {
    let mut by_time: Vec<&&ExtractResult> = parts.iter().collect();
    by_time.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    o.push_str("<table><tr><th>slowest parts</th><th>rows</th><th>seconds</th><th>MB/s read</th><th>attempt</th></tr>");
    for p in by_time.iter().take(5) {
        let _ = write!(
            o,
            "<tr><td>range {}</td><td>{}</td><td>{:.2}</td><td>{:.1}</td><td>{}</td></tr>",
            p.range_index,
            super::thousands(p.rows),
            p.seconds,
            p.source_bytes as f64 / 1e6 / p.seconds.max(1e-9),
            p.attempt
        );
    }
    o.push_str("</table>");
}

/// A histogram of the parts' read throughput.
fn throughput(o: &mut String, r: &RunRecord) {
    let rates: Vec<f64> = r
        .results
        .iter()
        .filter(|x| x.seconds > 0.0 && x.rows > 0)
        .map(|x| x.source_bytes as f64 / 1e6 / x.seconds)
        .collect();
    o.push_str("<section><h2>Throughput per part</h2>");
    if rates.is_empty() {
        o.push_str("<p class=\"sub\">No part read any rows.</p></section>");
        return;
    }
    let (lo, hi) = (
        rates.iter().copied().fold(f64::INFINITY, f64::min),
        rates.iter().copied().fold(0.0, f64::max),
    );
    const BINS: usize = 20;
    let width = ((hi - lo) / BINS as f64).max(1e-9);
    let mut counts = [0usize; BINS];
    for v in &rates {
        counts[(((v - lo) / width) as usize).min(BINS - 1)] += 1;
    }
    let top = *counts.iter().max().unwrap_or(&1) as f64;
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let _ = write!(
        o,
        "<p class=\"sub\">MB/s of binary COPY read per part: min {lo:.1}, median {:.1}, max {hi:.1} ({} parts)</p>\
         <svg viewBox=\"0 0 {WIDTH} 110\" role=\"img\">",
        sorted[sorted.len() / 2],
        rates.len()
    );
    let w = (WIDTH - 20.0) / BINS as f64;
    for (i, c) in counts.iter().enumerate() {
        let h = *c as f64 / top * 80.0;
        let _ = write!(
            o,
            "<rect class=\"hist\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{:.1}–{:.1} MB/s: {c} \
             parts</title></rect>",
            10.0 + i as f64 * w,
            90.0 - h,
            w * 0.9,
            lo + i as f64 * width,
            lo + (i + 1) as f64 * width
        );
    }
    let _ = write!(
        o,
        "<text x=\"10\" y=\"105\">{lo:.1} MB/s</text><text x=\"{}\" y=\"105\" text-anchor=\"end\">{hi:.1} MB/s</text>\
         </svg></section>",
        WIDTH - 10.0
    );
}

/// The swap's seconds and how `replace` swapped (by rename, or its rows replaced and why).
fn swap_cell(t: &TableLoad, secs: String) -> String {
    use crate::contract::load::SwapKind;
    match (t.swap, &t.swap_note) {
        (Some(SwapKind::Rename), _) => format!("{secs} (rename)"),
        (Some(SwapKind::Rows), Some(note)) => format!("{secs} <span title=\"{}\">(rows)</span>", esc(note)),
        (Some(SwapKind::Rows), None) => format!("{secs} (rows)"),
        (None, _) => secs,
    }
}

/// A table's load status; a table a failed run never got to is "not attempted", not "Pending".
fn status_cell(r: &RunRecord, t: &TableLoad) -> String {
    use crate::contract::load::TableStatus;
    match t.status {
        TableStatus::Pending if r.failure.is_some() => "not attempted (the run failed first)".into(),
        s => format!("{s:?}"),
    }
}

/// The load of each table: its outcome, rows reconciled, seconds per step.
fn load(o: &mut String, r: &RunRecord) {
    o.push_str("<section><h2>Load</h2>");
    let Some(l) = &r.load else {
        o.push_str("<p class=\"sub\">Not loaded.</p></section>");
        return;
    };
    o.push_str(
        "<table id=\"load\"><tr><th>table</th><th>status</th><th>rows in parts</th><th>rows committed</th>\
         <th>set-up s</th><th>COPY s</th><th>reconcile s</th><th>swap s</th></tr>",
    );
    for t in &l.tables {
        let secs = |k: StepKind| match t.steps.iter().find(|s| s.step == k) {
            Some(s) => format!("{:.2}", s.seconds),
            None => "–".into(),
        };
        let committed = match t.committed_rows.filter(|_| t.status.is_committed()) {
            Some(n) if n == t.rows => format!("{} ✓", super::thousands(n)),
            Some(n) => format!("{} ✗", super::thousands(n)),
            None => "–".into(),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{committed}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.table.to_string()),
            status_cell(r, t),
            super::thousands(t.rows),
            secs(StepKind::Setup),
            secs(StepKind::Copy),
            secs(StepKind::Reconcile),
            swap_cell(t, secs(StepKind::Swap))
        );
    }
    let _ = write!(
        o,
        "</table><p class=\"sub\">mode {:?}; the load ran {:.2} s.</p></section>",
        l.mode, l.seconds
    );
}

/// The run's bill, item by item, as `pgshift cost` prints it: the same ledger record, the same prices.
fn cost_items(o: &mut String, r: &RunRecord, b: &RunCost) {
    let _ = write!(
        o,
        "<section><h2>Cost</h2><p class=\"sub\">At {}; each quantity actual (measured or counted by the run) or \
         estimated. Per table and per item: <code>pgshift cost --stage {} --run {}</code>.</p><table id=\"cost\"><tr>\
         <th>table</th><th>item</th><th>quantity × price</th><th>dollars</th><th>basis</th></tr>",
        esc(&b.prices),
        esc(&super::shell_word(&r.plan.stage)),
        esc(&super::shell_word(&b.run_id))
    );
    for i in b.items.iter().filter(|i| i.dollars > 0.0 || i.quantity > 0.0) {
        let table = i.table.as_ref().map_or("(run)".to_string(), |t| t.to_string());
        let basis = match i.basis {
            Basis::Actual => "actual",
            Basis::Estimated => "estimated",
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{:.6} {} × ${}</td><td>${:.6}</td><td>{basis}</td></tr>",
            esc(&table),
            esc(&i.item),
            i.quantity,
            esc(&i.unit),
            i.unit_price,
            i.dollars
        );
    }
    let _ = write!(
        o,
        "<tr class=\"total\"><td>total</td><td></td><td></td><td id=\"cost-total\" data-dollars=\"{}\">${:.6}</td>\
         <td></td></tr></table>",
        b.total, b.total
    );
    if let Some(x) = &r.restore {
        let line = super::RestoreCost::of(x).line();
        let _ = write!(o, "<p class=\"sub\" id=\"restore\">{}</p>", esc(&line));
    }
    o.push_str("</section>");
}

fn failures(o: &mut String, r: &RunRecord) {
    let table_errors: Vec<(&TableRef, &str)> = r
        .load
        .iter()
        .flat_map(|l| &l.tables)
        .filter_map(|t| t.error.as_deref().map(|e| (&t.table, e)))
        .collect();
    o.push_str("<section><h2>Failures and retries</h2>");
    if r.failure.is_none() && r.failed.is_empty() && table_errors.is_empty() {
        o.push_str("<p class=\"sub\">None: every part landed on its first attempt.</p></section>");
        return;
    }
    if let Some((name, cause)) = &r.failure {
        let _ = write!(
            o,
            "<p class=\"fail\">The run failed: <code>{}</code> {}</p>",
            esc(name),
            esc(&short(cause, 2000))
        );
    }
    o.push_str("<table id=\"failures\"><tr><th>where</th><th>attempt</th><th>error</th><th>message</th></tr>");
    for a in &r.failed {
        let retried = r.landed(&a.table, a.range_index);
        let _ = write!(
            o,
            "<tr><td>{} range {}</td><td>{}{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&a.table.to_string()),
            a.range_index,
            a.attempt,
            if retried { " (retried, landed)" } else { "" },
            esc(&a.error),
            esc(&short(&a.message, 600))
        );
    }
    for (t, e) in table_errors {
        let _ = write!(
            o,
            "<tr><td>load of {}</td><td></td><td colspan=\"2\">{}</td></tr>",
            esc(&t.to_string()),
            esc(e)
        );
    }
    o.push_str("</table></section>");
}

/// HTML text: `&`, `<`, `>` and quotes escaped.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

const HEAD: &str = r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1180px;color:#1d2430;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 4px}code{font:12px ui-monospace,monospace;background:#f2f4f7;padding:1px 4px;border-radius:3px}
.sub{color:#5a6472;margin:2px 0 8px}.note{color:#8a5a00}.fail{color:#b42318}.failure{border:2px solid #b42318;border-radius:6px;padding:4px 14px;margin:10px 0}.failure dt{font-weight:600}.failure dd{margin:0 0 6px 0}
.status{font-size:13px;padding:2px 8px;border-radius:10px;vertical-align:middle;color:#fff}
.status.succeeded{background:#2e7d32}.status.failed{background:#b42318}.status.incomplete{background:#8a5a00}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}.tile{border:1px solid #dde3ea;border-radius:6px;padding:8px 14px;min-width:110px}
.tile b{display:block;font-size:18px}.tile span{color:#5a6472;font-size:12px}
svg{width:100%;height:auto;display:block;background:#fbfcfd;border:1px solid #eef1f4}
svg text{font:10px system-ui,sans-serif;fill:#5a6472}svg .tick{text-anchor:middle}
.grid{stroke:#e6eaef;stroke-width:1}.plan{fill:#6b7bd6}.bar{fill:#2f80c1}.bar.failed{fill:#d64545}
.step.setup{fill:#9aa5b1}.step.copy{fill:#2e9e6e}.step.reconcile{fill:#e0a800}.step.swap{fill:#7b4fc9}
.running{fill:none;stroke:#2f80c1;stroke-width:1.5}.limit{stroke:#d64545;stroke-dasharray:5 4}
.pbar{fill:#2f80c1}.mean{stroke:#e0a800;stroke-dasharray:4 3}.hist{fill:#2e9e6e}
.legend i{display:inline-block;width:12px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
.legend .plan{background:#6b7bd6}.legend .ok{background:#2f80c1}.legend .failed{background:#d64545}.legend .setup{background:#9aa5b1}
.legend .copy{background:#2e9e6e}.legend .reconcile{background:#e0a800}.legend .swap{background:#7b4fc9}
table{border-collapse:collapse;margin:6px 0;font-size:13px}th,td{border-bottom:1px solid #eef1f4;padding:3px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}tr.total td{font-weight:600}
@media print{body{margin:0;max-width:none}section{break-inside:avoid}}
</style>
"#;

/// Checks the page as drawn: one laid-out bar per attempt, and the bars' rows adding up to the total shown.
const CHECK: &str = r#"<script>
(function () {
  var b = document.body, bars = document.querySelectorAll('#timeline rect.bar.part'), drawn = 0, rows = 0;
  for (var i = 0; i < bars.length; i++) {
    var r = bars[i].getBoundingClientRect();
    if (r.width > 0 && r.height > 0) drawn++;
    rows += Number(bars[i].getAttribute('data-rows'));
  }
  var shown = Number(document.getElementById('total-rows').textContent.replace(/,/g, ''));
  b.setAttribute('data-drawn-bars', String(drawn));
  b.setAttribute('data-bar-rows', String(rows));
  var ok = drawn === Number(b.getAttribute('data-attempts')) && rows === Number(b.getAttribute('data-total-rows'))
    && shown === rows;
  b.setAttribute('data-check', ok ? 'ok' : 'mismatch');
  b.setAttribute('data-ready-ms', String(Math.round(performance.now())));
})();
</script>
"#;

#[cfg(test)]
mod tests {
    use super::timeline::{lanes, seconds_label, Bar};
    use super::*;

    #[test]
    fn attempts_side_by_side_take_separate_lanes_and_a_freed_lane_is_reused() {
        let t = TableRef::new("s", "t");
        let bar = |start: f64, end: f64| Bar {
            table: &t,
            range: 0,
            attempt: 0,
            start,
            end,
            rows: 0,
            error: None,
        };
        // Three at once, then one after the first ended, then one after all.
        let bars = [
            bar(0.0, 2.0),
            bar(0.5, 3.0),
            bar(1.0, 1.5),
            bar(1.6, 4.0),
            bar(5.0, 6.0),
        ];
        let (lanes, n) = lanes(&bars);
        assert_eq!(lanes, [0, 1, 2, 2, 0]);
        assert_eq!(n, 3, "as many lanes as extractors ran at once");
    }

    #[test]
    fn text_is_escaped_and_seconds_labelled() {
        // Counts are grouped by `report::thousands`, tested beside it.
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(seconds_label(2.0), "2s");
        assert_eq!(seconds_label(0.5), "0.5s");
        assert_eq!(seconds_label(150.0), "2m30s");
    }
}
