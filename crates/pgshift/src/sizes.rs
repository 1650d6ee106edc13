//! Rooms a newcomer can hold, checked: no function of non-test code over 80 lines, no module over 600 lines of
//! non-test code, in every crate of the workspace (the library, the interpreter, the command line, the functions).
//! Test modules (`#[cfg(test)]`) and files of tests are left out.

use std::path::{Path, PathBuf};

use syn::visit::Visit;

const MAX_FN_LINES: usize = 80;
const MAX_MODULE_LINES: usize = 600;

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("test")
            || (a.path().is_ident("cfg") && a.meta.require_list().is_ok_and(|l| l.tokens.to_string() == "test"))
    })
}

fn lines(span: proc_macro2::Span) -> usize {
    span.end().line.saturating_sub(span.start().line) + 1
}

/// Every function over the limit, and the lines of test code (to leave out of the module's count).
#[derive(Default)]
struct Sizes {
    long: Vec<(String, usize)>,
    test_lines: usize,
}

impl<'a> Visit<'a> for Sizes {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        if is_test(&m.attrs) {
            // An inline test module; `mod tests;` in a file of its own is left out by its name.
            if let Some((brace, _)) = &m.content {
                self.test_lines += lines(brace.span.join());
            }
            return;
        }
        syn::visit::visit_item_mod(self, m);
    }

    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        if is_test(&f.attrs) {
            self.test_lines += lines(f.block.brace_token.span.join());
            return;
        }
        let n = lines(f.block.brace_token.span.join());
        if n > MAX_FN_LINES {
            self.long.push((f.sig.ident.to_string(), n));
        }
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'a syn::ImplItemFn) {
        let n = lines(f.block.brace_token.span.join());
        if n > MAX_FN_LINES {
            self.long.push((f.sig.ident.to_string(), n));
        }
        syn::visit::visit_impl_item_fn(self, f);
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_function_is_over_80_lines_and_no_module_over_600() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in [
        "crates/pgshift/src",
        "crates/asl/src",
        "crates/pgshift-cli/src",
        "functions",
    ] {
        sources(&root.join(dir), &mut files);
    }
    let mut over = Vec::new();
    for path in &files {
        let name = path.strip_prefix(&root).unwrap_or(path).display().to_string();
        if name.ends_with("tests.rs") || name.contains("/tests/") {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("source file");
        let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut s = Sizes::default();
        s.visit_file(&file);
        let code = text.lines().count().saturating_sub(s.test_lines);
        if code > MAX_MODULE_LINES {
            over.push(format!(
                "{name}: {code} lines of non-test code (at most {MAX_MODULE_LINES}: split it)"
            ));
        }
        for (f, n) in s.long {
            over.push(format!(
                "{name}: fn {f} is {n} lines (at most {MAX_FN_LINES}: give its parts names)"
            ));
        }
    }
    assert!(files.len() > 80, "the sources were read ({} files)", files.len());
    assert!(over.is_empty(), "{}", over.join("\n"));
}
