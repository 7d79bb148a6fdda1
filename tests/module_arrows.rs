//! The arrows of DESIGN.md hold in the code: no import circle between the top-level modules
//! of the crate (`src/`) or of the example host (`host/src/`), and the library's layers point
//! one way (`sasl2` imports neither `fast` nor `store`; `store` and `stream` know neither FAST
//! nor SASL).
//!
//! A module's dependencies are the `crate::...` paths in its files (comments and
//! `#[cfg(test)]` modules left out; `crate::{A, b::C}` groups and names the crate root
//! re-exports resolved to the module that defines them; exported macros to the module that
//! defines them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

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

/// The code of a file without comments and without `#[cfg(test)] mod ... { ... }` blocks
/// (tests may reach anywhere).
fn code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        let next_is_mod = lines.get(i + 1).is_some_and(|l| {
            let l = l.trim_start();
            (l.starts_with("mod ") || l.starts_with("pub mod ")) && l.ends_with('{')
        });
        if line.starts_with("#[cfg(test)]") && next_is_mod {
            let mut depth = 0i64;
            i += 1;
            while i < lines.len() {
                depth += lines[i].matches('{').count() as i64;
                depth -= lines[i].matches('}').count() as i64;
                i += 1;
                if depth <= 0 {
                    break;
                }
            }
            continue;
        }
        let without_comment = match lines[i].find("//") {
            Some(at) => &lines[i][..at],
            None => lines[i],
        };
        out.push_str(without_comment);
        out.push('\n');
        i += 1;
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level module of a file under `root` (`lib.rs` and `main.rs` are the root: `None`).
fn top_module(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    match name {
        "lib" | "main" | "bin" => None,
        _ => Some(name.to_owned()),
    }
}

/// Names the crate root re-exports (`pub use module::{A, B};`, `pub use module::A;`), mapped
/// to their module.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for stmt in code(lib).split(';') {
        let stmt = stmt.trim();
        let Some(path) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let module = ident_at(path).to_owned();
        let rest = &path[module.len()..];
        let items = match (rest.find('{'), rest.rfind('}')) {
            (Some(a), Some(b)) => rest[a + 1..b].to_owned(),
            _ => rest.rsplit("::").next().unwrap_or("").to_owned(),
        };
        for item in items.split(',') {
            let name = item.trim().rsplit(" as ").next().unwrap().trim();
            if !name.is_empty() {
                names.insert(name.to_owned(), module.clone());
            }
        }
    }
    names
}

/// The module graph of the crate whose sources are in `root`.
fn graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(root, f)).collect();
    let reexports = root_reexports(&std::fs::read_to_string(root.join("lib.rs")).unwrap());
    // `#[macro_export]` macros live at the crate root; their home is the file defining them.
    let mut macros = BTreeMap::new();
    for f in &files {
        if let Some(m) = top_module(root, f) {
            let text = std::fs::read_to_string(f).unwrap();
            for def in text.split("macro_rules! ").skip(1) {
                macros.insert(ident_at(def).to_owned(), m.clone());
            }
        }
    }
    let resolve = |name: &str| -> Option<String> {
        if modules.contains(name) {
            Some(name.to_owned())
        } else {
            reexports.get(name).or_else(|| macros.get(name)).cloned()
        }
    };
    let mut g = Graph::new();
    for f in &files {
        let Some(from) = top_module(root, f) else {
            continue;
        };
        let text = code(&std::fs::read_to_string(f).unwrap());
        let deps = g.entry(from.clone()).or_default();
        for at in text
            .match_indices("crate::")
            .map(|(i, _)| i + "crate::".len())
        {
            let rest = &text[at..];
            let targets: Vec<String> = match rest.strip_prefix('{') {
                Some(group) => {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    group
                        .split(',')
                        .filter_map(|item| resolve(ident_at(item.trim())))
                        .collect()
                }
                None => resolve(ident_at(rest)).into_iter().collect(),
            };
            deps.extend(targets.into_iter().filter(|t| *t != from));
        }
    }
    g
}

/// A circle in `g`, as the modules along it, if there is one.
fn circle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut c = path[start..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_host_has_no_import_circle() {
    let g = graph(&repo().join("host/src"));
    // The reader of this test sees what it found, not only a verdict.
    for (m, deps) in &g {
        println!("host::{m} -> {deps:?}");
    }
    // The parts the issue named must be where the graph says they are.
    for (from, to) in [
        ("server", "admin"),
        ("listeners", "connection"),
        ("admin", "setup"),
    ] {
        assert!(g[from].contains(to), "expected {from} -> {to} in {g:?}");
    }
    assert_eq!(circle(&g), None, "an import circle in host/src");
    let users = |of: &str| -> Vec<&str> {
        g.iter()
            .filter(|(_, deps)| deps.contains(of))
            .map(|(m, _)| m.as_str())
            .collect()
    };
    // DESIGN.md: only what starts a host imports the server.
    assert_eq!(users("server"), ["cli", "harness"]);
    // The test client and harness are behind the `testing` feature: no part of the server
    // uses them (their own tests aside), and the crate root gates both.
    assert_eq!(users("client"), ["harness"]);
    assert!(users("harness").is_empty());
    let lib = std::fs::read_to_string(repo().join("host/src/lib.rs")).unwrap();
    for module in ["client", "harness"] {
        assert!(
            lib.contains(&format!("#[cfg(feature = \"testing\")]\npub mod {module};")),
            "host/src/lib.rs must gate `{module}` behind the testing feature"
        );
    }
}

#[test]
fn the_library_has_no_import_circle_and_its_layers_point_one_way() {
    let g = graph(&repo().join("src"));
    for (m, deps) in &g {
        println!("{m} -> {deps:?}");
    }
    assert!(g["fast"].contains("sasl2") && g["fast"].contains("store"));
    assert_eq!(circle(&g), None, "an import circle in src");
    for (from, never) in [
        ("sasl2", ["fast", "store", "prometheus"]),
        ("store", ["fast", "sasl2", "prometheus"]),
        ("stream", ["fast", "sasl2", "store"]),
    ] {
        for to in never {
            assert!(!g[from].contains(to), "{from} must not import {to}: {g:?}");
        }
    }
}

#[test]
fn the_graph_sees_what_a_circle_would_be() {
    // The reader above must find grouped, re-exported and macro paths, or a circle through
    // them would pass unseen.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("lib.rs"), "mod a;\nmod b;\npub use b::Thing;\n").unwrap();
    std::fs::write(
        root.join("a.rs"),
        "// crate::b in a comment is no arrow\nuse crate::{Thing};\n",
    )
    .unwrap();
    std::fs::write(
        root.join("b.rs"),
        "pub struct Thing;\nfn f() { crate::shout!(); }\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n",
    )
    .unwrap();
    std::fs::create_dir(root.join("c")).unwrap();
    std::fs::write(
        root.join("c/mod.rs"),
        "#[macro_export]\nmacro_rules! shout { () => {} }\n",
    )
    .unwrap();
    let g = graph(root);
    assert_eq!(g["a"], BTreeSet::from(["b".to_owned()]));
    assert_eq!(g["b"], BTreeSet::from(["c".to_owned()]));
    assert_eq!(circle(&g), None);
    std::fs::write(
        root.join("c/mod.rs"),
        "use crate::a;\nmacro_rules! shout { () => {} }\n",
    )
    .unwrap();
    let g = graph(root);
    assert_eq!(
        circle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
