//! Starts the built binary on port 0 and talks to it.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

#[tokio::test]
async fn the_binary_starts_prints_generated_secrets_and_serves() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_app"))
        .current_dir(data.path())
        .env_clear()
        .env("BACKEND_PORT", "0")
        .env("BACKEND_HOST", "127.0.0.1")
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut port = None;
    let mut saw_password = false;
    let mut saw_proxy_key = false;
    while port.is_none() {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server logs its port");
        saw_password |= line.contains("ADMIN_PASSWORD is not set");
        saw_proxy_key |= line.contains("GLOBAL_PROXY_KEYS is not set");
        if line.contains("listening") {
            port = line
                .split("port=")
                .nth(1)
                .and_then(|p| p.split_whitespace().next())
                .and_then(|p| p.parse::<u16>().ok());
        }
    }
    assert!(
        saw_password && saw_proxy_key,
        "generated secrets are announced once"
    );
    assert!(
        data.path().join("data/api_key_rotator.db").exists(),
        "SQLite file under ./data"
    );
    let health = reqwest::get(format!("http://127.0.0.1:{}/health", port.unwrap()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_invalid_variable_stops_start_up_with_one_line_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_app"))
        .env_clear()
        .env("BACKEND_PORT", "eighty")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("BACKEND_PORT"), "{stderr}");
}

#[test]
fn version_reports_the_edition() {
    let output = Command::new(env!("CARGO_BIN_EXE_app"))
        .arg("--version")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("api-key-rotator "), "{stdout}");
    assert!(
        stdout.contains("lightweight") || stdout.contains("enterprise"),
        "{stdout}"
    );
}

#[test]
fn help_prints_usage_and_does_not_start_a_server() {
    let output = Command::new(env!("CARGO_BIN_EXE_app"))
        .arg("--help")
        .env("BACKEND_PORT", "eighty")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Usage:") && stdout.contains("serve"),
        "{stdout}"
    );
}

#[test]
fn an_unknown_argument_is_refused_with_usage() {
    let output = Command::new(env!("CARGO_BIN_EXE_app"))
        .arg("--bogus")
        .env("BACKEND_PORT", "eighty")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Usage:"), "{stderr}");
}
