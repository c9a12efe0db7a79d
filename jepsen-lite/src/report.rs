//! The HTML report: one self-contained file, no scripts, no external assets.
//!
//! The timeline draws one lane per client. The x axis is time compressed to
//! event order (every distinct call or return time gets its own column), so
//! short operations stay visible next to long ones; hovering an operation shows
//! its real times, input and output. Operations of the longest linearizable
//! prefix are green and numbered in linearization order, the operation that
//! could not be placed is red, unknown-outcome operations are dashed and run to
//! the right edge. Below come the failing operation, the model state after the
//! prefix, the end of the prefix in order, and the watch violations.
//!
//! A large history is cut to the operations nearest in time to the failure so
//! the file stays small enough for a browser.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use crate::history::History;
use crate::{describe_operation, CheckResult, Verdict};

/// At most this many operations are drawn.
const DRAWN_OPS_MAX: usize = 1500;
/// At most this many prefix operations are listed.
const LISTED_PREFIX_MAX: usize = 60;

const COLUMN_PX: f64 = 14.0;
const LANE_PX: f64 = 26.0;
const MARGIN_LEFT_PX: f64 = 90.0;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the report for `history` and `result`.
pub fn render_html(history: &History, result: &CheckResult) -> String {
    let (failing, prefix, state) = match &result.linearizability {
        Verdict::Violation {
            op,
            longest_prefix,
            model_state,
            ..
        } => (Some(*op), longest_prefix.clone(), Some(model_state)),
        _ => (None, result.linearization.clone().unwrap_or_default(), None),
    };
    let position: HashMap<usize, usize> = prefix
        .iter()
        .enumerate()
        .map(|(i, &op)| (op, i + 1))
        .collect();
    let drawn = ops_to_draw(history, failing);

    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>jepsen-lite report</title><style>\n");
    html.push_str(
        "body{font-family:sans-serif;margin:1em;color:#222}pre{background:#f5f5f5;padding:.5em;white-space:pre-wrap}\
         table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}\
         .timeline{overflow-x:auto;border:1px solid #ccc}.ok{fill:#b7e4b0;stroke:#3a7d32}.bad{fill:#f4a3a3;stroke:#b00}\
         .other{fill:#e2e2e2;stroke:#888}.unknown{stroke-dasharray:4 3}text{font-size:10px;font-family:monospace}\
         .legend span{display:inline-block;padding:0 .5em;margin-right:.5em;border:1px solid #888}\n",
    );
    html.push_str("</style></head><body>\n<h1>jepsen-lite report</h1>\n");
    let _ = writeln!(html, "<pre>{}</pre>", escape(&result.to_string()));
    html.push_str(
        "<p class=\"legend\"><span style=\"background:#b7e4b0\">longest linearizable prefix (numbered in order)</span>\
         <span style=\"background:#f4a3a3\">could not be placed</span><span style=\"background:#e2e2e2\">other</span>\
         dashed: unknown outcome</p>\n",
    );
    if drawn.len() < history.operations.len() {
        let _ = writeln!(
            html,
            "<p>Showing the {} operations nearest in time to the failure, of {}.</p>",
            drawn.len(),
            history.operations.len()
        );
    }
    html.push_str(&timeline(history, &drawn, failing, &position));

    if let Some(op) = failing {
        let _ = writeln!(
            html,
            "<h2>Operation that could not be placed</h2>\n<pre>{}</pre>",
            escape(&describe_operation(history, op))
        );
    }
    if let Some(state) = state {
        let _ = writeln!(
            html,
            "<h2>Model state after the longest prefix (revision {})</h2>",
            state.revision
        );
        html.push_str("<table><tr><th>key</th><th>value</th><th>version</th><th>create_revision</th><th>mod_revision</th><th>lease</th></tr>\n");
        for kv in state.kvs.values() {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&kv.key),
                escape(kv.value.as_deref().unwrap_or("")),
                kv.version.unwrap_or(0),
                kv.create_revision.unwrap_or(0),
                kv.mod_revision.unwrap_or(0),
                kv.lease.unwrap_or(0)
            );
        }
        let _ = writeln!(html, "</table>\n<p>Leases: {:?}</p>", state.leases);
    }
    if !prefix.is_empty() {
        let skip = prefix.len().saturating_sub(LISTED_PREFIX_MAX);
        let _ = writeln!(
            html,
            "<h2>Linearization order (last {} of {})</h2>\n<ol start=\"{}\">",
            prefix.len() - skip,
            prefix.len(),
            skip + 1
        );
        for &op in &prefix[skip..] {
            let _ = writeln!(
                html,
                "<li><code>{}</code></li>",
                escape(&describe_operation(history, op))
            );
        }
        html.push_str("</ol>\n");
    }
    if !result.watch_violations.is_empty() {
        html.push_str("<h2>Watch violations</h2>\n<ul>\n");
        for violation in &result.watch_violations {
            let _ = writeln!(html, "<li>{}</li>", escape(&violation.to_string()));
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</body></html>\n");
    html
}

/// The operations to draw: all of them, or those nearest the failure in time.
fn ops_to_draw(history: &History, failing: Option<usize>) -> Vec<usize> {
    let all: Vec<usize> = (0..history.operations.len()).collect();
    if all.len() <= DRAWN_OPS_MAX {
        return all;
    }
    let center = failing.map_or(history.operations[0].call, |op| history.operations[op].call);
    let mut nearest = all;
    nearest.sort_by_key(|&i| (history.operations[i].call - center).unsigned_abs());
    nearest.truncate(DRAWN_OPS_MAX);
    nearest.sort_unstable();
    nearest
}

fn timeline(
    history: &History,
    drawn: &[usize],
    failing: Option<usize>,
    position: &HashMap<usize, usize>,
) -> String {
    let mut times = BTreeSet::new();
    for &i in drawn {
        let op = &history.operations[i];
        times.insert(op.call);
        if let Some(r) = op.return_time {
            times.insert(r);
        }
    }
    let column: HashMap<i64, usize> = times.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    let columns = times.len() + 2;
    let lanes: BTreeMap<u64, usize> = drawn
        .iter()
        .map(|&i| history.operations[i].client)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(lane, client)| (client, lane))
        .collect();
    let width = MARGIN_LEFT_PX + columns as f64 * COLUMN_PX;
    let height = 20.0 + lanes.len() as f64 * LANE_PX;
    let mut svg = String::new();
    let _ = writeln!(svg, "<div class=\"timeline\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\">");
    for (client, lane) in &lanes {
        let y = 20.0 + *lane as f64 * LANE_PX;
        let _ = writeln!(
            svg,
            "<text x=\"4\" y=\"{:.0}\">client {client}</text>",
            y + 14.0
        );
        let _ = writeln!(svg, "<line x1=\"{MARGIN_LEFT_PX}\" x2=\"{width:.0}\" y1=\"{:.0}\" y2=\"{:.0}\" stroke=\"#eee\"/>", y + LANE_PX - 2.0, y + LANE_PX - 2.0);
    }
    for &i in drawn {
        let op = &history.operations[i];
        let y = 20.0 + lanes[&op.client] as f64 * LANE_PX;
        let x1 = MARGIN_LEFT_PX + column[&op.call] as f64 * COLUMN_PX;
        let x2 = match op.return_time {
            Some(r) => MARGIN_LEFT_PX + column[&r] as f64 * COLUMN_PX + COLUMN_PX * 0.8,
            None => width - 2.0,
        };
        let class = if Some(i) == failing {
            "bad"
        } else if position.contains_key(&i) {
            "ok"
        } else {
            "other"
        };
        let dashed = if op.is_known() { "" } else { " unknown" };
        let tooltip = format!(
            "{}\ncall {} ns, return {}",
            describe_operation(history, i),
            op.call,
            op.return_time
                .map_or("unknown".to_string(), |r| format!("{r} ns"))
        );
        let _ = writeln!(
            svg,
            "<g><title>{}</title><rect class=\"{class}{dashed}\" x=\"{x1:.0}\" y=\"{y:.0}\" width=\"{:.0}\" height=\"{:.0}\" rx=\"3\"/>",
            escape(&tooltip),
            (x2 - x1).max(4.0),
            LANE_PX - 6.0
        );
        let label = match position.get(&i) {
            Some(n) => format!("{n}:#{i}"),
            None => format!("#{i}"),
        };
        let _ = writeln!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.0}\">{}</text></g>",
            x1 + 2.0,
            y + 13.0,
            escape(&label)
        );
    }
    svg.push_str("</svg></div>\n");
    svg
}
