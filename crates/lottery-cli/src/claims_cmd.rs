//! `lottery claims`: the claims report over the results store.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Arguments of `lottery claims`.
#[derive(clap::Args)]
pub(crate) struct ClaimsArgs {
    /// The claims file: each paper's claims and the runs that test them.
    #[arg(long, default_value = lottery_claims::DEFAULT_SPEC)]
    spec: PathBuf,
    /// Results root.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// The report (default: <results>/CLAIMS.md); written only when every claim is evaluated.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Evaluate this claim alone and print its row (repeatable); nothing is written.
    #[arg(long = "claim", value_name = "ID")]
    only: Vec<String>,
}

/// Evaluates the claims file over the store; prints the report and, for all claims, writes it.
pub(crate) fn claims(a: ClaimsArgs) -> Result<()> {
    let file = lottery_claims::spec::load(&a.spec)?;
    for id in &a.only {
        if !file.claim.iter().any(|c| &c.id == id) {
            let ids: Vec<&str> = file.claim.iter().map(|c| c.id.as_str()).collect();
            bail!(
                "--claim {id}: {} has no such claim; its ids: {}",
                a.spec.display(),
                ids.join(", ")
            );
        }
    }
    let evaluated = lottery_claims::evaluate(&a.results, &file.claim, &a.only)?;
    let studies = lottery_claims::studies(&a.results, &evaluated)?;
    let report =
        lottery_claims::render_markdown(&a.spec.display().to_string(), &evaluated, &studies);
    print!("{report}");
    if a.only.is_empty() {
        let out = a.out.unwrap_or_else(|| a.results.join("CLAIMS.md"));
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        lottery_core::fsutil::write_atomic(&out, report.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
