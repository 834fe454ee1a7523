//! A seed's story as one self-contained HTML page (`raftkv-sim --seed N --timeline out.html`): a
//! lane per node (role and term over time, down time, crashes, pauses, partitions, disk faults,
//! snapshots sent and installed), a lane per client (operations coloured by outcome), and each
//! violation marked where it fired. The model is extracted here from the structured trace; the
//! page's script draws it as SVG, so the page needs nothing but a browser.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Layout constants the page declares (`data-x0`, `data-plot-width` on the `<svg>`): an event at
/// `t_ns` is drawn at `x0 + t_ns / end_ns * plot_width`.
pub const X0: f64 = 90.0;
pub const PLOT_WIDTH: f64 = 1500.0;

#[derive(Serialize, Default)]
struct Model {
    seed: u64,
    repro: String,
    config: Value,
    end_ns: u64,
    healed_ns: Option<u64>,
    x0: f64,
    plot_width: f64,
    nodes: Vec<u64>,
    clients: Vec<u64>,
    roles: Vec<Span>,
    down: Vec<Span>,
    pauses: Vec<Span>,
    partitions: Vec<Partition>,
    marks: Vec<Mark>,
    ops: Vec<OpSpan>,
    violations: Vec<Marker>,
}

#[derive(Serialize, Clone)]
struct Span {
    node: u64,
    from: u64,
    to: u64,
    label: String,
    /// `leader`, `follower`, ... for roles.
    kind: String,
}

#[derive(Serialize)]
struct Partition {
    from: u64,
    to: u64,
    shape: String,
    /// Nodes with at least one blocked link.
    nodes: Vec<u64>,
    blocked: Vec<(u64, u64)>,
}

#[derive(Serialize)]
struct Mark {
    node: u64,
    t: u64,
    kind: String,
    label: String,
}

#[derive(Serialize)]
struct OpSpan {
    client: u64,
    from: u64,
    /// Absent: the outcome is unknown (drawn to the end).
    to: Option<u64>,
    kind: String,
    label: String,
}

#[derive(Serialize)]
struct Marker {
    t: u64,
    checker: String,
    detail: String,
    /// Found by a checker of the finished history, not at a moment of the run.
    after_run: bool,
}

/// The page for a run: its trace lines (`Trace::Events` or more), the violations the run ended
/// with (those found after the run, such as linearizability, are not in the trace), its config
/// and its repro line.
pub fn render(
    seed: u64,
    trace_lines: &[String],
    violations: &[(String, String)],
    config: Value,
    repro: &str,
) -> String {
    let model = build(seed, trace_lines, violations, config, repro);
    let data = serde_json::to_string(&model)
        .expect("model serialises")
        // Keep `</script>` in a detail from closing the script.
        .replace("</", "<\\/");
    PAGE.replace("__TITLE__", &format!("raftkv-sim seed {seed}"))
        .replace("__DATA__", &data)
}

fn build(
    seed: u64,
    trace_lines: &[String],
    violations: &[(String, String)],
    config: Value,
    repro: &str,
) -> Model {
    let mut m = Model {
        seed,
        repro: repro.to_string(),
        config,
        x0: X0,
        plot_width: PLOT_WIDTH,
        ..Model::default()
    };
    let events: Vec<Value> = trace_lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    m.end_ns = events
        .iter()
        .filter_map(|e| e["t_ns"].as_u64())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut nodes = std::collections::BTreeSet::new();
    let mut clients = std::collections::BTreeSet::new();
    // node -> (since, role, term) of the role it is in; node -> since when it is down.
    let mut role_of: BTreeMap<u64, (u64, String, u64)> = BTreeMap::new();
    let mut down_since: BTreeMap<u64, u64> = BTreeMap::new();
    // The partition in force: since when, its shape, its blocked links.
    let mut partition: Option<OpenPartition> = None;
    let mut in_trace = Vec::new();
    let close_role = |m: &mut Model, role_of: &mut BTreeMap<u64, (u64, String, u64)>, node, t| {
        if let Some((from, role, term)) = role_of.remove(&node) {
            m.roles.push(Span {
                node,
                from,
                to: t,
                label: format!("{role}, term {term}"),
                kind: role,
            });
        }
    };
    for e in &events {
        let t = e["t_ns"].as_u64().unwrap_or(0);
        let node = e["node"].as_u64().unwrap_or(0);
        let d = &e["detail"];
        if node > 0 && e["event"] != "op" && e["event"] != "violation" {
            nodes.insert(node);
        }
        match e["event"].as_str().unwrap_or_default() {
            "event" => match d["type"].as_str().unwrap_or_default() {
                "role_changed" => {
                    close_role(&mut m, &mut role_of, node, t);
                    let role = d["role"].as_str().unwrap_or("?").to_string();
                    role_of.insert(node, (t, role, d["term"].as_u64().unwrap_or(0)));
                }
                "snapshot_sent" => m.marks.push(Mark {
                    node,
                    t,
                    kind: "snapshot_sent".into(),
                    label: format!("snapshot at index {} sent to node {}", d["index"], d["to"]),
                }),
                "snapshot_installed" => m.marks.push(Mark {
                    node,
                    t,
                    kind: "snapshot_installed".into(),
                    label: format!(
                        "snapshot installed: index {}, term {}",
                        d["index"], d["term"]
                    ),
                }),
                "stopped" => {
                    close_role(&mut m, &mut role_of, node, t);
                    m.marks.push(Mark {
                        node,
                        t,
                        kind: "stopped".into(),
                        label: format!("stopped: {}", d["reason"].as_str().unwrap_or("?")),
                    });
                }
                _ => {}
            },
            "start" => {
                if let Some(from) = down_since.remove(&node) {
                    m.down.push(Span {
                        node,
                        from,
                        to: t,
                        label: "down".into(),
                        kind: "down".into(),
                    });
                }
                m.marks.push(Mark {
                    node,
                    t,
                    kind: "start".into(),
                    label: format!("started, incarnation {}", d["incarnation"]),
                });
            }
            "stopped" | "unrecoverable" => {
                close_role(&mut m, &mut role_of, node, t);
                down_since.entry(node).or_insert(t);
            }
            "membership" => m.marks.push(Mark {
                node,
                t,
                kind: "membership".into(),
                label: format!("membership: {}", d["change"].as_str().unwrap_or("?")),
            }),
            "fault" => match d["fault"].as_str().unwrap_or_default() {
                "crash" => {
                    close_role(&mut m, &mut role_of, node, t);
                    down_since.entry(node).or_insert(t);
                    m.marks.push(Mark {
                        node,
                        t,
                        kind: "crash".into(),
                        label: format!(
                            "crash ({}): {} sectors lost{}{}",
                            d["kind"].as_str().unwrap_or("?"),
                            d["sectors_lost"],
                            if d["io_in_flight"] == true {
                                ", I/O in flight"
                            } else {
                                ""
                            },
                            if d["disk_lost"] == true {
                                ", disk lost"
                            } else {
                                ""
                            }
                        ),
                    });
                }
                "pause" => {
                    let to = t + d["for_ms"].as_u64().unwrap_or(0) * 1_000_000;
                    m.pauses.push(Span {
                        node,
                        from: t,
                        to,
                        label: format!("paused {} ms", d["for_ms"]),
                        kind: "pause".into(),
                    });
                }
                "partition" | "healed" => {
                    if let Some((from, shape, blocked)) = partition.take() {
                        push_partition(&mut m, from, t, shape, blocked);
                    }
                    if d["fault"] == "healed" {
                        m.healed_ns = Some(t);
                    } else if d["shape"] != "healed" {
                        let blocked: Vec<(u64, u64)> =
                            serde_json::from_value(d["blocked"].clone()).unwrap_or_default();
                        let shape = d["shape"].as_str().unwrap_or("?").to_string();
                        partition = Some((t, shape, blocked));
                    }
                }
                "restart" => {}
                other => m.marks.push(Mark {
                    node,
                    t,
                    kind: other.to_string(),
                    label: fault_label(other, d),
                }),
            },
            "mistake" => m.marks.push(Mark {
                node,
                t,
                kind: "mistake".into(),
                label: format!("operator mistake: {}", d),
            }),
            "op" => {
                let client = d["client"].as_u64().unwrap_or(0);
                clients.insert(client);
                let kind = d["kind"].as_str().unwrap_or("?").to_string();
                let out = match &d["output"] {
                    Value::Null => "outcome unknown".to_string(),
                    o => o.to_string(),
                };
                let input = match &d["input"] {
                    Value::String(v) => format!("={v}"),
                    _ => String::new(),
                };
                m.ops.push(OpSpan {
                    client,
                    from: d["invoke_ns"].as_u64().unwrap_or(t),
                    to: d["complete_ns"].as_u64(),
                    label: format!(
                        "client {client}: {kind} {}{input} -> {out}",
                        d["key"].as_str().unwrap_or("?")
                    ),
                    kind,
                });
            }
            "violation" => {
                let checker = d["checker"].as_str().unwrap_or("?").to_string();
                let detail = d["detail"].as_str().unwrap_or("").to_string();
                in_trace.push((checker.clone(), detail.clone()));
                m.violations.push(Marker {
                    t,
                    checker,
                    detail,
                    after_run: false,
                });
            }
            _ => {}
        }
    }
    let end = m.end_ns;
    if let Some((from, shape, blocked)) = partition.take() {
        let to = m.healed_ns.unwrap_or(end);
        push_partition(&mut m, from, to, shape, blocked);
    }
    for node in role_of.keys().copied().collect::<Vec<_>>() {
        close_role(&mut m, &mut role_of, node, end);
    }
    for (node, from) in down_since {
        m.down.push(Span {
            node,
            from,
            to: end,
            label: "down".into(),
            kind: "down".into(),
        });
    }
    // Violations found after the run (history checkers, a panic that ended it) are marked at
    // its end.
    for (checker, detail) in violations {
        if !in_trace.iter().any(|(c, d)| c == checker && d == detail) {
            m.violations.push(Marker {
                t: end,
                checker: checker.clone(),
                detail: detail.clone(),
                after_run: true,
            });
        }
    }
    m.nodes = nodes.into_iter().collect();
    m.clients = clients.into_iter().collect();
    m
}

type OpenPartition = (u64, String, Vec<(u64, u64)>);

fn push_partition(m: &mut Model, from: u64, to: u64, shape: String, blocked: Vec<(u64, u64)>) {
    let mut nodes: Vec<u64> = blocked.iter().flat_map(|&(a, b)| [a, b]).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if !nodes.is_empty() {
        m.partitions.push(Partition {
            from,
            to,
            shape,
            nodes,
            blocked,
        });
    }
}

fn fault_label(kind: &str, d: &Value) -> String {
    let file = d["file"].as_str().unwrap_or("");
    match kind {
        "fsync_error" => format!("fsync failed on {file}: unsynced data dropped"),
        "enospc" => format!("ENOSPC writing {file}"),
        "misdirected_write" => format!("write to {file} misdirected by {} bytes", d["shift_bytes"]),
        "read_corruption" => format!("bit rot in {file} at offset {}", d["offset"]),
        "latent_sector_error" => "latent sector error: the disk is unreadable".into(),
        "disk_wiped" => "disk wiped, restarted under its old id (operator mistake)".into(),
        other => other.replace('_', " "),
    }
}

const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
  body { font: 13px system-ui, sans-serif; margin: 16px; color: #222; }
  h1 { font-size: 18px; margin: 0 0 4px; }
  code { background: #f3f3f3; padding: 1px 4px; }
  .legend span { display: inline-block; margin-right: 14px; }
  .legend i { display: inline-block; width: 12px; height: 12px; vertical-align: -2px; margin-right: 4px; }
  svg text { font: 11px system-ui, sans-serif; }
  .role-leader { fill: #2f6fde; } .role-follower { fill: #b9d3f5; }
  .role-candidate, .role-pre_candidate { fill: #f2c14e; }
  .down { fill: #9a9a9a; opacity: .55; } .pause { fill: #8e44ad; opacity: .35; }
  .partition { fill: #e74c3c; opacity: .18; }
  .mark { stroke-width: 2; } .mark-crash { stroke: #111; stroke-width: 3; }
  .mark-start { stroke: #27ae60; } .mark-stopped { stroke: #c0392b; }
  .mark-snapshot_sent { stroke: #16a085; } .mark-snapshot_installed { stroke: #0e6655; stroke-dasharray: 3 2; }
  .mark-fsync_error, .mark-enospc, .mark-misdirected_write, .mark-read_corruption,
  .mark-latent_sector_error, .mark-disk_wiped { stroke: #d35400; stroke-width: 3; }
  .mark-mistake, .mark-membership { stroke: #7f8c8d; stroke-dasharray: 2 2; }
  .op-ok { fill: #27ae60; } .op-unknown { fill: #e67e22; }
  .violation { stroke: #e00; stroke-width: 3; }
  .calm { fill: #f4fff4; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<div id="summary"></div>
<div class="legend">
  <span><i class="role-leader" style="background:#2f6fde"></i>leader</span>
  <span><i style="background:#b9d3f5"></i>follower</span>
  <span><i style="background:#f2c14e"></i>candidate</span>
  <span><i style="background:#9a9a9a"></i>down</span>
  <span><i style="background:#d7b5e3"></i>paused</span>
  <span><i style="background:#f8d3cf"></i>partitioned</span>
  <span><i style="background:#111"></i>crash</span>
  <span><i style="background:#d35400"></i>disk fault</span>
  <span><i style="background:#16a085"></i>snapshot sent / installed</span>
  <span><i style="background:#27ae60"></i>operation ok</span>
  <span><i style="background:#e67e22"></i>outcome unknown</span>
  <span><i style="background:#e00"></i>violation</span>
</div>
<div id="chart"></div>
<script>
const DATA = __DATA__;
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const LANE = 26, CLIENT_LANE = 12, TOP = 30;
  const x = t => DATA.x0 + (t / DATA.end_ns) * DATA.plot_width;
  const nodeY = new Map(DATA.nodes.map((n, i) => [n, TOP + i * LANE]));
  const clientTop = TOP + DATA.nodes.length * LANE + 24;
  const clientY = new Map(DATA.clients.map((c, i) => [c, clientTop + i * CLIENT_LANE]));
  const height = clientTop + DATA.clients.length * CLIENT_LANE + 20;
  const width = DATA.x0 + DATA.plot_width + 20;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("data-x0", DATA.x0);
  svg.setAttribute("data-plot-width", DATA.plot_width);
  svg.setAttribute("data-end-ns", DATA.end_ns);
  function el(name, attrs, title, parent) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (title) {
      const t = document.createElementNS(NS, "title");
      t.textContent = title;
      e.appendChild(t);
    }
    (parent || svg).appendChild(e);
    return e;
  }
  function span(s, cls, y, h) {
    el("rect", { class: cls, x: x(s.from), y: y, width: Math.max(1, x(s.to) - x(s.from)), height: h,
                 "data-node": s.node, "data-t-ns": s.from, "data-to-ns": s.to }, s.label);
  }
  if (DATA.healed_ns != null) {
    el("rect", { class: "calm", x: x(DATA.healed_ns), y: TOP - 6,
                 width: x(DATA.end_ns) - x(DATA.healed_ns), height: height - TOP }, "faults off: healed");
  }
  for (let s = 0; s * 1e9 <= DATA.end_ns; s += Math.max(1, Math.round(DATA.end_ns / 1e9 / 15))) {
    el("line", { class: "tick", x1: x(s * 1e9), x2: x(s * 1e9), y1: TOP - 10, y2: height - 10,
                 stroke: "#eee" });
    el("text", { x: x(s * 1e9) - 4, y: TOP - 14 }).textContent = s + " s";
  }
  for (const [n, y] of nodeY) {
    el("text", { class: "lane-label", x: 8, y: y + 15 }).textContent = "node " + n;
    el("rect", { class: "lane", x: DATA.x0, y: y, width: DATA.plot_width, height: LANE - 6,
                 fill: "none", stroke: "#ddd", "data-node": n });
  }
  for (const r of DATA.roles) span(r, "role role-" + r.kind, nodeY.get(r.node) + 3, LANE - 12);
  for (const d of DATA.down) span(d, "down", nodeY.get(d.node), LANE - 6);
  for (const p of DATA.pauses) span(p, "pause", nodeY.get(p.node), LANE - 6);
  for (const p of DATA.partitions) {
    for (const n of p.nodes) {
      if (!nodeY.has(n)) continue;
      el("rect", { class: "partition", x: x(p.from), y: nodeY.get(n) - 2,
                   width: Math.max(1, x(p.to) - x(p.from)), height: LANE - 2, "data-node": n,
                   "data-t-ns": p.from, "data-to-ns": p.to },
         "partition (" + p.shape + "): " + p.blocked.map(b => b[0] + "\u2192" + b[1]).join(" "));
    }
  }
  for (const m of DATA.marks) {
    if (!nodeY.has(m.node)) continue;
    const y = nodeY.get(m.node);
    el("line", { class: "mark mark-" + m.kind, x1: x(m.t), x2: x(m.t), y1: y - 2, y2: y + LANE - 4,
                 "data-node": m.node, "data-t-ns": m.t }, m.label);
  }
  if (DATA.clients.length) {
    el("text", { x: 8, y: clientTop - 6 }).textContent = "clients";
  }
  for (const o of DATA.ops) {
    const to = o.to == null ? DATA.end_ns : o.to;
    el("rect", { class: "op " + (o.to == null ? "op-unknown" : "op-ok"), x: x(o.from),
                 y: clientY.get(o.client), width: Math.max(1, x(to) - x(o.from)),
                 height: CLIENT_LANE - 3, "data-t-ns": o.from }, o.label);
  }
  for (const v of DATA.violations) {
    el("line", { class: "violation", x1: x(v.t), x2: x(v.t), y1: TOP - 24, y2: height - 4,
                 "data-t-ns": v.t, "data-checker": v.checker },
       "[" + v.checker + "] " + v.detail + (v.after_run ? " (found by a checker of the finished run)" : ""));
    el("text", { class: "violation-label", x: x(v.t) + 4, y: TOP - 22, fill: "#e00" })
      .textContent = "[" + v.checker + "]";
  }
  document.getElementById("chart").appendChild(svg);
  const sum = document.getElementById("summary");
  const faults = DATA.marks.filter(m => m.kind === "crash").length;
  sum.innerHTML = "";
  const p = document.createElement("p");
  p.textContent = DATA.nodes.length + " nodes, " + DATA.clients.length + " clients, " +
    DATA.ops.length + " operations, " + faults + " crashes, " + DATA.partitions.length +
    " partitions, " + (DATA.end_ns / 1e9).toFixed(1) + " simulated seconds; " +
    (DATA.violations.length ? DATA.violations.length + " violation(s)" : "no violation") +
    ". Hover anything for details.";
  sum.appendChild(p);
  const code = document.createElement("code");
  code.textContent = DATA.repro;
  sum.appendChild(code);
})();
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: u64, node: u64, event: &str, detail: Value) -> String {
        serde_json::json!({"t_ns": t, "node": node, "event": event, "detail": detail}).to_string()
    }

    #[test]
    fn the_model_places_roles_crashes_partitions_and_violations_at_their_times() {
        let lines = vec![
            line(0, 1, "start", serde_json::json!({"incarnation": 1})),
            line(0, 2, "start", serde_json::json!({"incarnation": 1})),
            line(
                10,
                1,
                "event",
                serde_json::json!({"type": "role_changed", "term": 2, "role": "leader", "leader": 1}),
            ),
            line(
                20,
                0,
                "fault",
                serde_json::json!({"fault": "partition", "shape": "split", "blocked": [[1, 2], [2, 1]]}),
            ),
            line(
                30,
                1,
                "fault",
                serde_json::json!({"fault": "crash", "kind": "power_loss", "sectors_lost": 3, "io_in_flight": true, "disk_lost": false}),
            ),
            line(40, 0, "fault", serde_json::json!({"fault": "healed"})),
            line(50, 1, "start", serde_json::json!({"incarnation": 2})),
            line(
                60,
                0,
                "violation",
                serde_json::json!({"checker": "identity", "detail": "x"}),
            ),
        ];
        let violations = vec![
            ("identity".to_string(), "x".to_string()),
            ("linearizability".to_string(), "key k0".to_string()),
        ];
        let m = build(7, &lines, &violations, Value::Null, "repro");
        assert_eq!(m.end_ns, 60);
        assert_eq!(m.nodes, vec![1, 2]);
        assert_eq!(m.roles.len(), 1);
        assert_eq!((m.roles[0].from, m.roles[0].to), (10, 30));
        assert_eq!(m.down.len(), 1);
        assert_eq!((m.down[0].from, m.down[0].to), (30, 50));
        assert_eq!(m.partitions.len(), 1);
        assert_eq!((m.partitions[0].from, m.partitions[0].to), (20, 40));
        assert_eq!(m.partitions[0].nodes, vec![1, 2]);
        assert!(m.marks.iter().any(|k| k.kind == "crash" && k.t == 30));
        assert_eq!(m.violations.len(), 2);
        assert!(!m.violations[0].after_run && m.violations[0].t == 60);
        assert!(m.violations[1].after_run && m.violations[1].checker == "linearizability");
        let page = render(7, &lines, &violations, Value::Null, "repro </script>");
        assert!(page.contains("<\\/script>") && !page.contains("repro </script>"));
    }
}
