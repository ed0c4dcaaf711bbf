//! The report's charts.

use super::{Delays, LinkStress, Load};
use crate::report::{CdfChart, ReportWriter};

/// The delay, link stress and forwarding load CDFs.
pub(super) fn figures(
    w: &mut ReportWriter,
    d: &Delays,
    ls: &LinkStress,
    load: &Load,
) -> anyhow::Result<()> {
    let Delays {
        stretch, rad, rmd, ..
    } = d;
    let LinkStress {
        scribe_links,
        unicast_links,
        ..
    } = ls;
    let forwarders = &load.forwarders;
    w.cdf_chart(
        "delay_stretch_cdf.png",
        &CdfChart::new(
            "Delay stretch and delay penalties",
            "ratio to direct unicast",
            &[
                ("per delivery".into(), stretch.clone()),
                ("RAD per event".into(), rad.clone()),
                ("RMD per event".into(), rmd.clone()),
            ],
        )
        .clip_at(0.999),
    )?;
    w.cdf_chart(
        "link_stress_cdf.png",
        &CdfChart::new(
            "Copies of an event per physical link used",
            "copies",
            &[
                (
                    "Petal (Scribe trees)".into(),
                    scribe_links.iter().map(|&x| f64::from(x)).collect(),
                ),
                (
                    "naive unicast".into(),
                    unicast_links.iter().map(|&x| f64::from(x)).collect(),
                ),
            ],
        )
        // Naive unicast puts thousands of copies on a few links, most links carry a handful.
        .log_x(),
    )?;
    w.cdf_chart(
        "forwarding_load_cdf.png",
        &CdfChart::new(
            "Events forwarded per forwarding node",
            "events forwarded",
            &[(
                "nodes".into(),
                forwarders.iter().map(|&x| x as f64).collect(),
            )],
        )
        .log_x(),
    )?;
    Ok(())
}
