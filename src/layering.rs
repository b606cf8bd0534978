//! The module layering (ARCHITECTURE.md "Architecture invariants"), enforced: every reference
//! from one top-level module to another points to a lower layer, and object keys are spelled
//! only in `storage::paths`.
//!
//! The check reads the sources under `src/` as text. It skips comment lines and test code (a
//! `#[cfg(test)]` module runs to the end of its file; any other `#[cfg(test)]` item is skipped
//! alone; a file declared by `#[cfg(test)] mod x;` is skipped whole), then finds the top-level
//! module each path names: `crate::x`, each member of `crate::{x, y::{..}}`, and `super::x`
//! climbing to the crate root. `src/main.rs` and `src/cli/` are the binary crate (`mod cli;` in
//! main.rs): their `crate::` is the binary's own, and they reach the library as `sealstream::x`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module may use modules of lower layers only:
/// never one above it, nor another of its own layer.
const LAYERS: &[&[&str]] = &[
    // Formats and helpers with no sealstream dependency.
    &["protocol", "fsutil", "video"],
    // Keys and sealing, sans-IO.
    &["crypto", "keys"],
    // The audit chain and checkpoint format; the deployment's PKI.
    &["audit", "pki"],
    &["config"],
    &["storage", "transport"],
    &["metadata"],
    // Shared by the agent, offline sealing, verify and export.
    &["recorder", "inspect"],
    &["export"],
    // /metrics, /healthz, /readyz for any process.
    &["telemetry"],
    // The three processes: none uses another.
    &["server", "agent", "console"],
    // Entry points: the cargo-fuzz targets' decoders and the `sealstream` command.
    &["fuzzing", "cli"],
];

/// The top-level module of the binary crate (declared in `src/main.rs`).
const BINARY_MODULE: &str = "cli";
/// The one file that may spell an object key.
const PATHS_FILE: &str = "storage/paths.rs";

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `line` without a trailing `//` comment (one outside a string literal).
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if in_string => i += 1,
            b'\'' if !in_string && b[i..].starts_with(b"'\"'") => i += 2,
            b'"' => in_string = !in_string,
            b'/' if !in_string && b.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// Does `line` declare a module (`mod x`, `pub mod x`, `pub(crate) mod x`)? Its name, and
/// whether the module's body follows inline (`{`) rather than in a file (`;`).
fn mod_decl(line: &str) -> Option<(&str, bool)> {
    let t = line.trim();
    let t = t
        .strip_prefix("pub(crate) ")
        .or_else(|| t.strip_prefix("pub "))
        .unwrap_or(t);
    let rest = t.strip_prefix("mod ")?;
    let end = rest.find(|c: char| !c.is_ascii_alphanumeric() && c != '_')?;
    let inline = rest[end..].trim_start().starts_with('{');
    Some((&rest[..end], inline))
}

/// The source with comment lines and test code blanked (line numbers kept), and the modules
/// it declares as `#[cfg(test)] mod x;` (whose files are test code).
fn non_test_code(text: &str) -> (String, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = vec![""; lines.len()];
    let mut test_modules = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim();
        if t.starts_with("//") {
            i += 1;
            continue;
        }
        if t == "#[cfg(test)]" {
            // The item the attribute applies to, after any further attributes.
            let mut j = i + 1;
            while j < lines.len() && lines[j].trim().starts_with("#[") {
                j += 1;
            }
            match lines.get(j).and_then(|l| mod_decl(l)) {
                // A test module's body: by convention the rest of the file.
                Some((_, true)) => break,
                Some((name, false)) => test_modules.push(name.to_owned()),
                None => {}
            }
            // Skip the item: to the `;` or closing brace that ends it.
            let mut depth = 0i64;
            while j < lines.len() {
                let l = strip_comment(lines[j]);
                depth += l.matches('{').count() as i64 - l.matches('}').count() as i64;
                let l = l.trim_end();
                j += 1;
                if depth <= 0 && (l.ends_with(';') || l.ends_with('}')) {
                    break;
                }
            }
            i = j;
            continue;
        }
        out[i] = strip_comment(lines[i]);
        i += 1;
    }
    (out.join("\n"), test_modules)
}

/// How a file reaches other top-level modules.
struct Reach {
    /// This file's module path under the crate root (`server::ops` is 2 deep): `super` that
    /// many times is the crate root.
    depth: usize,
    /// `crate::` names this crate's top-level modules (the library); otherwise only
    /// `sealstream::` does (the binary).
    library: bool,
}

/// If a string or `'"'` literal starts at `at`: where it ends (paths inside it are not paths).
fn literal_end(b: &[u8], at: usize) -> Option<usize> {
    if b[at..].starts_with(b"'\"'") {
        return Some(at + 3);
    }
    let raw_prefix =
        at == 0 || !is_ident(b[at - 1]) || (b[at - 1] == b'b' && (at < 2 || !is_ident(b[at - 2])));
    if b[at] == b'r' && raw_prefix {
        let hashes = b[at + 1..].iter().take_while(|&&c| c == b'#').count();
        let open = at + 1 + hashes;
        if b.get(open) != Some(&b'"') {
            return None;
        }
        let mut close = vec![b'"'];
        close.extend(std::iter::repeat_n(b'#', hashes));
        let end = (open + 1..b.len())
            .find(|&k| b[k..].starts_with(&close))
            .map_or(b.len(), |k| k + close.len());
        return Some(end);
    }
    if b[at] != b'"' {
        return None;
    }
    let mut k = at + 1;
    while k < b.len() {
        match b[k] {
            b'\\' => k += 1,
            b'"' => return Some(k + 1),
            _ => {}
        }
        k += 1;
    }
    Some(b.len())
}

/// Each top-level module `code` names, with its 1-based line.
fn references(code: &str, reach: &Reach) -> Vec<(String, usize)> {
    let b = code.as_bytes();
    let line_at = |at: usize| code[..at].matches('\n').count() + 1;
    let word_at = |at: usize, word: &str| {
        code[at..].starts_with(word)
            && (at == 0 || !(is_ident(b[at - 1]) || b[at - 1] == b'$'))
            && !b.get(at + word.len()).copied().is_some_and(is_ident)
    };
    let skip_ws = |mut at: usize| {
        while at < b.len() && b[at].is_ascii_whitespace() {
            at += 1;
        }
        at
    };
    // `::` after `at` (spaces allowed around it): the position after it.
    let colons = |at: usize| {
        let at = skip_ws(at);
        code[at..].starts_with("::").then(|| skip_ws(at + 2))
    };
    let ident = |at: usize| {
        let end = (at..b.len()).find(|&k| !is_ident(b[k])).unwrap_or(b.len());
        (end > at).then(|| &code[at..end])
    };
    let mut found = Vec::new();
    let names = |at: usize, found: &mut Vec<(String, usize)>| {
        if b.get(at) == Some(&b'{') {
            // A group: the first name of each member, at any nesting below.
            let mut k = at + 1;
            loop {
                k = skip_ws(k);
                match b.get(k) {
                    None | Some(b'}') => break,
                    _ => {}
                }
                if let Some(name) = ident(k).filter(|n| *n != "self") {
                    found.push((name.to_owned(), line_at(k)));
                }
                let mut depth = 0;
                while k < b.len() {
                    match b[k] {
                        b'{' => depth += 1,
                        b'}' if depth == 0 => break,
                        b'}' => depth -= 1,
                        b',' if depth == 0 => {
                            k += 1;
                            break;
                        }
                        _ => {}
                    }
                    k += 1;
                }
            }
        } else if let Some(name) = ident(at).filter(|n| *n != "self") {
            found.push((name.to_owned(), line_at(at)));
        }
    };
    let mut at = 0;
    while at < b.len() {
        if let Some(end) = literal_end(b, at) {
            at = end;
            continue;
        }
        let root = if reach.library && word_at(at, "crate") {
            colons(at + "crate".len())
        } else if !reach.library && word_at(at, "sealstream") {
            colons(at + "sealstream".len())
        } else if reach.library && word_at(at, "super") && !code[..at].trim_end().ends_with("::") {
            // `super::super::...`: the crate root when it climbs `depth` levels.
            let (mut k, mut ups) = (at, 0);
            while word_at(k, "super") {
                match colons(k + "super".len()) {
                    Some(next) => {
                        ups += 1;
                        k = next;
                    }
                    None => break,
                }
            }
            (ups == reach.depth).then_some(k)
        } else {
            None
        };
        if let Some(start) = root {
            names(start, &mut found);
        }
        at += 1;
    }
    found
}

/// A file's top-level module and how it reaches others, from its path under `src/`.
fn place(rel: &Path) -> (String, Reach) {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().expect("a file name");
    if file != "mod.rs" {
        parts.push(file.trim_end_matches(".rs").to_owned());
    }
    let module = parts[0].clone();
    let library = module != "main" && module != BINARY_MODULE;
    let module = if library {
        module
    } else {
        BINARY_MODULE.to_owned()
    };
    let reach = Reach {
        depth: if parts[0] == "lib" || parts[0] == "main" {
            0
        } else {
            parts.len()
        },
        library,
    };
    (module, reach)
}

/// `mod x;` declarations of a crate root, test modules left out.
fn declared_modules(root: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root).expect("crate root");
    let (code, _) = non_test_code(&text);
    code.lines()
        .filter_map(mod_decl)
        .filter(|(_, inline)| !inline)
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn every_module_is_in_one_layer() {
    let src = src_dir();
    let main = std::fs::read_to_string(src.join("main.rs")).expect("src/main.rs");
    assert!(
        main.lines()
            .any(|l| l.trim() == format!("mod {BINARY_MODULE};")),
        "src/{BINARY_MODULE}/ is expected to be the binary's module (`mod {BINARY_MODULE};` in src/main.rs)"
    );
    let library = declared_modules(&src.join("lib.rs"));
    assert!(!library.contains(BINARY_MODULE));
    let mut tabled = BTreeMap::new();
    for m in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(tabled.insert(*m, ()).is_none(), "{m} is in two layers");
    }
    let mut wanted: BTreeSet<String> = library;
    wanted.insert(BINARY_MODULE.to_owned());
    let tabled: BTreeSet<String> = tabled.keys().map(|m| (*m).to_owned()).collect();
    assert_eq!(
        wanted, tabled,
        "src/layering.rs: LAYERS must hold exactly the library's modules (src/lib.rs) and `{BINARY_MODULE}`"
    );
}

/// Every non-test source file under `src/`: its path under `src/` and its code with comment
/// lines and test code blanked.
fn non_test_sources() -> Vec<(PathBuf, String)> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let sources: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (
                f.strip_prefix(&src).expect("under src/").to_path_buf(),
                text,
            )
        })
        .collect();
    // Files of `#[cfg(test)] mod x;` declarations are test code.
    let mut test_files = BTreeSet::new();
    for (rel, text) in &sources {
        let (_, test_modules) = non_test_code(text);
        let dir = match rel.file_name().and_then(|n| n.to_str()) {
            Some("lib.rs" | "main.rs" | "mod.rs") => rel.parent().map(Path::to_path_buf),
            _ => Some(rel.with_extension("")),
        }
        .unwrap_or_default();
        for m in test_modules {
            test_files.insert(dir.join(format!("{m}.rs")));
            test_files.insert(dir.join(&m).join("mod.rs"));
        }
    }
    sources
        .into_iter()
        .filter(|(rel, _)| !test_files.contains(rel))
        .map(|(rel, text)| (rel, non_test_code(&text).0))
        .collect()
}

#[test]
fn every_reference_points_to_a_lower_layer() {
    let mut wrong = Vec::new();
    let mut arrows = 0;
    for (rel, code) in non_test_sources() {
        let shown = format!("src/{}", rel.display());
        // `lib.rs` is in no layer: it only declares modules (a reference from it is reported).
        let (from, reach) = place(&rel);
        let from_layer = if from == "lib" { None } else { layer_of(&from) };
        for (to, line) in references(&code, &reach) {
            if to == from {
                continue;
            }
            arrows += 1;
            let Some(from_layer) = from_layer else {
                wrong.push(format!(
                    "{shown}:{line}: {from} is in no layer of src/layering.rs"
                ));
                continue;
            };
            match layer_of(&to) {
                None => wrong.push(format!(
                    "{shown}:{line}: {from} -> {to}: {to} is in no layer of src/layering.rs"
                )),
                Some(to_layer) if to_layer >= from_layer => wrong.push(format!(
                    "{shown}:{line}: {from} (layer {from_layer}) -> {to} (layer {to_layer}): {}",
                    if to_layer == from_layer {
                        "same layer"
                    } else {
                        "upward"
                    }
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        arrows > 100,
        "only {arrows} references between modules found: is the scan broken?"
    );
    assert!(
        wrong.is_empty(),
        "references against the layering (src/layering.rs, ARCHITECTURE.md):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn object_keys_are_spelled_only_in_storage_paths() {
    let mut keys = Vec::new();
    for (rel, code) in non_test_sources() {
        if rel == Path::new(PATHS_FILE) {
            continue;
        }
        for (n, line) in code.lines().enumerate() {
            if line.contains("\"v1/") {
                keys.push(format!("src/{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        keys.is_empty(),
        "object keys are spelled only in src/{PATHS_FILE}:\n{}",
        keys.join("\n")
    );
}

#[test]
fn the_scan_sees_every_form_of_reference() {
    let text = r##"//! use crate::nope;
use std::fmt;
use crate::protocol::AgentId;
use crate::{
    config::{self, Store},
    keys, // crate::nope
};
pub(crate) fn f() -> crate :: storage::Store { crate::metadata::now_us(); todo() }
use super::super::export;
use super::sibling;
let s = "crate::nope // not a comment";
let (c, r) = (b'"', r#"crate::nope"#); crate::video::f(); // crate::nope
#[cfg(test)]
use crate::fuzzing;
#[cfg(test)]
mod helpers;
#[cfg(test)]
fn helper() {
    crate::agent::x();
}
use crate::audit;
#[cfg(test)]
mod tests {
    use crate::server;
}
"##;
    let (code, test_modules) = non_test_code(text);
    assert_eq!(test_modules, vec!["helpers".to_owned()]);
    let found = references(
        &code,
        &Reach {
            depth: 2,
            library: true,
        },
    );
    let names: Vec<(&str, usize)> = found.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    assert_eq!(
        names,
        vec![
            ("protocol", 3),
            ("config", 5),
            ("keys", 6),
            ("storage", 8),
            ("metadata", 8),
            ("export", 9),
            ("video", 12),
            ("audit", 21),
        ]
    );
    let binary = references(
        "use sealstream::{agent, config};\nuse crate::cli::x;\nsealstream::video::f();\n",
        &Reach {
            depth: 1,
            library: false,
        },
    );
    let names: Vec<&str> = binary.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["agent", "config", "video"]);
    assert_eq!(place(Path::new("server/ops.rs")).1.depth, 2);
    assert_eq!(place(Path::new("agent/x11/mod.rs")).1.depth, 2);
    assert_eq!(place(Path::new("audit.rs")).1.depth, 1);
    assert!(!place(Path::new("cli/audit.rs")).1.library);
}
