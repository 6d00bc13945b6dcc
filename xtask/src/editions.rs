//! Checks of the editions as built binaries: a lightweight binary refuses an enterprise
//! configuration with one line naming the feature to enable.
#![allow(clippy::expect_used)]

use std::process::Command;

use crate::project_root;

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

#[test]
fn a_lightweight_binary_refuses_mysql_and_redis_with_one_line_naming_the_feature() {
    // The workspace's own target directory: dependencies built for the tests are reused.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| project_root().join("target"), Into::into);
    let build = Command::new(cargo())
        .args([
            "build",
            "-p",
            "app",
            "--no-default-features",
            "--features",
            "lightweight",
            "--bin",
            "app",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(project_root())
        .status()
        .expect("cargo build runs");
    assert!(build.success(), "the lightweight binary builds");
    let binary = std::path::PathBuf::from(&target).join("debug").join("app");
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .expect("binary runs");
    assert!(String::from_utf8_lossy(&version.stdout).contains("(lightweight)"));
    for (variable, value) in [
        ("DB_TYPE", "mysql"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0"),
    ] {
        let data = std::env::temp_dir().join(format!("akr-editions-{}", std::process::id()));
        let output = Command::new(&binary)
            .env_clear()
            .env(variable, value)
            .env("BACKEND_PORT", "0")
            .env("DATABASE_PATH", data.join("x.db"))
            .output()
            .expect("binary runs");
        assert!(
            !output.status.success(),
            "{variable}={value} must not start"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains("`enterprise` feature"), "{stderr}");
        let _ = std::fs::remove_dir_all(data);
    }
}
