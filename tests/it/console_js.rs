//! The console's browser modules (`console/assets/js`) tested alone under Node's test runner,
//! which has the same WebCrypto API: the format vectors open, the page's session module refuses
//! a chunk other than the one it asked for and every negative vector, and every key form openssl
//! writes is opened or refused with the command that converts it (`console/test/`). A run counts
//! only if every test ran and passed: none skipped, none todo, none cancelled, and at least one.

use std::path::Path;

/// `node --test` over `dir` with the TAP reporter (the summary lines parsed below), run in `cwd`:
/// (exit success, stdout, stderr).
fn node_test(cwd: &Path, dir: &str) -> (bool, String, String) {
    let out = std::process::Command::new("node")
        .args(["--test", "--test-reporter=tap", dir])
        .current_dir(cwd)
        .output()
        .expect("Node.js (node) is installed: .ci/run installs Debian's nodejs when missing");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The number of tests that passed, if the TAP summary says every test ran and passed:
/// `# tests N` with N > 0, `# pass N`, and `# fail 0`, `# cancelled 0`, `# skipped 0`, `# todo 0`.
fn all_passed(tap: &str) -> Result<u64, String> {
    let count = |name: &str| -> Result<u64, String> {
        let prefix = format!("# {name} ");
        let found: Vec<&str> = tap
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect();
        match found.as_slice() {
            [n] => n.trim().parse().map_err(|e| format!("`# {name} {n}`: {e}")),
            _ => Err(format!(
                "the summary has {} `# {name} N` lines, not one",
                found.len()
            )),
        }
    };
    let tests = count("tests")?;
    let pass = count("pass")?;
    let mut wrong = Vec::new();
    for name in ["fail", "cancelled", "skipped", "todo"] {
        let n = count(name)?;
        if n != 0 {
            wrong.push(format!("{n} {name}"));
        }
    }
    if tests == 0 {
        wrong.push("no tests ran".to_owned());
    }
    if pass != tests {
        wrong.push(format!("{pass} of {tests} passed"));
    }
    if wrong.is_empty() {
        Ok(pass)
    } else {
        let marked: Vec<&str> = tap
            .lines()
            .filter(|l| {
                l.trim_start().starts_with("not ok")
                    || l.contains(" # SKIP")
                    || l.contains(" # TODO")
            })
            .collect();
        Err(format!("{}:\n{}", wrong.join(", "), marked.join("\n")))
    }
}

#[test]
fn the_console_modules_pass_their_node_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, stdout, stderr) = node_test(root, "console/test/");
    assert!(ok, "node --test console/test/ failed:\n{stdout}\n{stderr}");
    let passed = all_passed(&stdout).unwrap_or_else(|e| {
        panic!(
            "node --test console/test/ did not run every test \
             (openssl.test.mjs skips its OpenSSH test without ssh-keygen: install openssh-client): \
             {e}\n{stdout}\n{stderr}"
        )
    });
    // Every test file contributes at least one test.
    let files = std::fs::read_dir(root.join("console/test"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".test.mjs")
        })
        .count() as u64;
    assert!(
        files > 0 && passed >= files,
        "{passed} tests passed in {files} files"
    );
}

/// The check above, against what Node's reporter prints for runs it must not accept: no tests,
/// a skipped test, a todo test, a failing test; and a run where the one test passed.
#[test]
fn a_node_run_with_no_tests_or_a_skipped_todo_or_failing_test_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, body: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        if !body.is_empty() {
            std::fs::write(
                d.join("x.test.mjs"),
                format!(
                    "import {{ test }} from 'node:test';\ntest('passes', () => {{}});\n{body}\n"
                ),
            )
            .unwrap();
        }
        let (_, stdout, _) = node_test(dir.path(), name);
        all_passed(&stdout)
    };
    assert_eq!(run("empty", ""), Err("no tests ran:\n".to_owned()));
    let skipped = run("skipped", "test.skip('skipped', () => {});").unwrap_err();
    assert!(
        skipped.starts_with("1 skipped, 1 of 2 passed:\n"),
        "{skipped}"
    );
    assert!(skipped.contains("ok 2 - skipped # SKIP"), "{skipped}");
    let skipped_inside = run(
        "skipped_inside",
        "test('skips itself', (t) => { t.skip('no tool'); });",
    )
    .unwrap_err();
    assert!(
        skipped_inside.starts_with("1 skipped, 1 of 2 passed:\n"),
        "{skipped_inside}"
    );
    let todo = run("todo", "test.todo('todo', () => {});").unwrap_err();
    assert!(todo.starts_with("1 todo, 1 of 2 passed:\n"), "{todo}");
    let failing = run(
        "failing",
        "test('fails', () => { throw new Error('no'); });",
    )
    .unwrap_err();
    assert!(failing.starts_with("1 fail, 1 of 2 passed:\n"), "{failing}");
    assert!(failing.contains("not ok 2 - fails"), "{failing}");
    assert_eq!(run("passing", " "), Ok(1));
}
