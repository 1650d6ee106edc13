//! The timeline (every part attempt on its extractor lane between the plan and each table's load steps) and the
//! concurrency chart of the HTML report.

use std::fmt::Write;

use super::{esc, short, LABEL, LANE, WIDTH};
use crate::contract::load::{StepKind, TableLoad};
use crate::contract::model::TableRef;
use crate::report::record::RunRecord;

/// One bar of the timeline: an attempt of a part.
pub(super) struct Bar<'a> {
    pub(super) table: &'a TableRef,
    pub(super) range: u32,
    pub(super) attempt: u32,
    pub(super) start: f64,
    pub(super) end: f64,
    pub(super) rows: u64,
    /// The error name of a failed attempt.
    pub(super) error: Option<&'a str>,
}

/// Every attempt: the landed results and the failed attempts, ordered by start.
pub(super) fn bars(r: &RunRecord) -> Vec<Bar<'_>> {
    let mut bars: Vec<Bar<'_>> = r
        .results
        .iter()
        .map(|x| Bar {
            table: &x.table,
            range: x.range_index,
            attempt: x.attempt,
            start: x.started_at,
            end: x.started_at + x.seconds,
            rows: x.rows,
            error: None,
        })
        .chain(r.failed.iter().map(|a| Bar {
            table: &a.table,
            range: a.range_index,
            attempt: a.attempt,
            start: a.started_at,
            end: a.started_at + a.seconds,
            rows: 0,
            error: Some(a.error.as_str()),
        }))
        .collect();
    bars.sort_by(|a, b| a.start.total_cmp(&b.start));
    bars
}

/// The lane of each bar (in the bars' order): the first lane free at its start, so the lanes are the extractors that
/// ran side by side.
pub(super) fn lanes(bars: &[Bar<'_>]) -> (Vec<usize>, usize) {
    let mut free_at: Vec<f64> = Vec::new();
    let mut out = Vec::with_capacity(bars.len());
    for b in bars {
        let lane = match free_at.iter().position(|&t| t <= b.start) {
            Some(i) => i,
            None => {
                free_at.push(0.0);
                free_at.len() - 1
            }
        };
        free_at[lane] = b.end;
        out.push(lane);
    }
    (out, free_at.len())
}

/// The plan, every part attempt on its lane, and each table's load steps, on one time axis.
pub(super) fn timeline(o: &mut String, r: &RunRecord, bars: &[Bar<'_>]) {
    let (t0, t1) = r.span();
    let (lane_of, n_lanes) = lanes(bars);
    let loads: Vec<&TableLoad> = r
        .load
        .iter()
        .flat_map(|l| &l.tables)
        .filter(|t| !t.steps.is_empty())
        .collect();
    let rows = 1 + n_lanes + loads.len();
    let height = 30.0 + rows as f64 * LANE;
    let x = |t: f64| LABEL + (t - t0) / (t1 - t0).max(1e-6) * (WIDTH - LABEL - 10.0);
    let _ = write!(
        o,
        "<section><h2>Timeline</h2><p class=\"sub\">Each bar is one attempt of one part, on the extractor lane it ran \
         in; red bars failed (and were retried when a later bar of the same part follows). Above: planning; below: \
         each table's load (set-up, COPY, reconcile, swap).</p>\
         <svg id=\"timeline\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\">"
    );
    axis(o, t0, t1, height, &x);
    let y = |row: usize| 20.0 + row as f64 * LANE;
    let _ = write!(
        o,
        "<text x=\"4\" y=\"{}\">plan</text><rect class=\"plan\" x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"12\">\
         <title>planning: {:.2} s</title></rect>",
        y(0) + 10.0,
        x(r.plan.started_at),
        y(0),
        (x(r.plan.started_at + r.plan.planning_seconds) - x(r.plan.started_at)).max(1.0),
        r.plan.planning_seconds
    );
    for lane in 0..n_lanes {
        let _ = write!(
            o,
            "<text x=\"4\" y=\"{}\">extractor {}</text>",
            y(1 + lane) + 10.0,
            lane + 1
        );
    }
    for (b, lane) in bars.iter().zip(&lane_of) {
        let class = if b.error.is_some() {
            "bar part failed"
        } else {
            "bar part"
        };
        let what = match b.error {
            Some(e) => format!("failed: {e}"),
            None => format!("{} rows", crate::report::thousands(b.rows)),
        };
        let _ = write!(
            o,
            "<rect class=\"{class}\" data-table=\"{}\" data-range=\"{}\" data-attempt=\"{}\" data-rows=\"{}\" \
             x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"12\"><title>{} range {} attempt {}: {:.2} s, {}</title></rect>",
            esc(&b.table.to_string()),
            b.range,
            b.attempt,
            b.rows,
            x(b.start),
            y(1 + lane),
            (x(b.end) - x(b.start)).max(1.0),
            esc(&b.table.to_string()),
            b.range,
            b.attempt,
            b.end - b.start,
            what
        );
    }
    load_rows(o, &loads, &x, &|i| y(1 + n_lanes + i));
    o.push_str(
        "</svg><p class=\"legend\"><i class=\"plan\"></i>plan <i class=\"ok\"></i>part <i class=\"failed\"></i>\
        failed attempt <i class=\"setup\"></i>set-up <i class=\"copy\"></i>COPY <i class=\"reconcile\"></i>reconcile \
        <i class=\"swap\"></i>swap</p></section>",
    );
}

/// A row per loaded table below the extractor lanes: its steps as segments.
fn load_rows(o: &mut String, loads: &[&TableLoad], x: &dyn Fn(f64) -> f64, y: &dyn Fn(usize) -> f64) {
    for (i, t) in loads.iter().enumerate() {
        let row = i;
        let _ = write!(
            o,
            "<text x=\"4\" y=\"{}\">load {}</text>",
            y(row) + 10.0,
            esc(&short(&t.table.to_string(), 18))
        );
        for s in &t.steps {
            let _ = write!(
                o,
                "<rect class=\"step {}\" x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"12\"><title>{} {}: {:.2} s</title></rect>",
                step_class(s.step),
                x(s.started_at),
                y(row),
                (x(s.started_at + s.seconds) - x(s.started_at)).max(1.0),
                esc(&t.table.to_string()),
                s.step.label(),
                s.seconds
            );
        }
    }
}

fn step_class(k: StepKind) -> &'static str {
    match k {
        StepKind::Setup => "setup",
        StepKind::Copy => "copy",
        StepKind::Reconcile => "reconcile",
        StepKind::Swap => "swap",
    }
}

/// Ticks of the time axis every "nice" number of seconds.
fn axis(o: &mut String, t0: f64, t1: f64, height: f64, x: &dyn Fn(f64) -> f64) {
    let span = (t1 - t0).max(1e-6);
    let step = [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ]
    .into_iter()
    .find(|s| span / s <= 12.0)
    .unwrap_or(7200.0);
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let px = x(t0 + t);
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"14\" y2=\"{height}\"/>\
             <text class=\"tick\" x=\"{px:.1}\" y=\"10\">{}</text>",
            seconds_label(t)
        );
        t += step;
    }
}

pub(super) fn seconds_label(t: f64) -> String {
    if t >= 120.0 {
        format!("{:.0}m{:02.0}s", (t / 60.0).floor(), t % 60.0)
    } else if t.fract().abs() < 1e-9 {
        format!("{t:.0}s")
    } else {
        format!("{t:.1}s")
    }
}

/// Extractors running at once over time, against MaxConcurrency.
pub(super) fn concurrency(o: &mut String, r: &RunRecord, bars: &[Bar<'_>]) {
    let (t0, t1) = r.span();
    let mut edges: Vec<(f64, i32)> = bars.iter().flat_map(|b| [(b.start, 1), (b.end, -1)]).collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let limit = r.plan.settings.max_concurrency.max(1) as f64;
    let peak = r.peak_concurrency();
    let top = limit.max(peak as f64).max(1.0);
    let (h, base) = (120.0, 130.0);
    let x = |t: f64| LABEL + (t - t0) / (t1 - t0).max(1e-6) * (WIDTH - LABEL - 10.0);
    let y = |n: f64| base - n / top * h;
    let mut points = format!("{:.1},{:.1}", x(t0), y(0.0));
    let mut now = 0i32;
    for (t, d) in edges {
        let _ = write!(points, " {:.1},{:.1}", x(t), y(now as f64));
        now += d;
        let _ = write!(points, " {:.1},{:.1}", x(t), y(now as f64));
    }
    let _ = write!(points, " {:.1},{:.1}", x(t1), y(0.0));
    let _ = write!(
        o,
        "<section><h2>Concurrency</h2><p class=\"sub\">Extractors running at once (peak <b id=\"peak\">{peak}</b>) \
         against the Map's MaxConcurrency ({limit:.0}).</p><svg viewBox=\"0 0 {WIDTH} 150\" role=\"img\">\
         <polyline class=\"running\" points=\"{points}\"/>\
         <line class=\"limit\" x1=\"{LABEL}\" x2=\"{}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\"/>\
         <text x=\"4\" y=\"{ly:.1}\">limit {limit:.0}</text><text x=\"4\" y=\"{base}\">0</text></svg></section>",
        WIDTH - 10.0,
        ly = y(limit),
    );
}
