//! Figures per round, and what is printed and saved from them: medians over
//! rounds, ratios to direct and between targets taken per round (the targets
//! of one round ran back to back, so a ratio cancels most of the drift of a
//! busy machine), and the spread over rounds as the noise figure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// More is better (rates, throughput).
    Higher,
    /// Less is better (times, memory).
    Lower,
}

/// One measured quantity of one scenario, per target and round.
pub struct Row {
    /// Scenario id, e.g. `connrate_c1`.
    pub scenario: String,
    /// Metric id, e.g. `conns_per_s`.
    pub metric: String,
    /// Human title.
    pub title: String,
    /// Unit.
    pub unit: String,
    /// Which way is better.
    pub better: Better,
    /// Target label → value per round.
    pub values: BTreeMap<String, Vec<Option<f64>>>,
}

/// Every row, in the order first recorded.
pub struct Report {
    rounds: usize,
    /// Target labels in column order.
    pub labels: Vec<String>,
    /// The rows.
    pub rows: Vec<Row>,
}

/// What a row says about one target.
pub struct Cell {
    /// Median over rounds.
    pub median: f64,
    /// (max - min) / median over rounds.
    pub spread: f64,
    /// Median over rounds of value / direct's value in the same round.
    pub to_direct: Option<f64>,
    /// Median over rounds of value - direct's value (time metrics).
    pub over_direct: Option<f64>,
}

impl Report {
    /// An empty report for `rounds` rounds and these column labels.
    pub fn new(rounds: usize, labels: Vec<String>) -> Self {
        Self {
            rounds,
            labels,
            rows: Vec::new(),
        }
    }

    /// Record `value` for `label` in `round` of row (`scenario`, `metric`).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        scenario: &str,
        metric: &str,
        title: &str,
        unit: &str,
        better: Better,
        label: &str,
        round: usize,
        value: f64,
    ) {
        let index = match self
            .rows
            .iter()
            .position(|r| r.scenario == scenario && r.metric == metric)
        {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    scenario: scenario.into(),
                    metric: metric.into(),
                    title: title.into(),
                    unit: unit.into(),
                    better,
                    values: BTreeMap::new(),
                });
                self.rows.len() - 1
            }
        };
        let rounds = self.rounds;
        let values = self.rows[index]
            .values
            .entry(label.into())
            .or_insert_with(|| vec![None; rounds]);
        values[round] = Some(value);
    }

    /// The summary of `label` in `row`.
    pub fn cell(&self, row: &Row, label: &str) -> Option<Cell> {
        let values = row.values.get(label)?;
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        if present.is_empty() {
            return None;
        }
        let m = median(&present);
        let (lo, hi) = present
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let direct = row.values.get("direct");
        let paired = |f: &dyn Fn(f64, f64) -> f64| -> Option<f64> {
            let direct = direct?;
            let pairs: Vec<f64> = values
                .iter()
                .zip(direct)
                .filter_map(|(v, d)| Some(f((*v)?, (*d)?)))
                .filter(|x| x.is_finite())
                .collect();
            (!pairs.is_empty() && label != "direct").then(|| median(&pairs))
        };
        Some(Cell {
            median: m,
            spread: if m != 0.0 { (hi - lo) / m.abs() } else { 0.0 },
            to_direct: paired(&|v, d| v / d),
            over_direct: if row.unit == "µs" { paired(&|v, d| v - d) } else { None },
        })
    }

    /// Median over rounds of `a`'s value / `b`'s value in the same round.
    pub fn ratio(&self, row: &Row, a: &str, b: &str) -> Option<f64> {
        let (va, vb) = (row.values.get(a)?, row.values.get(b)?);
        let pairs: Vec<f64> = va
            .iter()
            .zip(vb)
            .filter_map(|(x, y)| Some((*x)? / (*y)?))
            .filter(|x| x.is_finite())
            .collect();
        (!pairs.is_empty()).then(|| median(&pairs))
    }

    /// The rows as JSON.
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut targets = serde_json::Map::new();
                for label in row.values.keys() {
                    let Some(cell) = self.cell(row, label) else { continue };
                    let mut ratios = serde_json::Map::new();
                    for other in row.values.keys().filter(|o| *o != label) {
                        if let Some(r) = self.ratio(row, label, other) {
                            ratios.insert(other.clone(), json!(r));
                        }
                    }
                    targets.insert(
                        label.clone(),
                        json!({
                            "rounds": row.values[label],
                            "median": cell.median,
                            "spread": cell.spread,
                            "ratio_to_direct": cell.to_direct,
                            "added_over_direct": cell.over_direct,
                            "ratio_to": ratios,
                        }),
                    );
                }
                json!({
                    "scenario": row.scenario,
                    "metric": row.metric,
                    "title": row.title,
                    "unit": row.unit,
                    "better": match row.better { Better::Higher => "higher", Better::Lower => "lower" },
                    "targets": targets,
                })
            })
            .collect();
        Value::Array(rows)
    }

    /// The three text tables: absolute with ratio to direct; sni-router ÷
    /// each peer; spread over rounds.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let labels: Vec<&String> = self
            .labels
            .iter()
            .filter(|l| self.rows.iter().any(|r| r.values.contains_key(*l)))
            .collect();
        let head = |out: &mut String, first: &str, cols: &[&String]| {
            let _ = write!(out, "| {first} |");
            for l in cols {
                let _ = write!(out, " {l} |");
            }
            out.push('\n');
            out.push_str("|---|");
            for _ in cols {
                out.push_str("---:|");
            }
            out.push('\n');
        };

        out.push_str("Median over rounds; in brackets the median of per-round ratios to direct ");
        out.push_str("(and, for times, the added µs over direct).\n\n");
        head(&mut out, "scenario · metric", &labels);
        for row in &self.rows {
            let _ = write!(out, "| {} ({}) |", row.title, row.unit);
            for l in &labels {
                let text = match self.cell(row, l) {
                    None => "–".to_string(),
                    Some(c) => {
                        let mut t = fmt(c.median);
                        match (c.to_direct, c.over_direct) {
                            (Some(r), Some(a)) => {
                                let _ = write!(t, " ({r:.2}×, {a:+.1})");
                            }
                            (Some(r), None) => {
                                let _ = write!(t, " ({r:.2}×)");
                            }
                            _ => {}
                        }
                        t
                    }
                };
                let _ = write!(out, " {text} |");
            }
            out.push('\n');
        }

        for me in ["sni-router", "sni-router-quiet", "sni-router-busy", "sni-router-b"] {
            if !labels.iter().any(|l| l.as_str() == me) {
                continue;
            }
            let peers: Vec<&String> = labels
                .iter()
                .copied()
                // The peers, and for sni-router also the A/B build when there is one.
                .filter(|l| {
                    let peer = !l.starts_with("sni-router") && l.as_str() != "direct" && l.as_str() != "floor";
                    peer || (me == "sni-router" && l.as_str() == "sni-router-b")
                })
                .collect();
            if peers.is_empty() {
                continue;
            }
            let _ = write!(
                out,
                "\n{me} ÷ peer (median of per-round ratios; ✓ where {me} is better):\n\n"
            );
            head(&mut out, "scenario · metric", &peers);
            for row in &self.rows {
                let _ = write!(out, "| {} ({}) |", row.title, row.unit);
                for peer in &peers {
                    let text = match self.ratio(row, me, peer) {
                        None => "–".to_string(),
                        Some(r) => {
                            let wins = match row.better {
                                Better::Higher => r >= 1.0,
                                Better::Lower => r <= 1.0,
                            };
                            format!("{r:.2}×{}", if wins { " ✓" } else { "" })
                        }
                    };
                    let _ = write!(out, " {text} |");
                }
                out.push('\n');
            }
        }

        out.push_str("\nNoise: spread over rounds, (max − min) / median:\n\n");
        head(&mut out, "scenario · metric", &labels);
        for row in &self.rows {
            let _ = write!(out, "| {} |", row.title);
            for l in &labels {
                let text = self
                    .cell(row, l)
                    .map_or("–".to_string(), |c| format!("{:.0} %", c.spread * 100.0));
                let _ = write!(out, " {text} |");
            }
            out.push('\n');
        }
        out
    }
}

/// Median of a non-empty slice.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile `p` (0–100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A figure with as many decimals as it deserves.
pub fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
