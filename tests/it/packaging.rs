//! The Debian package as described (issue 20, item 7), without building it: every file
//! `[package.metadata.deb]` ships from the checkout exists, and both systemd units are ones
//! systemd accepts (`systemd-analyze verify`, with their binary path pointed at this build's
//! binary), the agent's running as root and restarted on failure. `ops/build-deb.sh` builds
//! the package itself (a release build: not in CI; docs/benchmarks.md "X11 capture" records
//! a build, `dpkg-deb -I/-c` and an install).

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn deb_metadata() -> toml::Table {
    let manifest: toml::Table = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

#[test]
fn every_file_the_package_ships_from_the_checkout_exists() {
    let deb = deb_metadata();
    let assets = deb["assets"].as_array().expect("assets");
    assert!(assets.len() >= 5, "{assets:?}");
    for asset in assets {
        let source = asset[0].as_str().unwrap();
        // target/ holds what ops/build-deb.sh builds and stages just before packaging.
        if source.starts_with("target/") {
            continue;
        }
        assert!(
            Path::new(ROOT).join(source).is_file(),
            "[package.metadata.deb] ships {source}, which the checkout does not have"
        );
    }
    let scripts = deb["maintainer-scripts"].as_str().unwrap();
    assert!(Path::new(ROOT).join(scripts).is_dir(), "{scripts}");
    for unit in deb["systemd-units"].as_array().unwrap() {
        let name = unit["unit-name"].as_str().unwrap();
        // build-deb.sh stages each unit from ops/<name>.service.
        assert!(
            Path::new(ROOT)
                .join(format!("ops/{name}.service"))
                .is_file(),
            "unit {name} has no ops/{name}.service"
        );
    }
}

#[test]
fn both_systemd_units_verify_and_the_agent_runs_as_root_restarted_on_failure() {
    let bin = env!("CARGO_BIN_EXE_sealstream");
    let dir = tempfile::tempdir().unwrap();
    for name in ["sealstream", "sealstream-agent"] {
        let text =
            std::fs::read_to_string(Path::new(ROOT).join(format!("ops/{name}.service"))).unwrap();
        let exec = text
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap_or_else(|| panic!("{name}.service has no ExecStart"));
        let program = exec["ExecStart=".len()..].split(' ').next().unwrap();
        assert!(program.ends_with("/sealstream"), "{exec}");
        let unit = dir.path().join(format!("{name}.service"));
        std::fs::write(&unit, text.replace(exec, &exec.replace(program, bin))).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .expect("systemd-analyze (Debian's systemd; .ci/run installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains(&format!("{name}.service")),
            "systemd-analyze verify {name}.service: {stderr}"
        );
        if name == "sealstream-agent" {
            let has = |line: &str| text.lines().any(|l| l.trim() == line);
            assert!(has("User=root"), "the agent reads every user's X cookie");
            assert!(has("Restart=on-failure"));
            assert!(exec.contains("--capture x11"), "{exec}");
        }
    }
}
