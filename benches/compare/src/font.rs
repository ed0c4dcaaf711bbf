//! DejaVu Sans (from the `dejavu` crate) registered with plotters as "sans-serif", so the chart
//! needs no system font.

use std::sync::OnceLock;

use plotters::style::{FontStyle, register_font};

pub fn ensure() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the bundled font is not valid".to_owned())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}
