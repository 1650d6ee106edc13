//! The dependency rule, checked: every `crate::` path in every source file points to a lower layer than the module
//! it is written in (docs/architecture.md). Within a module, its own files may use each other.

use std::collections::BTreeSet;
use std::path::Path;

/// The layer of each top-level module, lowest first. A module may use only modules of a lower number.
const LAYERS: &[(&str, u8)] = &[
    ("contract", 0),
    ("pgclient", 1),
    ("awsclient", 1),
    ("rds", 2),
    ("executions", 2),
    ("stage", 2),
    ("events", 3),
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

/// Collects every path a file's code names: `use` trees (groups and nesting flattened), paths in expressions, types
/// and patterns, and `crate::`/`super::` paths inside macro invocations; each with the inline-module depth it is
/// written at (a `super` inside `mod tests` names the file's own module).
#[derive(Default)]
struct Paths {
    depth: usize,
    found: Vec<(usize, Vec<String>)>,
}

impl Paths {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t)),
            syn::UseTree::Name(n) => self.push(prefix, &n.ident),
            syn::UseTree::Rename(r) => self.push(prefix, &r.ident),
            syn::UseTree::Glob(_) => self.found.push((self.depth, prefix.clone())),
        }
    }

    fn push(&mut self, prefix: &[String], last: &proc_macro2::Ident) {
        let mut p = prefix.to_vec();
        p.push(last.to_string());
        self.found.push((self.depth, p));
    }

    /// `crate :: a` and `super :: … :: a` sequences in a macro's tokens (its arguments are not parsed as Rust).
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let flat: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
        let mut path: Vec<String> = Vec::new();
        for t in &flat {
            match t {
                proc_macro2::TokenTree::Group(g) => {
                    self.flush(&mut path);
                    self.tokens(g.stream());
                }
                proc_macro2::TokenTree::Ident(i) => {
                    let name = i.to_string();
                    if path.is_empty() && name != "crate" && name != "super" {
                        continue;
                    }
                    path.push(name);
                }
                proc_macro2::TokenTree::Punct(p) if p.as_char() == ':' && !path.is_empty() => {}
                _ => self.flush(&mut path),
            }
        }
        self.flush(&mut path);
    }

    fn flush(&mut self, path: &mut Vec<String>) {
        if path.len() > 1 {
            self.found.push((self.depth, std::mem::take(path)));
        }
        path.clear();
    }
}

impl<'ast> syn::visit::Visit<'ast> for Paths {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.found.push((self.depth, segments));
        syn::visit::visit_path(self, p);
    }
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.depth += 1;
        syn::visit::visit_item_mod(self, m);
        self.depth -= 1;
    }
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// The top-level module a path names, read from a file whose module path is `module` (`load/verify.rs`:
/// `["load", "verify"]`), at inline depth `depth`: `crate::x::…` is `x`; `super::…` climbs from the module; a path
/// that names no module of the crate (a local item, another crate) is `None`.
fn top_module(module: &[String], depth: usize, path: &[String]) -> Option<String> {
    match path.first().map(String::as_str) {
        Some("crate") => path.get(1).cloned(),
        Some("super") => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let here = module.len() + depth;
            let level = here.checked_sub(ups)?;
            match level {
                0 => path.get(ups).cloned(),
                _ => module.first().cloned(),
            }
        }
        _ => None,
    }
}

/// The top-level modules a file's code (comments aside) names through `crate::` or `super::`.
fn uses(module: &[String], text: &str) -> BTreeSet<String> {
    let file = syn::parse_file(text).expect("a source file that parses");
    let mut v = Paths::default();
    syn::visit::Visit::visit_file(&mut v, &file);
    v.found
        .iter()
        .filter_map(|(depth, p)| top_module(module, *depth, p))
        .filter(|m| m != "self")
        .collect()
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
        if module == "lib" || module == "layers" || module == "sizes" {
            continue;
        }
        let here = layer(&module).unwrap_or_else(|| panic!("{module} (in {}) has no layer in LAYERS", rel.display()));
        let text = std::fs::read_to_string(&path).expect("source file");
        for used in uses(&module_path(rel), &text) {
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

/// A file's module path: `load/verify.rs` is `["load", "verify"]`, `load/mod.rs` is `["load"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut out: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if out.last().is_some_and(|l| l == "mod") {
        out.pop();
    }
    out
}

#[test]
fn the_checker_sees_plain_grouped_multi_line_super_and_macro_paths() {
    let text =
        "use crate::contract::model::TableRef;\nuse crate::{\n    plan,\n    stage::{\n        Stage,\n    },\n};\n\
        fn f() { crate::load::x(); } // crate::entry\nfn g() { tracing::info!(a = %crate::report::y()); }\n\
        use super::super::sweep::Z;\nmod tests { use super::super::Q; }\n";
    let got: Vec<String> = uses(&["load".into(), "verify".into()], text).into_iter().collect();
    // `super::super` from load/verify.rs is the crate root; from `mod tests` inside it, `super::super` is `load`.
    assert_eq!(got, ["contract", "load", "plan", "report", "stage", "sweep"]);
    let from_mod: Vec<String> = uses(&["load".into()], "use super::entry::X;\nuse super::Y;")
        .into_iter()
        .collect();
    assert_eq!(from_mod, ["Y", "entry"]);
}

/// Every top-level module says its layer in the first words of its header (`//! Layer N, …`), as this list does, so
/// the map in the headers, in docs/architecture.md and in the test is one.
#[test]
fn every_module_header_names_its_layer_as_the_test_ranks_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let doc = std::fs::read_to_string(root.join("../../../docs/architecture.md")).expect("docs/architecture.md");
    for (module, rank) in LAYERS {
        let file = [root.join(module).join("mod.rs"), root.join(format!("{module}.rs"))]
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{module} has no file"));
        let text = std::fs::read_to_string(&file).expect("source file");
        let want = format!("//! Layer {rank}, ");
        assert!(text.starts_with(&want), "{} starts with {want:?}", file.display());
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| {rank} |")))
            .unwrap_or_else(|| panic!("docs/architecture.md has a row for layer {rank}"));
        assert!(
            row.contains(&format!("`{module}`")),
            "docs/architecture.md puts {module} in layer {rank}: {row}"
        );
    }
}
