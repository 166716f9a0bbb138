//! The claims report: one row per claim of a paper, with the paper's setting and figure, the
//! figure the runs in the results store give, a verdict and the command that reproduces it.
//!
//! Claims are data ([`spec`]: a TOML file of `[[claim]]` tables, each naming the configs whose
//! runs test it and a comparison of measured figures); [`evaluate`] reads the runs and decides
//! each verdict; [`render`] writes the report as Markdown. Nothing in the report is typed by
//! hand but the papers' side.

pub mod evaluate;
pub mod render;
pub mod spec;

pub use evaluate::{Evaluated, Figure, StudyLine, Verdict, evaluate, studies};
pub use render::{DEFAULT_SPEC, render_markdown};
pub use spec::{Claim, ClaimsError, ClaimsFile, Measure, Reading, Test};
