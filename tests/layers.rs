//! The layer order of ARCHITECTURE.md, checked: every `crate::` path in a source file (outside
//! its tests) must name its own module or one on a lower layer, so no import circle can come
//! back. The check reads the sources as text; it needs no build of the gateway.

use std::collections::BTreeMap;
use std::path::Path;

/// Lowest first. A module knows nothing about the modules on its own layer or above. A file of
/// a module may be listed on a lower layer than the module when the layers below read it
/// (`batch::state`: the state file names the config checks for clashes).
const LAYERS: &[&[&str]] = &[
    &[
        "backoff",
        "clock",
        "durable",
        "http",
        "logging",
        "modbus",
        "secret",
        "uploader::buffer",
    ],
    &["batch::state", "registers", "status"],
    &["lineproto", "plant_api", "update", "watchdog"],
    &["status_http"],
    &["config"],
    &[
        "batch",
        "change",
        "scan",
        "simulate",
        "status::machine",
        "uploader",
        "watch",
    ],
    &["poller"],
    &["app"],
    &["check", "demo", "once"],
    &["cli"],
];

fn layer_of(table: &BTreeMap<&str, usize>, module: &str) -> Option<(String, usize)> {
    let mut path = module.to_string();
    loop {
        if let Some(&l) = table.get(path.as_str()) {
            return Some((path, l));
        }
        path = path.rsplit_once("::")?.0.to_string();
    }
}

/// The module path of a file under `src/` (`batch/outbox.rs` is `batch::outbox`), or `None` for
/// the crate roots and for test files.
fn module_of(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.iter().any(|p| p == "tests") || ["lib", "main"].contains(&parts[0].as_str()) {
        return None;
    }
    let parts: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|p| *p != "mod")
        .collect();
    Some(parts.join("::"))
}

/// The code of a file without its comments and without its `#[cfg(test)] mod` blocks (tests
/// may use any layer to build their fixtures).
fn code(text: &str) -> String {
    let text: Vec<&str> = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut skipping = false;
    for (i, line) in text.iter().enumerate() {
        let test_mod = i > 0 && text[i - 1].trim() == "#[cfg(test)]" && line.starts_with("mod ");
        if test_mod && line.trim_end().ends_with('{') {
            skipping = true;
        }
        if skipping {
            depth += line.matches('{').count();
            depth = depth.saturating_sub(line.matches('}').count());
            skipping = depth > 0;
            continue;
        }
        out.push(*line);
    }
    out.join("\n")
}

/// Every module path named after `crate::`, with `crate::{a, b::c}` groups opened.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.push(path_prefix(item.trim()));
            }
        } else {
            out.push(path_prefix(rest));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

fn path_prefix(s: &str) -> String {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s[..end].trim_end_matches(':').to_string()
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_imports_only_its_own_and_lower_layers() {
    let mut table = BTreeMap::new();
    for (l, names) in LAYERS.iter().enumerate() {
        for n in *names {
            table.insert(*n, l);
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut problems = Vec::new();
    for file in &all {
        let rel = file.strip_prefix(&src).unwrap_or(file);
        let Some(module) = module_of(rel) else {
            continue;
        };
        let Some((node, layer)) = layer_of(&table, &module) else {
            problems.push(format!(
                "{}: module `{module}` is in no layer",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{rel:?}: {e}"));
        for path in crate_paths(&code(&text)) {
            let Some((used, used_layer)) = layer_of(&table, &path) else {
                continue; // an item of the crate root (a macro), not a module
            };
            if used != node && used_layer >= layer {
                problems.push(format!(
                    "{}: `{node}` (layer {layer}) uses `crate::{path}` (layer {used_layer})",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports against the layer order (ARCHITECTURE.md, tests/layers.rs):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_plain_paths_but_not_comments_or_tests() {
    let text = "use crate::{clock::Clock, status};\n// crate::cli\nfn f() { crate::modbus::transport_for(); }\n#[cfg(test)]\nmod tests {\n    use crate::app;\n}\nuse crate::lineproto;\n";
    assert_eq!(
        crate_paths(&code(text)),
        [
            "clock::Clock",
            "status",
            "modbus::transport_for",
            "lineproto"
        ]
    );
    assert_eq!(
        module_of(Path::new("batch/mod.rs")).as_deref(),
        Some("batch")
    );
    assert_eq!(module_of(Path::new("poller/tests.rs")), None);
}
