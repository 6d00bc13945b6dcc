//! `cargo xtask dist --edition <lightweight|enterprise>`: the release artifact of one edition.
//!
//! A release build of `app` with the edition's features (the release profile strips symbols),
//! checked to report that edition in `--version`, staged in `<target>/dist/<edition>/` as
//! `api-key-rotator` next to `.env.example`, `README.md`, `LICENSE`, `docs/` and `deploy/`, then
//! archived as `<target>/dist/api-key-rotator-<version>-<edition>-<target-triple>.tar.gz` with a
//! `.sha256` file in `sha256sum` format. Staging and archiving take any binary, so tests run
//! them on a fake one without a release build.

use std::{
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use flate2::{Compression, write::GzEncoder};
use sha2::{Digest, Sha256};

use crate::{flags::Edition, project_root, run as sh};

/// The name of the server binary in every artifact (the Cargo target is `app`).
pub const BINARY_NAME: &str = "api-key-rotator";

/// Files copied from the repository root next to the binary.
pub const STAGED_FILES: &[&str] = &[".env.example", "README.md", "LICENSE"];

/// Directories copied whole from the repository root next to the binary.
pub const STAGED_DIRS: &[&str] = &["docs", "deploy"];

/// Builds, checks, stages and archives one edition, then prints the archive's path and size.
pub fn run(edition: Edition) -> anyhow::Result<()> {
    let root = project_root();
    let target = target_dir(&root);
    let mut args = vec!["build", "--release", "--locked", "-p", "app"];
    args.extend_from_slice(edition.cargo_features());
    sh("cargo", &args)?;

    let binary = target
        .join("release")
        .join(format!("app{}", std::env::consts::EXE_SUFFIX));
    let version = workspace_version(&root)?;
    check_version_output(&binary, &version, edition)?;

    let out = target.join("dist");
    let staged = stage(&root, edition, &binary, &out)?;
    let name = archive_name(&version, edition, &host_triple()?);
    let archive = archive(&staged, &out.join(name))?;
    println!(
        "{} ({})\n{}",
        archive.path.display(),
        human_size(archive.size),
        archive.checksum_path.display()
    );
    Ok(())
}

/// `CARGO_TARGET_DIR` when set (relative to the repository root), else `target/`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// `[workspace.package] version` of the root manifest.
pub fn workspace_version(root: &Path) -> anyhow::Result<String> {
    let path = root.join("Cargo.toml");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: toml::Table = text
        .parse()
        .with_context(|| format!("cannot parse {}", path.display()))?;
    manifest
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .context("the root Cargo.toml has no [workspace.package] version")
}

/// The host's target triple, from `rustc -vV`: release builds are for the host.
pub fn host_triple() -> anyhow::Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(&rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("cannot start {rustc}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|host| host.trim().to_owned())
        .context("`rustc -vV` printed no host line")
}

/// `api-key-rotator-<version>-<edition>-<target>.tar.gz`.
pub fn archive_name(version: &str, edition: Edition, target: &str) -> String {
    format!("{BINARY_NAME}-{version}-{edition}-{target}.tar.gz")
}

/// What `api-key-rotator --version` prints for this version and edition.
pub fn expected_version_line(version: &str, edition: Edition) -> String {
    format!("{BINARY_NAME} {version} ({edition})")
}

/// Runs `binary --version` and checks it names this version and edition.
///
/// # Errors
/// The binary does not run, or reports another version or edition.
pub fn check_version_output(binary: &Path, version: &str, edition: Edition) -> anyhow::Result<()> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let expected = expected_version_line(version, edition);
    if !output.status.success() || printed != expected {
        bail!(
            "{} --version printed {printed:?} ({}), expected {expected:?}",
            binary.display(),
            output.status
        );
    }
    Ok(())
}

/// Lays out `<out_dir>/<edition>/`: the binary as `api-key-rotator` (mode 755), the
/// [`STAGED_FILES`] and the [`STAGED_DIRS`] of `root`. An older staging is replaced.
///
/// # Errors
/// A source is missing or a file cannot be written.
pub fn stage(
    root: &Path,
    edition: Edition,
    binary: &Path,
    out_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let dir = out_dir.join(edition.name());
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let staged_binary = dir.join(BINARY_NAME);
    fs::copy(binary, &staged_binary)
        .with_context(|| format!("cannot copy the binary {}", binary.display()))?;
    set_executable(&staged_binary)?;
    for file in STAGED_FILES {
        fs::copy(root.join(file), dir.join(file)).with_context(|| format!("cannot copy {file}"))?;
    }
    for sub in STAGED_DIRS {
        copy_tree(&root.join(sub), &dir.join(sub))?;
    }
    Ok(dir)
}

#[cfg(unix)]
fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(not(unix))]
fn set_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for (relative, source) in files_under(from)? {
        let destination = to.join(&relative);
        if let Some(parent) = destination.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::copy(&source, &destination)
            .with_context(|| format!("cannot copy {}", source.display()))?;
    }
    Ok(())
}

/// Every regular file under `dir` as (path relative to `dir`, full path), sorted.
fn files_under(dir: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries =
            fs::read_dir(&current).with_context(|| format!("cannot read {}", current.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                let relative = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                files.push((relative, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A written archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// The `.tar.gz`.
    pub path: PathBuf,
    /// The `.tar.gz.sha256` next to it.
    pub checksum_path: PathBuf,
    /// Size of the `.tar.gz` in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the `.tar.gz`.
    pub sha256: String,
}

/// Writes `archive_path` (a `.tar.gz`) holding every file of `staged` under one top-level
/// directory named like the archive, in sorted order, owned by root, with the binary and the
/// scripts executable (755) and everything else 644, then the checksum file next to it.
///
/// # Errors
/// A file cannot be read or written.
pub fn archive(staged: &Path, archive_path: &Path) -> anyhow::Result<Archive> {
    let file_name = archive_path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the archive path has no file name")?;
    let top = file_name.strip_suffix(".tar.gz").unwrap_or(file_name);
    if let Some(parent) = archive_path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mtime = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });

    let output = fs::File::create(archive_path)
        .with_context(|| format!("cannot create {}", archive_path.display()))?;
    let mut tar = tar::Builder::new(GzEncoder::new(output, Compression::best()));
    for (relative, source) in files_under(staged)? {
        let relative = relative
            .to_str()
            .context("staged file names are UTF-8")?
            .replace('\\', "/");
        let metadata = fs::metadata(&source)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(metadata.len());
        let executable = relative == BINARY_NAME || is_executable(&metadata);
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        let mut reader =
            fs::File::open(&source).with_context(|| format!("cannot read {}", source.display()))?;
        tar.append_data(&mut header, format!("{top}/{relative}"), &mut reader)
            .with_context(|| format!("cannot archive {relative}"))?;
    }
    tar.into_inner()?.finish()?.flush()?;

    let sha256 = sha256_file(archive_path)?;
    let checksum_path = PathBuf::from(format!("{}.sha256", archive_path.display()));
    fs::write(&checksum_path, format!("{sha256}  {file_name}\n"))
        .with_context(|| format!("cannot write {}", checksum_path.display()))?;
    Ok(Archive {
        path: archive_path.to_path_buf(),
        checksum_path,
        size: fs::metadata(archive_path)?.len(),
        sha256,
    })
}

#[cfg(unix)]
fn is_executable(metadata: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &fs::Metadata) -> bool {
    false
}

/// Lower-case hex SHA-256 of a file's bytes.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `12.3 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
    use std::collections::BTreeMap;

    use flate2::read::GzDecoder;

    use super::*;

    /// Path inside the archive → (mode, contents).
    fn read_archive(path: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
        let mut tar = tar::Archive::new(GzDecoder::new(fs::File::open(path).unwrap()));
        let mut entries = BTreeMap::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mode = entry.header().mode().unwrap();
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).unwrap();
            entries.insert(name, (mode, contents));
        }
        entries
    }

    #[test]
    fn the_archive_holds_the_binary_the_docs_and_the_deploy_files() {
        let root = project_root();
        let scratch = tempfile::tempdir().unwrap();
        let fake_binary = scratch.path().join("app");
        fs::write(&fake_binary, b"#!/bin/sh\necho fake\n").unwrap();
        let out = scratch.path().join("dist");

        let staged = stage(&root, Edition::Enterprise, &fake_binary, &out).unwrap();
        assert_eq!(staged, out.join("enterprise"));
        let name = archive_name("9.8.7", Edition::Enterprise, "x86_64-unknown-linux-gnu");
        assert_eq!(
            name,
            "api-key-rotator-9.8.7-enterprise-x86_64-unknown-linux-gnu.tar.gz"
        );
        let written = archive(&staged, &out.join(&name)).unwrap();

        let top = "api-key-rotator-9.8.7-enterprise-x86_64-unknown-linux-gnu";
        let entries = read_archive(&written.path);
        let (mode, contents) = &entries[&format!("{top}/api-key-rotator")];
        assert_eq!(mode & 0o777, 0o755, "the binary is executable");
        assert_eq!(contents.as_slice(), b"#!/bin/sh\necho fake\n");
        for file in STAGED_FILES {
            let (mode, contents) = &entries[&format!("{top}/{file}")];
            assert_eq!(mode & 0o777, 0o644);
            assert_eq!(contents, &fs::read(root.join(file)).unwrap(), "{file}");
        }
        for required in [
            "docs/architecture.md",
            "docs/configuration.md",
            "docs/admin-api.md",
            "docs/openapi.json",
            "docs/proxy-usage.md",
            "docs/extending.md",
            "docs/operations.md",
            "deploy/Dockerfile",
            "deploy/docker-compose.lightweight.yml",
            "deploy/docker-compose.enterprise.yml",
            "deploy/k8s/deployment.yaml",
            "deploy/systemd/api-key-rotator.service",
        ] {
            assert!(
                entries.contains_key(&format!("{top}/{required}")),
                "{required} is missing from {:#?}",
                entries.keys()
            );
        }
        let (mode, _) = &entries[&format!("{top}/deploy/healthcheck.sh")];
        assert_eq!(mode & 0o777, 0o755, "scripts stay executable");
        for (relative, _) in files_under(&root.join("deploy")).unwrap() {
            let inside = format!("{top}/deploy/{}", relative.display());
            assert!(entries.contains_key(&inside), "{inside}");
        }
        assert!(
            entries.keys().all(|k| k.starts_with(&format!("{top}/"))),
            "one top-level directory"
        );

        let checksum = fs::read_to_string(&written.checksum_path).unwrap();
        assert_eq!(
            written.checksum_path.file_name().unwrap().to_str().unwrap(),
            format!("{name}.sha256")
        );
        assert_eq!(checksum, format!("{}  {name}\n", written.sha256));
        assert_eq!(written.sha256, sha256_file(&written.path).unwrap());
        assert_eq!(written.size, fs::metadata(&written.path).unwrap().len());
    }

    #[test]
    fn staging_again_replaces_the_old_staging() {
        let scratch = tempfile::tempdir().unwrap();
        let fake_binary = scratch.path().join("app");
        fs::write(&fake_binary, b"one").unwrap();
        let out = scratch.path().join("dist");
        let staged = stage(&project_root(), Edition::Lightweight, &fake_binary, &out).unwrap();
        fs::write(staged.join("stale.txt"), b"left over").unwrap();
        let staged = stage(&project_root(), Edition::Lightweight, &fake_binary, &out).unwrap();
        assert!(!staged.join("stale.txt").exists());
        assert_eq!(fs::read(staged.join(BINARY_NAME)).unwrap(), b"one");
    }

    /// The debug `app` binary Cargo built next to this test (present when the workspace's tests
    /// are built, as in CI), staged like a release binary, reports its edition.
    #[test]
    fn the_staged_binary_reports_its_edition() {
        let debug_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap();
        let built = debug_dir.join(format!("app{}", std::env::consts::EXE_SUFFIX));
        if !built.exists() {
            eprintln!(
                "skipped: {} not built; run `cargo build -p app` or the workspace tests first",
                built.display()
            );
            return;
        }
        // Stage a copy first: a concurrent build may replace the file under target/.
        let scratch = tempfile::tempdir().unwrap();
        let staged = stage(
            &project_root(),
            Edition::Lightweight,
            &built,
            scratch.path(),
        )
        .unwrap();
        let binary = staged.join(BINARY_NAME);
        let version = workspace_version(&project_root()).unwrap();
        let printed = Command::new(&binary).arg("--version").output().unwrap();
        let printed = String::from_utf8_lossy(&printed.stdout).trim().to_owned();
        let edition = Edition::ALL
            .into_iter()
            .find(|e| printed == expected_version_line(&version, *e))
            .unwrap_or_else(|| panic!("unexpected --version output {printed:?}"));
        check_version_output(&binary, &version, edition).unwrap();
        let other = Edition::ALL.into_iter().find(|e| *e != edition).unwrap();
        assert!(
            check_version_output(&binary, &version, other).is_err(),
            "a binary of the wrong edition is refused"
        );
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
