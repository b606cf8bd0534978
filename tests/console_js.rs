//! The console's browser modules (`console/assets/js`) tested alone under Node's test runner,
//! which has the same WebCrypto API: the format vectors open, the negative vectors are
//! refused, and every key form openssl writes is opened or refused with the command that
//! converts it (`console/test/`).

#[test]
fn the_console_modules_pass_their_node_tests() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("node")
        .args(["--test", "console/test/"])
        .current_dir(root)
        .output()
        .expect("Node.js (node) is installed: .ci/run installs Debian's nodejs when missing");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test console/test/ failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
