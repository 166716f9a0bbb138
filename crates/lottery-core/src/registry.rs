//! Helpers shared by the method, model and dataset registries: sorting by name (inventory's order is
//! unspecified), rejecting duplicates, and lookup with the list of known names in the error.

/// Sorts `entries` by name and fails on a duplicate name.
pub fn sorted_unique<T>(
    mut entries: Vec<&'static T>,
    name: fn(&T) -> &'static str,
    what: &str,
) -> Result<Vec<&'static T>, String> {
    entries.sort_by_key(|e| name(e));
    for w in entries.windows(2) {
        if name(w[0]) == name(w[1]) {
            return Err(format!(
                "two {what}s are registered under the name `{}`",
                name(w[0])
            ));
        }
    }
    Ok(entries)
}

/// Finds the entry called `wanted`, or says which names exist.
pub fn find<T>(
    entries: &[&'static T],
    wanted: &str,
    name: fn(&T) -> &'static str,
    what: &str,
) -> Result<&'static T, String> {
    entries
        .iter()
        .copied()
        .find(|e| name(e) == wanted)
        .ok_or_else(|| {
            let known: Vec<&str> = entries.iter().map(|e| name(e)).collect();
            format!("unknown {what} `{wanted}`; known: {}", known.join(", "))
        })
}
