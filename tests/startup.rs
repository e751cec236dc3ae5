//! Start-up failures end the gateway with one line that says how to fix them.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn run_gateway(python: &str, extra: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mysticchallenge"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--python",
            python,
        ])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(output.stdout.is_empty(), "nothing announced on stdout");
    (output.status.code().unwrap_or(-1), last)
}

#[test]
fn a_missing_interpreter_says_to_pass_python() {
    let (code, last) = run_gateway("/nonexistent/python3", &[]);
    assert_eq!(code, 1);
    assert!(last.starts_with("error: "), "{last}");
    assert!(
        last.contains("/nonexistent/python3") && last.contains("--python"),
        "{last}"
    );
}

#[test]
fn an_interpreter_without_worker_shim_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("python");
    // -I -S: no site-packages, so worker_shim cannot be imported.
    std::fs::write(&wrapper, "#!/bin/sh\nexec python3 -I -S \"$@\"\n").unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = wrapper.to_string_lossy().into_owned();
    let (code, last) = run_gateway(&wrapper, &[]);
    assert_eq!(code, 1);
    assert!(last.contains("cannot import `worker_shim`"), "{last}");
    assert!(
        last.contains(&format!("{wrapper} -m pip install .")),
        "{last}"
    );
}

#[test]
fn an_interpreter_without_the_native_extension_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    // A `mystic_native` that cannot be imported, ahead of the real one.
    let shadow = dir.path().join("mystic_native");
    std::fs::create_dir(&shadow).unwrap();
    std::fs::write(
        shadow.join("__init__.py"),
        "raise ImportError('no extension built here')\n",
    )
    .unwrap();
    let wrapper = dir.path().join("python");
    // PYTHONSAFEPATH: `-m` must not put the current directory (the
    // repository, with the real package) ahead of it.
    let script = format!(
        "#!/bin/sh\nPYTHONSAFEPATH=1 PYTHONPATH={} exec {} \"$@\"\n",
        dir.path().display(),
        common_python()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = wrapper.to_string_lossy().into_owned();
    let (code, last) = run_gateway(&wrapper, &[]);
    assert_eq!(code, 1);
    assert!(last.contains("cannot import `mystic_native`"), "{last}");
    assert!(last.contains("no extension built here"), "{last}");
    assert!(
        last.contains(&format!("{wrapper} -m pip install .")),
        "{last}"
    );
}

/// The interpreter with the packages: `$MYSTIC_PYTHON`, else the repo's venv.
fn common_python() -> String {
    std::env::var("MYSTIC_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn bad_flags_are_refused_before_anything_starts() {
    let output = Command::new(env!("CARGO_BIN_EXE_mysticchallenge"))
        .args(["--transport", "carrier-pigeon"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[possible values: pipe, shm]"), "{stderr}");
    for bad in [
        ["--workers", "0"],
        ["--ring-bytes", "1000"],
        ["--call-timeout", "-1"],
    ] {
        let (code, _) = run_gateway("python3", &bad);
        assert_eq!(code, 2, "{bad:?}");
    }
}
