//! The dependency rule, checked: every `crate::` path in every source file points to a lower layer than the module
//! it is written in (docs/architecture.md). Within a module, its own files may use each other.

use std::collections::BTreeSet;
use std::path::Path;

/// The layer of each top-level module, lowest first. A module may use only modules of a lower number.
const LAYERS: &[(&str, u8)] = &[
    ("contract", 0),
    ("pgclient", 1),
    ("awsclient", 1),
    ("rds", 1),
    ("executions", 1),
    ("stage", 2),
    ("source", 3),
    ("warehouse", 3),
    ("plan", 4),
    ("extract", 4),
    ("load", 4),
    ("report", 4),
    ("sweep", 4),
    ("entry", 5),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level modules a file's code (comments aside) names through `crate::`.
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
        // `use crate::{a, b}` groups.
        if let Some(group) = code.trim_start().strip_prefix("use crate::{") {
            for part in group.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if layer(part).is_some() {
                    out.insert(part.to_string());
                }
            }
        }
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_dependency_points_to_a_lower_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for path in all {
        let rel = path.strip_prefix(&root).expect("under src");
        let first = rel.components().next().expect("a path");
        let module = first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "layers" {
            continue;
        }
        let here = layer(&module).unwrap_or_else(|| panic!("{module} (in {}) has no layer in LAYERS", rel.display()));
        let text = std::fs::read_to_string(&path).expect("source file");
        for used in uses(&text) {
            checked += 1;
            if used == module {
                continue;
            }
            match layer(&used) {
                Some(l) if l < here => {}
                Some(l) => wrong.push(format!(
                    "{} (layer {here}) uses crate::{used} (layer {l})",
                    rel.display()
                )),
                None => wrong.push(format!("{} uses crate::{used}, which has no layer", rel.display())),
            }
        }
    }
    assert!(checked > 50, "the sources were read ({checked} uses)");
    assert!(
        wrong.is_empty(),
        "dependencies that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_plain_grouped_and_inline_paths() {
    let text = "use crate::contract::model::TableRef;\nuse crate::{plan, stage::Stage};\nfn f() { crate::load::x(); } // crate::entry\n";
    let got: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(got, ["contract", "load", "plan", "stage"]);
}
