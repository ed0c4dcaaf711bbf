//! The bundled font: DejaVu Sans registered with plotters' `ab_glyph` text backend.
//!
//! plotters looks fonts up by family name in a process-wide table. Registering the DejaVu faces
//! that the `dejavu` crate embeds, under the generic name `"sans-serif"`, makes every chart
//! render its text with no system font and no fontconfig, identically on every machine.

use std::sync::OnceLock;

use plotters::style::{FontStyle, register_font};

/// The family name charts ask for; [`ensure_fonts`] registers DejaVu Sans under it.
pub(crate) const FAMILY: &str = "sans-serif";

/// Registers DejaVu Sans (regular and bold) under [`FAMILY`], once per process.
///
/// Later calls return the outcome of the first one without registering again.
pub(crate) fn ensure_fonts() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let faces = [
                (FontStyle::Normal, dejavu::sans::regular()),
                (FontStyle::Bold, dejavu::sans::bold()),
            ];
            for (style, bytes) in faces {
                register_font(FAMILY, style, bytes).map_err(|_| {
                    format!(
                        "the bundled DejaVu Sans ({}) is not a valid font",
                        style.as_str()
                    )
                })?;
            }
            Ok(())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}
