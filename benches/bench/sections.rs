//! The added sections of the bench, in the order BENCH.md shows them.
//!
//! A feature that brings figures of its own adds a module with
//! `pub fn measure(options: &Options) -> Section` and one line to [`ALL`]; the smoke run
//! measures it too, so it cannot rot. `--only KEY` runs just that section while working on it.

use crate::Options;
use crate::report::Section;

type Measure = fn(&Options) -> Section;

/// Every added section: its key and how to measure it.
const ALL: &[(&str, Measure)] = &[
    ("ipv6", crate::ipv6::measure),
    ("classes", crate::classes::measure),
    ("hitless", crate::hitless::measure),
];

/// The keys `--only` accepts.
pub fn keys() -> Vec<&'static str> {
    ALL.iter().map(|(key, _)| *key).collect()
}

/// Measures the sections `wanted` selects, in order.
pub fn run(options: &Options, wanted: impl Fn(&str) -> bool) -> Vec<Section> {
    ALL.iter()
        .filter(|(key, _)| wanted(key))
        .map(|(key, measure)| {
            crate::check_interrupted();
            eprintln!("bench: {key}");
            let section = measure(options);
            assert_eq!(section.key, *key, "section measured under another key");
            section
        })
        .collect()
}
