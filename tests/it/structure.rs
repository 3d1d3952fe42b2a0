//! The shape of the code: no import cycles between the top-level modules
//! of `src/`, nor between the files of `src/http` and `src/store`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names that follow `prefix` in `text` (`crate::store::x` gives
/// `store` for the prefix `crate::`).
fn referenced(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut c = stack[at..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_owned());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Test modules may reach anywhere; only the code above them counts.
fn without_tests(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn modules_do_not_import_each_other_in_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut inner: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        if parts.len() == 1 && matches!(parts[0].as_str(), "lib" | "main") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let text = without_tests(&text);
        let module = parts[0].clone();
        let deps = top.entry(module.clone()).or_default();
        deps.extend(
            referenced(text, "crate::")
                .into_iter()
                .filter(|d| *d != module),
        );
        // siblings inside http and store, through super::
        if matches!(module.as_str(), "http" | "store") && parts.len() == 2 && parts[1] != "mod" {
            let name = parts[1].clone();
            let siblings = inner.entry(module.clone()).or_default();
            let mut uses: BTreeSet<String> = referenced(text, "super::");
            uses.extend(referenced(text, &format!("crate::{module}::")));
            uses.retain(|u| *u != name);
            siblings.entry(name).or_default().extend(uses);
        }
    }
    assert!(top.contains_key("drive") && top.contains_key("scheduler"));
    if let Some(c) = cycle(&top) {
        panic!("modules import each other in a circle: {}", c.join(" -> "));
    }
    for (module, files) in &inner {
        // only names that are files of the module count
        let names: BTreeSet<String> = files.keys().cloned().collect();
        let graph: BTreeMap<String, BTreeSet<String>> = files
            .iter()
            .map(|(f, uses)| (f.clone(), uses.intersection(&names).cloned().collect()))
            .collect();
        if let Some(c) = cycle(&graph) {
            panic!(
                "files of {module} import each other in a circle: {}",
                c.join(" -> ")
            );
        }
    }
}
