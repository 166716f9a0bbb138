//! Text datasets for BERT tickets, read from Debian packages installed by setup:
//!
//! - `wordnet-supersenses` (package `wordnet-base`): WordNet 3.0 noun definitions labelled with
//!   their lexicographer file, the noun "supersense" (Ciaramita & Johnson 2003); eight of the 25
//!   noun supersenses, chosen to be concrete and large: animal, artifact, body, food, location,
//!   person, plant, substance.
//! - `fortune-topics` (package `fortunes`): the quotations and jokes of six `fortune` topic files
//!   (computers, education, food, law, politics, science), labelled with their file, capped at the
//!   size of the smallest so that the classes are balanced.
//! - `wordnet-examples` (package `wordnet-base`): WordNet's usage examples (the quoted sentences
//!   of every gloss, all parts of speech), a corpus of short English sentences for masked
//!   language modelling.
//!
//! Each example's split and order come from a hash of its text (or synset offset), so every run
//! sees the same splits and a subset is a fair sample of the whole.

use std::path::{Path, PathBuf};

use crate::DataError;

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledText {
    /// The text.
    pub text: String,
    /// Index into the dataset's class names.
    pub label: usize,
}

/// What a text dataset holds.
#[derive(Debug, Clone, PartialEq)]
pub enum TextData {
    /// Sequence classification.
    Classification {
        /// Class names, in label order.
        classes: Vec<String>,
        /// Training examples, in a fixed pseudo-random order.
        train: Vec<LabelledText>,
        /// Test examples.
        test: Vec<LabelledText>,
    },
    /// A corpus for masked language modelling.
    Corpus {
        /// Training sentences, in a fixed pseudo-random order.
        train: Vec<String>,
        /// Held-out sentences.
        test: Vec<String>,
    },
}

impl TextData {
    /// Keeps the first `train` and `test` examples of each split (0 keeps all).
    pub fn truncate(&mut self, train: usize, test: usize) {
        fn cut<T>(v: &mut Vec<T>, n: usize) {
            if n > 0 {
                v.truncate(n);
            }
        }
        match self {
            TextData::Classification {
                train: a, test: b, ..
            } => {
                cut(a, train);
                cut(b, test);
            }
            TextData::Corpus { train: a, test: b } => {
                cut(a, train);
                cut(b, test);
            }
        }
    }

    /// Sizes of the training and test splits.
    pub fn sizes(&self) -> (usize, usize) {
        match self {
            TextData::Classification { train, test, .. } => (train.len(), test.len()),
            TextData::Corpus { train, test } => (train.len(), test.len()),
        }
    }
}

/// A registered text dataset.
pub struct TextDatasetEntry {
    /// Name used in configs (`data.name`).
    pub name: &'static str,
    /// One line for `lottery list`.
    pub summary: &'static str,
    /// Folder used when `data.root` is not set.
    pub default_root: &'static str,
    /// Loads it from a folder.
    pub load: fn(&Path) -> Result<TextData, DataError>,
}

inventory::collect!(TextDatasetEntry);

impl TextDatasetEntry {
    /// The folder to read: `root` when given, else the default.
    pub fn root(&self, root: Option<&Path>) -> PathBuf {
        root.map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(self.default_root))
    }
}

/// Registered text datasets sorted by name; fails on a duplicate name.
pub fn text_datasets() -> Result<Vec<&'static TextDatasetEntry>, String> {
    lottery_core::registry::sorted_unique(
        inventory::iter::<TextDatasetEntry>.into_iter().collect(),
        |e| e.name,
        "text dataset",
    )
}

/// The text dataset called `name`.
pub fn find_text_dataset(name: &str) -> Result<&'static TextDatasetEntry, String> {
    lottery_core::registry::find(&text_datasets()?, name, |e| e.name, "text dataset")
}

/// Where Debian's `wordnet-base` puts the WordNet database.
pub const WORDNET_ROOT: &str = "/usr/share/wordnet";
/// Where Debian's `fortunes` puts the fortune files.
pub const FORTUNES_ROOT: &str = "/usr/share/games/fortunes";

/// The noun supersenses of `wordnet-supersenses`: (lexicographer file number, name).
pub const SUPERSENSES: [(u32, &str); 8] = [
    (5, "noun.animal"),
    (6, "noun.artifact"),
    (8, "noun.body"),
    (13, "noun.food"),
    (15, "noun.location"),
    (18, "noun.person"),
    (20, "noun.plant"),
    (27, "noun.substance"),
];

/// The fortune files of `fortune-topics`, in label order.
pub const FORTUNE_TOPICS: [&str; 6] = [
    "computers",
    "education",
    "food",
    "law",
    "politics",
    "science",
];

inventory::submit! { TextDatasetEntry {
    name: "wordnet-supersenses",
    summary: "WordNet 3.0 noun definitions → 8 noun supersenses (Debian wordnet-base)",
    default_root: WORDNET_ROOT,
    load: wordnet_supersenses,
} }

inventory::submit! { TextDatasetEntry {
    name: "fortune-topics",
    summary: "fortune quotations and jokes → 6 topic files, balanced (Debian fortunes)",
    default_root: FORTUNES_ROOT,
    load: fortune_topics,
} }

inventory::submit! { TextDatasetEntry {
    name: "wordnet-examples",
    summary: "WordNet 3.0 usage examples, a corpus for masked language modelling (Debian wordnet-base)",
    default_root: WORDNET_ROOT,
    load: wordnet_examples,
} }

/// FNV-1a of a string: the fixed pseudo-random order and split of the examples.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Sorts by hash and sends one in five to the test split.
fn split_by_hash<T>(mut items: Vec<(u64, T)>) -> (Vec<T>, Vec<T>) {
    items.sort_by_key(|(h, _)| *h);
    let (mut train, mut test) = (vec![], vec![]);
    for (h, t) in items {
        if h % 5 == 0 {
            test.push(t);
        } else {
            train.push(t);
        }
    }
    (train, test)
}

fn read(path: &Path, hint: &str) -> Result<String, DataError> {
    if !path.exists() {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            hint: hint.into(),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        cause: source,
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

const WORDNET_HINT: &str = "install Debian's wordnet-base (scripts/setup.sh does)";

/// One synset line of a WordNet `data.*` file: offset, lexicographer file, gloss.
fn synset_line(line: &str) -> Option<(&str, u32, &str)> {
    if line.starts_with("  ") {
        return None; // the licence header
    }
    let (fields, gloss) = line.split_once(" | ")?;
    let mut f = fields.split(' ');
    let offset = f.next()?;
    let lex = f.next()?.parse().ok()?;
    Some((offset, lex, gloss.trim()))
}

/// Splits a gloss into its definition and its quoted usage examples.
fn gloss_parts(gloss: &str) -> (String, Vec<String>) {
    let mut definition = vec![];
    let mut examples = vec![];
    for part in gloss.split(';') {
        let p = part.trim();
        if let Some(q) = p.strip_prefix('"') {
            let e = q.split('"').next().unwrap_or("").trim();
            if !e.is_empty() {
                examples.push(e.to_string());
            }
        } else if examples.is_empty() && !p.is_empty() {
            definition.push(p);
        }
    }
    (definition.join("; "), examples)
}

/// `wordnet-supersenses` from `root/data.noun`.
pub fn wordnet_supersenses(root: &Path) -> Result<TextData, DataError> {
    let path = root.join("data.noun");
    let text = read(&path, WORDNET_HINT)?;
    let mut items = vec![];
    for line in text.lines() {
        let Some((offset, lex, gloss)) = synset_line(line) else {
            continue;
        };
        let Some(label) = SUPERSENSES.iter().position(|(l, _)| *l == lex) else {
            continue;
        };
        let (definition, _) = gloss_parts(gloss);
        if !definition.is_empty() {
            items.push((
                fnv(offset),
                LabelledText {
                    text: definition,
                    label,
                },
            ));
        }
    }
    if items.is_empty() {
        return Err(DataError::Format {
            path,
            why: "no synset of the eight noun supersenses".into(),
        });
    }
    let (train, test) = split_by_hash(items);
    Ok(TextData::Classification {
        classes: SUPERSENSES.iter().map(|(_, n)| n.to_string()).collect(),
        train,
        test,
    })
}

/// `wordnet-examples` from `root/data.{noun,verb,adj,adv}`.
pub fn wordnet_examples(root: &Path) -> Result<TextData, DataError> {
    let mut items = vec![];
    let mut seen = std::collections::HashSet::new();
    for pos in ["noun", "verb", "adj", "adv"] {
        let path = root.join(format!("data.{pos}"));
        let text = read(&path, WORDNET_HINT)?;
        for line in text.lines() {
            if let Some((_, _, gloss)) = synset_line(line) {
                for e in gloss_parts(gloss).1 {
                    if seen.insert(e.clone()) {
                        items.push((fnv(&e), e));
                    }
                }
            }
        }
    }
    let (train, test) = split_by_hash(items);
    Ok(TextData::Corpus { train, test })
}

/// The entries of one fortune file (separated by lines holding only `%`), whitespace collapsed.
pub fn fortune_entries(text: &str) -> Vec<String> {
    text.split("\n%\n")
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|e| !e.is_empty() && e != "%")
        .collect()
}

/// `fortune-topics` from the six topic files in `root`.
pub fn fortune_topics(root: &Path) -> Result<TextData, DataError> {
    let mut per_topic = vec![];
    for topic in FORTUNE_TOPICS {
        let path = root.join(topic);
        let text = read(&path, "install Debian's fortunes (scripts/setup.sh does)")?;
        let mut entries: Vec<(u64, String)> = fortune_entries(&text)
            .into_iter()
            .map(|e| (fnv(&e), e))
            .collect();
        entries.sort();
        entries.dedup_by(|a, b| a.1 == b.1);
        per_topic.push(entries);
    }
    let cap = per_topic.iter().map(Vec::len).min().unwrap_or(0);
    let items = per_topic
        .into_iter()
        .enumerate()
        .flat_map(|(label, entries)| {
            entries
                .into_iter()
                .take(cap)
                .map(move |(h, text)| (h, LabelledText { text, label }))
        })
        .collect();
    let (train, test) = split_by_hash(items);
    Ok(TextData::Classification {
        classes: FORTUNE_TOPICS.iter().map(|t| t.to_string()).collect(),
        train,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gloss_splits_definition_from_examples() {
        let (d, e) = gloss_parts(
            "a domesticated carnivorous mammal; occurs in many breeds; \"the dog barked all night\"",
        );
        assert_eq!(
            d,
            "a domesticated carnivorous mammal; occurs in many breeds"
        );
        assert_eq!(e, vec!["the dog barked all night".to_string()]);
    }

    #[test]
    fn fortune_files_split_on_percent_lines() {
        let e = fortune_entries("First one\n  spans lines.\n%\nSecond.\n%\n");
        assert_eq!(e, vec!["First one spans lines.", "Second."]);
    }

    #[test]
    fn supersenses_read_from_a_data_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("data.noun"),
            "  1 This software and database is being provided\n\
             02084071 05 n 01 dog 0 000 | a member of the genus Canis; \"the dog barked\"\n\
             02958343 06 n 01 car 0 000 | a motor vehicle with four wheels\n\
             00001740 03 n 01 entity 0 000 | that which is perceived\n",
        )
        .unwrap();
        let TextData::Classification {
            classes,
            train,
            test,
        } = wordnet_supersenses(dir.path()).unwrap()
        else {
            panic!("a classification set")
        };
        assert_eq!(classes.len(), 8);
        let mut all: Vec<_> = train.into_iter().chain(test).collect();
        all.sort_by_key(|t| t.label);
        assert_eq!(
            all,
            vec![
                LabelledText {
                    text: "a member of the genus Canis".into(),
                    label: 0
                },
                LabelledText {
                    text: "a motor vehicle with four wheels".into(),
                    label: 1
                },
            ]
        );
    }

    #[test]
    fn a_missing_package_names_the_file_and_the_fix() {
        let e = fortune_topics(Path::new("/nonexistent")).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("/nonexistent/computers") && s.contains("fortunes"),
            "{s}"
        );
    }
}
