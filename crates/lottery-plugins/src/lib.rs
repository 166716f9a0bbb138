//! Links every method plugin. A crate that nothing references is not linked and its `inventory`
//! registration silently vanishes, so each plugin under `plugins/` is named here once; a test
//! checks that every plugin crate of the workspace is registered.
//!
//! To add a method: create `plugins/lottery-<name>/`, add it to `[workspace.dependencies]` and to
//! this crate's dependencies, and add one `use` line below.

use lottery_bert_tickets as _;
use lottery_early_bird as _;
use lottery_edge_popup as _;
use lottery_gcn_tickets as _;
use lottery_gem_miner as _;
use lottery_graph_magnitude as _;
use lottery_graph_random as _;
use lottery_grasp as _;
use lottery_imp as _;
use lottery_magnitude as _;
use lottery_random as _;
use lottery_snip as _;
use lottery_synflow as _;
use lottery_ugs as _;

/// Forces this crate (and so every plugin) to be linked; call it once at start-up.
pub fn link() {}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn every_plugin_crate_is_registered() {
        super::link();
        let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
        let registered: Vec<&str> = lottery_core::plugin::pruners()
            .unwrap()
            .iter()
            .map(|e| e.name)
            .collect();
        let mut found = 0;
        for dir in std::fs::read_dir(&plugins).unwrap() {
            let dir = dir.unwrap().path();
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
            // The name a plugin registers is the first string literal of its PrunerEntry::new call.
            let at = lib
                .find("PrunerEntry::new")
                .unwrap_or_else(|| panic!("{} registers no PrunerEntry", dir.display()));
            let name = lib[at..].split('"').nth(1).unwrap();
            assert!(
                registered.contains(&name),
                "plugin {} ({name}) is not linked: add it to lottery-plugins",
                dir.display()
            );
            let crate_name = manifest.lines().find(|l| l.starts_with("name")).unwrap();
            assert!(crate_name.contains("lottery-"), "{crate_name}");
            found += 1;
        }
        assert!(found >= 5);
    }

    #[test]
    fn registry_is_sorted_and_every_default_builds() {
        let all = lottery_core::plugin::pruners().unwrap();
        let names: Vec<&str> = all.iter().map(|e| e.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for e in all {
            let defaults = (e.default_options)();
            let text = toml::to_string(&defaults).unwrap();
            let back: toml::Table = toml::from_str(&text).unwrap();
            assert!((e.build)(&back).is_ok(), "{}", e.name);
            let mut bad = back.clone();
            bad.insert("no_such_option".into(), toml::Value::Integer(1));
            assert!((e.build)(&bad).is_err(), "{} accepts unknown keys", e.name);
        }
    }
}
