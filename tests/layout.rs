//! The rooms of `src/` as the README's layout draws them: no two modules import each other at any level (sibling
//! modules under one parent, directly or round a loop), and `model` imports nothing of the rest. Reads the source
//! as text; needs no env.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of the crate (`sync::claims::executor`, the crate root as ``), by its file's text.
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            // In-file tests may reach anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_string();
            found.insert(parts.join("::"), code);
        }
    }
    found
}

/// The module a path in `module`'s code names: the longest known prefix of it.
fn resolve(modules: &BTreeMap<String, String>, module: &str, path: &[&str]) -> Option<String> {
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut rest = path;
    match rest.first() {
        Some(&"crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some(&"super") => {
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        Some(&"self") => rest = &rest[1..],
        _ => return None,
    }
    let full: Vec<&str> = base.into_iter().chain(rest.iter().copied()).collect();
    (0..=full.len())
        .rev()
        .map(|n| full[..n].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}

/// Every module each module names in a `crate::`, `super::` or `self::` path.
fn imports(modules: &BTreeMap<String, String>) -> BTreeSet<(String, String)> {
    let mut edges = BTreeSet::new();
    for (module, code) in modules {
        // Each branch of every `use a::{b, c::d};` statement.
        for use_tree in use_statements(code) {
            for path in expand(&use_tree) {
                let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                if let Some(target) = resolve(modules, module, &segments)
                    && target != *module
                {
                    edges.insert((module.clone(), target));
                }
            }
        }
        // Paths written out in the code.
        for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("crate::") || word.starts_with("super::") {
                let segments: Vec<&str> = word.split("::").filter(|s| !s.is_empty()).collect();
                if let Some(target) = resolve(modules, module, &segments)
                    && target != *module
                {
                    edges.insert((module.clone(), target));
                }
            }
        }
    }
    edges
}

/// The trees of a file's `use` statements, without white space (a renaming `as` written `@`).
fn use_statements(code: &str) -> Vec<String> {
    let mut trees = Vec::new();
    let mut open: Option<String> = None;
    for line in code.lines() {
        let line = line.trim();
        let start = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|p| line.strip_prefix(p));
        let text = match (&mut open, start) {
            (Some(tree), _) => {
                tree.push_str(line);
                tree.clone()
            }
            (None, Some(rest)) => rest.to_string(),
            (None, None) => continue,
        };
        match text.split_once(';') {
            Some((tree, _)) => {
                trees.push(tree.replace(" as ", "@").replace(char::is_whitespace, ""));
                open = None;
            }
            None => open = Some(text),
        }
    }
    trees
}

/// The paths of a `use` tree without spaces: `a::{b,c::{d,e}}` is `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.split('@').next().unwrap_or(tree).to_string()];
    };
    let (prefix, inner) = (&tree[..open], &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())]);
    let (mut branches, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                branches.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    branches.push(current);
    branches
        .into_iter()
        .filter(|b| !b.is_empty())
        .flat_map(|b| expand(&format!("{prefix}{b}")))
        .collect()
}

/// The loops among the children of `parent`: each a list of the children that import one another round it.
fn loops_under(parent: &str, edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let child = |module: &str| -> Option<String> {
        let rest = if parent.is_empty() {
            module
        } else {
            module.strip_prefix(parent)?.strip_prefix("::")?
        };
        let first = rest.split("::").next().filter(|s| !s.is_empty())?;
        Some(if parent.is_empty() {
            first.to_string()
        } else {
            format!("{parent}::{first}")
        })
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges {
        if let (Some(a), Some(b)) = (child(from), child(to))
            && a != b
        {
            graph.entry(a).or_default().insert(b);
        }
    }
    // A child that reaches itself is on a loop; report each loop once, by its members.
    let reach = |start: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = graph.get(start).into_iter().flatten().cloned().collect();
        while let Some(next) = stack.pop() {
            if seen.insert(next.clone()) {
                stack.extend(graph.get(&next).into_iter().flatten().cloned());
            }
        }
        seen
    };
    let mut loops = BTreeSet::new();
    for start in graph.keys() {
        let from_start = reach(start);
        if from_start.contains(start) {
            let members: Vec<String> = from_start.into_iter().filter(|m| reach(m).contains(start)).collect();
            loops.insert(members);
        }
    }
    loops.into_iter().collect()
}

#[test]
fn no_two_modules_import_each_other_at_any_level() {
    let modules = modules();
    let edges = imports(&modules);
    assert!(
        edges.contains(&(
            "sync::claims::reconcile".to_string(),
            "sync::claims::executor".to_string()
        )),
        "the reader of imports found none it must find: {edges:?}"
    );
    let parents: BTreeSet<String> = modules
        .keys()
        .flat_map(|m| {
            let parts: Vec<&str> = m.split("::").collect();
            (0..parts.len()).map(move |n| parts[..n].join("::"))
        })
        .collect();
    let loops: Vec<Vec<String>> = parents.iter().flat_map(|p| loops_under(p, &edges)).collect();
    assert!(loops.is_empty(), "modules that import each other: {loops:?}");
}

#[test]
fn model_imports_nothing_of_the_rest() {
    let modules = modules();
    let outside: Vec<(String, String)> = imports(&modules)
        .into_iter()
        .filter(|(from, to)| from.starts_with("model") && !to.starts_with("model"))
        .collect();
    assert!(outside.is_empty(), "model reaches out: {outside:?}");
}

/// The tests and the benchmark run claimsync with the image's malloc settings: the image's Dockerfile, the script
/// that builds it without a container engine, and `instance::IMAGE_MALLOC` name the same ones.
#[test]
fn the_image_and_the_tests_run_claimsync_with_the_same_malloc_settings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| std::fs::read_to_string(root.join(path)).expect(path);
    let settings = |text: &str, prefix: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(prefix))
            .map(|rest| rest.trim().trim_end_matches('\\').trim().to_string())
            .filter(|setting| setting.starts_with("MALLOC_"))
            .collect()
    };
    let dockerfile = settings(&read("deploy/Dockerfile"), "ENV ");
    let image_build = settings(&read("deploy/image/build"), "--env ");
    let tests: BTreeSet<String> = crate::instance::IMAGE_MALLOC
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    assert!(!dockerfile.is_empty(), "deploy/Dockerfile sets no MALLOC_ variable");
    assert_eq!(dockerfile, image_build, "deploy/Dockerfile and deploy/image/build");
    assert_eq!(
        dockerfile, tests,
        "deploy/Dockerfile and tests/instance.rs IMAGE_MALLOC"
    );
}
