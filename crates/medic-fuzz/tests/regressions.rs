//! Every input kept in `regressions/<target>/` (crashes the fuzzer found,
//! once fixed) runs through its target on every test run, and so does a
//! short fixed-seed run of each target, so the harness itself cannot rot.
//!
//! Inputs whose bug is not fixed yet are named `open-*`: they are replayed
//! only by the ignored test `open_findings`, which fails until the fix
//! lands; then drop the `open-` prefix.

use std::path::{Path, PathBuf};

use medic_fuzz::driver::{self, Budget};
use medic_fuzz::{fixtures, targets};

fn inputs(target: &str, open: bool) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        !name.starts_with('.') && name.starts_with("open-") == open
    });
    files.sort();
    files
}

fn replay(open: bool) -> Vec<String> {
    fixtures::init(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("medic-fuzz"));
    let mut failures = Vec::new();
    for target in targets::ALL {
        for file in inputs(target.name, open) {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if let Err(p) = driver::execute(&target, &data) {
                failures.push(format!(
                    "{}: panicked: {}\n  at {}\n  medic frame: {}",
                    file.display(),
                    p.message,
                    p.location,
                    p.site.as_deref().unwrap_or("(none)")
                ));
            }
        }
    }
    failures
}

#[test]
fn fixed_findings_stay_fixed() {
    let failures = replay(false);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
#[ignore = "open findings: fails until each is fixed (then drop the open- prefix)"]
fn open_findings() {
    let failures = replay(true);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A few hundred executions per target with a fixed seed: the harness and
/// every target's seeds still work.
#[test]
fn targets_run() {
    fixtures::init(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("medic-fuzz"));
    for target in targets::ALL {
        let report = driver::fuzz(
            &target,
            Budget {
                time: None,
                execs: Some(300),
            },
            1,
            None,
        );
        println!("{}", report.summary());
        assert!(
            report.findings.is_empty(),
            "{}\n{}",
            report.summary(),
            report.details()
        );
    }
}

#[test]
fn fixed_policies_are_valid() {
    assert_eq!(targets::engine::policies().len(), 4);
}

#[test]
fn every_target_is_named() {
    for t in targets::ALL {
        assert_eq!(targets::by_name(t.name).map(|x| x.name), Some(t.name));
    }
}
