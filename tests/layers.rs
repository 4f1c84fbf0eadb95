//! The layer order written at the top of `src/lib.rs`, enforced: no module uses a module of a
//! higher layer (test code aside, which may drive the whole program). A refactor that makes a
//! lower layer reach up fails here, naming the file and the line.

use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first, as `src/lib.rs` lists them.
const LAYERS: &[&[&str]] = &[
    &["error", "hash", "names"],
    &["config"],
    &["source"],
    &["plan"],
    &["live"],
    &["render"],
    &["explain"],
    &["state"],
    &["apply"],
    &["context"],
    &["daemon"],
    &["cli"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level modules `line` names through `crate::`, including `use crate::{a, b::c}`.
fn crate_refs(line: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                refs.push(name);
            }
        } else {
            refs.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    refs.retain(|r| !r.is_empty());
    refs
}

/// The upward uses in the non-test code of file `text`, which belongs to `module`.
fn violations(module: &str, text: &str) -> Vec<String> {
    let Some(own) = layer(module) else {
        return vec![format!(
            "module `{module}` is in no layer: add it to LAYERS and lib.rs"
        )];
    };
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        for used in crate_refs(code) {
            match layer(&used) {
                Some(l) if l > own => found.push(format!(
                    "line {}: `{module}` (layer {}) uses `{used}` (layer {})",
                    n + 1,
                    own + 1,
                    l + 1
                )),
                Some(_) => {}
                None => found.push(format!("line {}: `{used}` is in no layer", n + 1)),
            }
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Test-only files (`path` relative to `src/`): a `tests.rs` module or anything in a `tests/` folder, and the daemon's
/// namespace helper for unit tests.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name == "tests.rs" || name == "testns.rs" || path.components().any(|c| c.as_os_str() == "tests")
}

#[test]
fn no_module_uses_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&src).unwrap();
        if is_test_file(relative) {
            continue;
        }
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        for v in violations(&module, &fs::read_to_string(path).unwrap()) {
            found.push(format!("{}: {v}", relative.display()));
        }
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    assert!(found.is_empty(), "upward uses:\n{}", found.join("\n"));
}

#[test]
fn lib_rs_declares_the_layers_in_order() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    let expected: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    assert_eq!(declared, expected);
}

#[test]
fn the_checker_finds_an_upward_use() {
    let text = "use crate::error::Result;\nuse crate::{plan::Plan, daemon::run};\n";
    assert_eq!(
        violations("config", text),
        vec![
            "line 2: `config` (layer 2) uses `plan` (layer 4)",
            "line 2: `config` (layer 2) uses `daemon` (layer 11)"
        ]
    );
    assert!(violations("cli", text).is_empty());
    let tests_only =
        "use crate::error::Result;\n#[cfg(test)]\nmod tests { use crate::cli::run; }\n";
    assert!(violations("config", tests_only).is_empty());
}
