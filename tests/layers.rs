//! The source tree's layers (src/lib.rs lists them) depend only downwards: a module
//! may use its own layer and those below it, never one above. A plain `cargo test`.

use std::path::Path;

/// Top to bottom.
const LAYERS: [&str; 9] = ["cli", "cmd", "report", "plan", "launch", "phase", "protocol", "systemd", "sys"];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

/// Every `crate::LAYER` a file names, with its line, outside comments.
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if rank(&name).is_some() {
                found.push((n + 1, name));
            }
        }
    }
    found
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    let mut layered = 0;
    for path in &all {
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let Some(own) = rank(first.trim_end_matches(".rs")) else { continue };
        layered += 1;
        for (line, used) in uses(&std::fs::read_to_string(path).unwrap()) {
            if rank(&used).unwrap() < own {
                wrong.push(format!("src/{}:{line} ({first}) uses crate::{used}", relative.display()));
            }
        }
    }
    assert!(layered > 40, "only {layered} files found in layers");
    assert!(wrong.is_empty(), "uses of a layer above:\n{}", wrong.join("\n"));
}

#[test]
fn every_file_opens_with_what_it_is() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let silent: Vec<_> = all
        .iter()
        .filter(|path| !path.ends_with("main.rs"))
        .filter(|path| !std::fs::read_to_string(path).unwrap().starts_with("//!"))
        .collect();
    assert!(silent.is_empty(), "files without a first comment: {silent:?}");
}
