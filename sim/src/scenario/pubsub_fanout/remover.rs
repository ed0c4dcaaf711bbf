//! The bottleneck remover's effect: the same scenario with the configured child cap and with
//! none, side by side (delay penalties, link stress, children per node, forwarding load).

use serde_json::json;

use super::{Delays, Load, Measured, delays, link_stress, q};
use crate::engine::Sim;
use crate::report::ReportWriter;

/// The figures compared with and without the cap.
pub(super) struct Figures {
    rad50: f64,
    rad_mean: f64,
    rmd50: f64,
    stretch50: f64,
    link_stress_max: u32,
    link_stress_mean: f64,
    /// Most children any node holds in any tree at the snapshot.
    pub(super) max_children: usize,
    fwd_max: u64,
    fwd_p99: f64,
    depth_mean: f64,
    depth_max: u32,
    /// Subscribers whose parent chain loops at the snapshot.
    pub(super) cycles: u64,
    redirects: u64,
    fostered: u64,
    cycles_refused: u64,
}

impl Figures {
    pub(super) fn new(sim: &Sim, m: &Measured) -> Self {
        let d: Delays = delays(sim, m);
        let ls = link_stress(sim);
        let load = Load::new(m);
        let fwd: Vec<f64> = load.forwarders.iter().map(|&x| x as f64).collect();
        let mut fwd_sorted = fwd.clone();
        fwd_sorted.sort_by(f64::total_cmp);
        let stats = (0..crate::count_u32(sim.node_count())).map(|i| sim.node(i).stats());
        let (mut redirects, mut fostered, mut cycles_refused) = (0, 0, 0);
        for s in stats {
            redirects += s.group_redirects_sent;
            fostered += s.group_fostered;
            cycles_refused += s.group_cycles_refused;
        }
        Self {
            rad50: q(&d.rad, 0.5),
            rad_mean: d.rad.iter().sum::<f64>() / d.rad.len().max(1) as f64,
            rmd50: q(&d.rmd, 0.5),
            stretch50: q(&d.stretch, 0.5),
            link_stress_max: ls.scribe_links.iter().max().copied().unwrap_or(0),
            link_stress_mean: super::mean_u32(&ls.scribe_links),
            max_children: m.shape.max_children,
            fwd_max: load.fwd_sorted.last().copied().unwrap_or(0),
            fwd_p99: q(&fwd_sorted, 0.99),
            depth_mean: load.depths.iter().map(|&x| f64::from(x)).sum::<f64>()
                / load.depths.len().max(1) as f64,
            depth_max: load.depths.last().copied().unwrap_or(0),
            cycles: m.shape.ends[super::ChainEnd::Cycle as usize],
            redirects,
            fostered,
            cycles_refused,
        }
    }

    fn row(&self) -> Vec<(&'static str, String)> {
        vec![
            ("median RAD", format!("{:.2}", self.rad50)),
            ("mean RAD", format!("{:.2}", self.rad_mean)),
            ("median RMD", format!("{:.2}", self.rmd50)),
            ("median delay stretch", format!("{:.2}", self.stretch50)),
            (
                "link stress, mean / max",
                format!("{:.2} / {}", self.link_stress_mean, self.link_stress_max),
            ),
            (
                "most children of a node in a tree",
                self.max_children.to_string(),
            ),
            (
                "events forwarded per forwarding node, p99 / max",
                format!("{:.0} / {}", self.fwd_p99, self.fwd_max),
            ),
            (
                "subscribers' tree depth, mean / max",
                format!("{:.2} / {}", self.depth_mean, self.depth_max),
            ),
            (
                "children redirected by full parents",
                self.redirects.to_string(),
            ),
            (
                "grafts on a sibling after a redirect",
                self.fostered.to_string(),
            ),
            (
                "grafts refused or siblings left as cycles",
                self.cycles_refused.to_string(),
            ),
            ("parent chains in a cycle", self.cycles.to_string()),
        ]
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "rad_p50": self.rad50, "rad_mean": self.rad_mean, "rmd_p50": self.rmd50,
            "delay_stretch_p50": self.stretch50,
            "link_stress_mean": self.link_stress_mean, "link_stress_max": self.link_stress_max,
            "max_children": self.max_children,
            "forwarded_p99": self.fwd_p99, "forwarded_max": self.fwd_max,
            "depth_mean": self.depth_mean, "depth_max": self.depth_max,
            "redirects": self.redirects, "fostered": self.fostered,
            "cycles_refused": self.cycles_refused, "tree_loops": self.cycles,
        })
    }
}

/// The side-by-side table (or the capped run's figures alone).
pub(super) fn section(
    w: &mut ReportWriter,
    cap: usize,
    capped: &Figures,
    uncapped: Option<&Figures>,
) {
    w.subheading("Bottleneck remover");
    w.paragraph(&format!(
        "A node holds at most {cap} children in one tree (`max_group_children`): a graft beyond \
         that drops the child farthest away (by the node's measured round trips), which probes the \
         siblings it is sent and grafts on the one with the shortest path back (its round trip to \
         the sibling plus the sibling's to the parent). Subtree heights travel with the grafts, so \
         that a cycle of parents (a sibling that came below the child when a route moved) is found \
         and cut: the child goes back to its next hop.{}",
        if uncapped.is_some() {
            " The same scenario, same seed, with no cap:"
        } else {
            ""
        }
    ));
    let rows: Vec<Vec<String>> = match uncapped {
        Some(u) => capped
            .row()
            .into_iter()
            .zip(u.row())
            .map(|((name, c), (_, n))| vec![name.to_string(), n, c])
            .collect(),
        None => capped
            .row()
            .into_iter()
            .map(|(name, c)| vec![name.to_string(), c])
            .collect(),
    };
    let cap_col = format!("cap {cap}");
    if uncapped.is_some() {
        w.table(&["figure", "no cap", &cap_col], &rows);
    } else {
        w.table(&["figure", &cap_col], &rows);
    }
}

pub(super) fn json(capped: &Figures, uncapped: Option<&Figures>) -> serde_json::Value {
    json!({ "capped": capped.json(), "uncapped": uncapped.map(Figures::json) })
}
