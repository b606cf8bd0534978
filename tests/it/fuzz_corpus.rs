//! Replays the fuzz targets' committed corpus (fuzz/corpus/<target>/: the seeds fuzz/seeds.py
//! writes, and every input a fuzz run kept or found crashing, fuzz/artifacts/ minimised into
//! fuzz/regressions/<target>/) through the same entry points `cargo fuzz` calls, so every crash
//! found stays a regression test in the ordinary `cargo test`.

use std::path::Path;

use sealstream::fuzzing::TARGETS;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_committed_fuzz_input_runs_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in TARGETS {
        let seeds = inputs(&root.join("corpus").join(name));
        assert!(
            !seeds.is_empty(),
            "fuzz/corpus/{name} has no seeds: run `python3 fuzz/seeds.py`"
        );
        let regressions = inputs(&root.join("regressions").join(name));
        for file in seeds.iter().chain(&regressions) {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", file.display());
        }
    }
}

#[test]
fn every_fuzz_target_has_a_binary() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .unwrap();
    for (name, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
    }
}
