//! Checks of the deployment files, run as ordinary tests since no container engine runs here:
//! every YAML file parses; the Dockerfile runs the real `cargo xtask dist` flags and copies the
//! binary that task stages; every variable named in `deploy/` and `.env.example` is one the
//! server reads (`VARIABLES` in `crates/app/src/config.rs`), and every one it reads is documented;
//! health checks hit `/ready` or `/health`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use serde_norway::Value;

use crate::{dist::BINARY_NAME, flags::Edition, project_root};

fn read(relative: &str) -> String {
    let path = project_root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The names in `VARIABLES` of the app's `config.rs`.
fn server_variables() -> BTreeSet<String> {
    let source = read("crates/app/src/config.rs");
    let start = source
        .find("pub const VARIABLES")
        .expect("config.rs declares VARIABLES");
    let block = &source[start..];
    let end = block.find("];").expect("VARIABLES ends");
    let names: BTreeSet<String> = block[..end]
        .lines()
        .filter_map(|line| line.trim().strip_prefix("(\""))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    assert!(names.len() > 20, "VARIABLES was read: {names:?}");
    names
}

fn unknown<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<&'a String> {
    let known = server_variables();
    names.into_iter().filter(|n| !known.contains(*n)).collect()
}

/// `NAME` of a `NAME=value` or `# NAME=value` line.
fn assigned_name(line: &str) -> Option<&str> {
    let text = line.trim_start_matches('#').trim();
    let (name, _) = text.split_once('=')?;
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    valid.then_some(name)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Every document of a YAML file.
fn yaml_documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(relative: &str) -> Value {
    let mut documents = yaml_documents(&project_root().join(relative));
    assert_eq!(documents.len(), 1, "{relative} holds one document");
    documents.remove(0)
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .and_then(Value::as_str)
}

/// Every document of every manifest in `deploy/k8s`, by kind.
fn k8s_objects() -> Vec<(String, Value)> {
    yaml_files(&project_root().join("deploy/k8s"))
        .iter()
        .flat_map(|path| yaml_documents(path))
        .filter_map(|doc| Some((doc.get("kind")?.as_str()?.to_owned(), doc)))
        .collect()
}

/// The one object of `kind` among the base manifests, the files directly in `deploy/k8s` (its
/// subdirectories are overlays patching them, e.g. for Redis Cluster or Sentinel).
fn k8s_object(kind: &str) -> Value {
    let base = project_root().join("deploy/k8s");
    let mut found: Vec<Value> = yaml_files(&base)
        .iter()
        .filter(|path| path.parent() == Some(base.as_path()))
        .flat_map(|path| yaml_documents(path))
        .filter(|doc| doc.get("kind").and_then(Value::as_str) == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in deploy/k8s");
    found.remove(0)
}

/// The compose services built from deploy/Dockerfile or running its image.
fn app_services(compose: &Value) -> Vec<(String, Value)> {
    let services = compose
        .get("services")
        .and_then(Value::as_mapping)
        .expect("compose file has services");
    services
        .iter()
        .filter(|(_, service)| {
            str_at(service, &["build", "dockerfile"]) == Some("deploy/Dockerfile")
                || service
                    .get("image")
                    .and_then(Value::as_str)
                    .is_some_and(|i| i.starts_with(BINARY_NAME))
        })
        .map(|(name, service)| {
            (
                name.as_str().unwrap_or_default().to_owned(),
                service.clone(),
            )
        })
        .collect()
}

/// Names set by a compose `environment` (mapping or `NAME=value` list).
fn compose_environment(service: &Value) -> BTreeSet<String> {
    match service.get("environment") {
        Some(Value::Mapping(map)) => map
            .keys()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::Sequence(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|entry| entry.split('=').next())
            .map(str::to_owned)
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// The text of a compose healthcheck `test`.
fn healthcheck_test(service: &Value) -> String {
    match service.get("healthcheck").and_then(|h| h.get("test")) {
        Some(Value::Sequence(parts)) => parts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    }
}

/// Dockerfile instructions with continuation lines joined, as (INSTRUCTION, arguments).
fn dockerfile_instructions() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("deploy/Dockerfile").lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((word.to_ascii_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

#[test]
fn every_yaml_file_in_deploy_parses() {
    let files = yaml_files(&project_root().join("deploy"));
    assert!(files.len() >= 7, "deploy files were found: {files:?}");
    for file in files {
        assert!(
            !yaml_documents(&file).is_empty(),
            "{} is empty",
            file.display()
        );
    }
}

#[test]
fn the_dockerfile_builds_with_the_real_dist_task_and_runs_its_binary() {
    let instructions = dockerfile_instructions();
    let all = |word: &str| -> Vec<&String> {
        instructions
            .iter()
            .filter(|(w, _)| w == word)
            .map(|(_, rest)| rest)
            .collect()
    };
    let default_edition = all("ARG")
        .iter()
        .find_map(|arg| arg.strip_prefix("EDITION="))
        .expect("ARG EDITION=<default>");
    default_edition
        .parse::<Edition>()
        .expect("the default edition is one xtask knows");
    assert_eq!(default_edition, Edition::Lightweight.name());

    let stages = all("FROM");
    assert!(stages.len() >= 2, "multi-stage build: {stages:?}");
    let rust_version = all("ARG")
        .iter()
        .find_map(|arg| arg.strip_prefix("RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let manifest: toml::Table = read("Cargo.toml").parse().expect("root manifest");
    let minimum = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .expect("rust-version");
    let numbers = |v: &str| -> Vec<u32> { v.split('.').filter_map(|n| n.parse().ok()).collect() };
    assert!(
        numbers(rust_version) >= numbers(minimum),
        "the build image's Rust {rust_version} is older than rust-version {minimum}"
    );

    let runs = all("RUN");
    let dist = runs
        .iter()
        .find(|r| r.contains("cargo xtask dist"))
        .expect("the build stage runs cargo xtask dist");
    let after = dist
        .split("cargo xtask dist")
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .map(|w| w.trim_matches('"'))
        .collect::<Vec<_>>();
    let task: Vec<String> = ["dist"]
        .into_iter()
        .chain(after.iter().copied())
        .map(|w| {
            w.replace("${EDITION}", default_edition)
                .replace("$EDITION", default_edition)
        })
        .collect();
    assert_eq!(
        crate::flags::Task::from_args(task.into_iter())
            .expect("xtask accepts the Dockerfile's flags"),
        crate::flags::Task::Dist {
            edition: Edition::Lightweight
        }
    );
    assert!(
        after.first() == Some(&"--edition")
            && matches!(after.get(1), Some(&"${EDITION}") | Some(&"$EDITION")),
        "dist is run with the EDITION build argument: {dist}"
    );

    let staged = format!("target/dist/${{EDITION}}/{BINARY_NAME}");
    assert!(
        !instructions
            .iter()
            .any(|(_, rest)| rest.contains("CARGO_TARGET_DIR")),
        "dist stages under target/ only while CARGO_TARGET_DIR is unset"
    );
    let copies = all("COPY");
    let binary_copy = copies
        .iter()
        .find(|c| c.starts_with("--from=") && c.contains(&staged))
        .unwrap_or_else(|| panic!("the runtime stage copies {staged}: {copies:?}"));
    let installed = binary_copy
        .split_whitespace()
        .last()
        .expect("COPY destination")
        .to_owned();
    assert!(installed.ends_with(BINARY_NAME), "{installed}");

    let entrypoint = all("ENTRYPOINT");
    assert!(
        entrypoint
            .iter()
            .any(|e| e.contains(&format!("\"{BINARY_NAME}\"")) || e.contains(&installed)),
        "the image runs {BINARY_NAME}: {entrypoint:?}"
    );
    let user = all("USER");
    let user = user.last().expect("a USER instruction");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "the runtime user is not root: {user}"
    );
    let healthcheck = all("HEALTHCHECK")
        .iter()
        .map(|h| h.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(healthcheck.contains("/health"), "{healthcheck}");
    let probe = copies
        .iter()
        .find(|c| c.starts_with("deploy/healthcheck.sh"))
        .expect("the health probe is copied into the image");
    let probe_name = probe.split_whitespace().last().unwrap_or_default();
    assert!(
        healthcheck.contains(probe_name.rsplit('/').next().unwrap_or_default()),
        "HEALTHCHECK runs the copied probe {probe_name}: {healthcheck}"
    );
    assert!(all("EXPOSE").iter().any(|e| e.trim() == "8000"));
    assert!(all("VOLUME").iter().any(|v| v.contains("/app/data")));
    let env_names: Vec<String> = all("ENV")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .filter_map(assigned_name)
        .map(str::to_owned)
        .collect();
    assert!(env_names.contains(&"DATABASE_PATH".to_owned()));
    assert!(
        unknown(&env_names).is_empty(),
        "the Dockerfile sets variables the server does not read: {:?}",
        unknown(&env_names)
    );
}

#[test]
fn the_app_features_of_every_edition_exist() {
    let manifest: toml::Table = read("crates/app/Cargo.toml").parse().expect("app manifest");
    let features = manifest["features"].as_table().expect("[features]");
    for edition in Edition::ALL {
        let flags = edition.cargo_features();
        let named = flags
            .iter()
            .skip_while(|f| **f != "--features")
            .nth(1)
            .expect("a --features flag");
        for feature in named.split(',') {
            assert!(
                features.contains_key(feature),
                "{edition} builds with `{feature}`, which crates/app lacks"
            );
        }
    }
    assert!(
        Edition::Enterprise.cargo_features().contains(&"enterprise")
            && !Edition::Enterprise
                .cargo_features()
                .contains(&"--no-default-features"),
        "enterprise keeps the default lightweight backends"
    );
}

#[test]
fn the_lightweight_compose_file_keeps_its_data_in_a_volume() {
    let compose = yaml("deploy/docker-compose.lightweight.yml");
    let services = app_services(&compose);
    assert_eq!(services.len(), 1, "one app service");
    let (_, app) = &services[0];
    assert_eq!(
        str_at(app, &["build", "args", "EDITION"]),
        Some("lightweight")
    );
    let volumes: Vec<&str> = app
        .get("volumes")
        .and_then(Value::as_sequence)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let data = volumes
        .iter()
        .find(|v| v.ends_with(":/app/data"))
        .expect("a volume on /app/data");
    let named = data.split(':').next().unwrap_or_default();
    assert!(
        compose.get("volumes").and_then(|v| v.get(named)).is_some(),
        "{named} is a named volume"
    );
}

#[test]
fn the_enterprise_compose_file_runs_two_replicas_on_mysql_8_and_redis_7() {
    let compose = yaml("deploy/docker-compose.enterprise.yml");
    let services = app_services(&compose);
    assert_eq!(services.len(), 1, "one app service, replicated");
    let (_, app) = &services[0];
    assert_eq!(
        str_at(app, &["build", "args", "EDITION"]),
        Some("enterprise")
    );
    assert_eq!(
        app.get("deploy")
            .and_then(|d| d.get("replicas"))
            .and_then(Value::as_u64),
        Some(2)
    );
    let environment = compose_environment(app);
    for shared in ["JWT_SECRET", "GLOBAL_PROXY_KEYS", "ADMIN_PASSWORD"] {
        let value = str_at(app, &["environment", shared]).unwrap_or_default();
        assert!(
            value.contains(":?"),
            "{shared} is required from the environment, since replicas must share it: {value:?}"
        );
    }
    for needed in ["DB_HOST", "REDIS_HOST", "DB_PASSWORD", "REDIS_PASSWORD"] {
        assert!(environment.contains(needed), "{needed}");
    }
    let images: Vec<&str> = compose["services"]
        .as_mapping()
        .map(|m| {
            m.values()
                .filter_map(|s| s.get("image").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        images.iter().any(|i| i.starts_with("mysql:8")),
        "{images:?}"
    );
    assert!(
        images.iter().any(|i| i.starts_with("redis:7")),
        "{images:?}"
    );
    for dependency in ["mysql", "redis"] {
        assert_eq!(
            str_at(app, &["depends_on", dependency, "condition"]),
            Some("service_healthy"),
            "the app waits for {dependency}"
        );
        assert!(
            compose["services"][dependency].get("healthcheck").is_some(),
            "{dependency} has a health check"
        );
    }
    assert!(healthcheck_test(app).contains("/ready"));
}

/// Every compose file in `deploy/` (`docker-compose.*.yml`), relative to the project root.
fn compose_files() -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(project_root().join("deploy"))
        .expect("deploy/ is readable")
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with("docker-compose.") && name.ends_with(".yml"))
        .map(|name| format!("deploy/{name}"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "compose files were found: {files:?}");
    files
}

#[test]
fn the_postgres_compose_file_runs_two_replicas_on_postgres_and_redis_7() {
    let compose = yaml("deploy/docker-compose.postgres.yml");
    let services = app_services(&compose);
    assert_eq!(services.len(), 1, "one app service, replicated");
    let (_, app) = &services[0];
    assert_eq!(
        str_at(app, &["build", "args", "EDITION"]),
        Some("enterprise")
    );
    assert_eq!(
        app.get("deploy")
            .and_then(|d| d.get("replicas"))
            .and_then(Value::as_u64),
        Some(2)
    );
    assert_eq!(str_at(app, &["environment", "DB_TYPE"]), Some("postgres"));
    assert_eq!(str_at(app, &["environment", "DB_PORT"]), Some("5432"));
    for shared in ["JWT_SECRET", "GLOBAL_PROXY_KEYS", "ADMIN_PASSWORD"] {
        let value = str_at(app, &["environment", shared]).unwrap_or_default();
        assert!(value.contains(":?"), "{shared} is required: {value:?}");
    }
    let postgres = &compose["services"]["postgres"];
    assert!(
        str_at(postgres, &["image"]).is_some_and(|i| i.starts_with("postgres:")),
        "{postgres:?}"
    );
    // The server and the app agree on the database, user and password.
    let environment = compose_environment(app);
    assert!(environment.contains("DB_PASSWORD"));
    assert_eq!(
        str_at(postgres, &["environment", "POSTGRES_DB"]),
        str_at(app, &["environment", "DB_NAME"])
    );
    assert_eq!(
        str_at(postgres, &["environment", "POSTGRES_USER"]),
        str_at(app, &["environment", "DB_USER"])
    );
    assert_eq!(
        str_at(postgres, &["environment", "POSTGRES_PASSWORD"]),
        str_at(app, &["environment", "DB_PASSWORD"])
    );
    for dependency in ["postgres", "redis"] {
        assert_eq!(
            str_at(app, &["depends_on", dependency, "condition"]),
            Some("service_healthy"),
            "the app waits for {dependency}"
        );
        assert!(
            compose["services"][dependency].get("healthcheck").is_some(),
            "{dependency} has a health check"
        );
    }
    assert!(healthcheck_test(app).contains("/ready"));
}

#[test]
fn the_postgres_kustomization_points_the_base_configmap_at_postgres() {
    let kustomization = yaml("deploy/k8s-postgres/kustomization.yaml");
    let resources: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(resources, ["../k8s"], "an overlay of the base manifests");
    let patches = kustomization["patches"].as_sequence().expect("patches");
    assert_eq!(patches.len(), 1);
    let configmap = k8s_object("ConfigMap");
    assert_eq!(
        str_at(&patches[0], &["target", "name"]),
        str_at(&configmap, &["metadata", "name"])
    );
    assert_eq!(str_at(&patches[0], &["target", "kind"]), Some("ConfigMap"));
    let operations: Value =
        serde_norway::from_str(str_at(&patches[0], &["patch"]).expect("an inline JSON patch"))
            .expect("the patch is YAML");
    let mut set = std::collections::BTreeMap::new();
    for operation in operations.as_sequence().expect("a list of operations") {
        assert_eq!(str_at(operation, &["op"]), Some("replace"));
        let path = str_at(operation, &["path"]).unwrap_or_default();
        let name = path.strip_prefix("/data/").expect("a ConfigMap data key");
        assert!(
            configmap["data"].get(name).is_some(),
            "the base ConfigMap has {name} to replace"
        );
        set.insert(
            name.to_owned(),
            str_at(operation, &["value"]).unwrap_or_default().to_owned(),
        );
    }
    assert!(
        unknown(set.keys()).is_empty(),
        "the overlay sets variables the server does not read"
    );
    assert_eq!(set.get("DB_TYPE").map(String::as_str), Some("postgres"));
    assert_eq!(set.get("DB_PORT").map(String::as_str), Some("5432"));
}

#[test]
fn the_redis_topology_overrides_point_the_app_at_their_cluster_or_sentinels() {
    for (file, scheme, nodes) in [
        (
            "deploy/docker-compose.redis-cluster.yml",
            "redis-cluster://",
            "redis-node-",
        ),
        (
            "deploy/docker-compose.redis-sentinel.yml",
            "redis-sentinel://",
            "redis-sentinel-",
        ),
    ] {
        let compose = yaml(file);
        let services = app_services(&compose);
        assert_eq!(services.len(), 1, "{file}: one app service to override");
        let url = str_at(&services[0].1, &["environment", "REDIS_URL"]).unwrap_or_default();
        assert!(url.starts_with(scheme), "{file}: REDIS_URL {url:?}");
        let mapping = compose["services"].as_mapping().expect("services");
        for host in url
            .split(['@', '&', '?'])
            .filter_map(|part| part.trim_start_matches("node=").split(':').next())
            .filter(|host| host.starts_with(nodes))
        {
            assert!(
                mapping.contains_key(host),
                "{file}: REDIS_URL names {host}, which is no service"
            );
        }
        assert!(
            url.contains(nodes),
            "{file}: REDIS_URL names the {nodes}* services"
        );
    }
}

#[test]
fn the_kubernetes_redis_overlays_patch_the_base_and_move_redis_url_into_the_secret() {
    for overlay in ["redis-cluster", "redis-sentinel"] {
        let dir = format!("deploy/k8s/{overlay}");
        let kustomization = yaml(&format!("{dir}/kustomization.yaml"));
        assert_eq!(
            kustomization["resources"][0].as_str(),
            Some(".."),
            "{overlay} builds on the base"
        );
        let patches = kustomization["patches"].as_sequence().expect("patches");
        for patch in patches {
            let path = patch["path"].as_str().expect("a patch file");
            assert!(
                project_root().join(&dir).join(path).exists(),
                "{overlay}: {path} is missing"
            );
        }
        let secret = yaml(&format!("{dir}/secret.example.yaml"));
        let url = str_at(&secret, &["stringData", "REDIS_URL"]).unwrap_or_default();
        assert!(
            url.starts_with(&format!("{overlay}://")),
            "{overlay}: REDIS_URL {url:?}"
        );
        let config = yaml(&format!("{dir}/configmap.yaml"));
        assert!(
            config["data"]["REDIS_HOST"].is_null(),
            "{overlay} drops the standalone REDIS_HOST"
        );
    }
}

#[test]
fn compose_health_checks_hit_ready_or_health() {
    for file in compose_files() {
        let file = file.as_str();
        for (name, service) in app_services(&yaml(file)) {
            let test = healthcheck_test(&service);
            assert!(
                test.contains("/ready") || test.contains("/health"),
                "{file}: {name} health check {test:?}"
            );
        }
    }
}

#[test]
fn the_kubernetes_deployment_runs_three_probed_limited_replicas() {
    let deployment = k8s_object("Deployment");
    assert_eq!(
        deployment["spec"]["replicas"].as_u64(),
        Some(3),
        "three replicas"
    );
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    assert_eq!(
        str_at(container, &["readinessProbe", "httpGet", "path"]),
        Some("/ready")
    );
    assert_eq!(
        str_at(container, &["livenessProbe", "httpGet", "path"]),
        Some("/health")
    );
    for (side, what) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        assert!(
            container["resources"][side].get(what).is_some(),
            "resources.{side}.{what}"
        );
    }
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(8000));
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    let sources: Vec<(&str, &str)> = container["envFrom"]
        .as_sequence()
        .expect("envFrom")
        .iter()
        .filter_map(|s| {
            if let Some(name) = str_at(s, &["configMapRef", "name"]) {
                Some(("ConfigMap", name))
            } else {
                str_at(s, &["secretRef", "name"]).map(|name| ("Secret", name))
            }
        })
        .collect();
    for kind in ["ConfigMap", "Secret"] {
        let object = k8s_object(kind);
        let name = str_at(&object, &["metadata", "name"]).unwrap_or_default();
        assert!(
            sources.contains(&(kind, name)),
            "the Deployment reads the {kind} {name}: {sources:?}"
        );
    }
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let pdb = k8s_object("PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
    assert!(pdb["spec"]["minAvailable"].as_u64().is_some_and(|n| n < 3));
    let service = k8s_object("Service");
    assert_eq!(&service["spec"]["selector"], selector);
}

#[test]
fn the_kustomization_lists_existing_manifests_and_not_the_secret_template() {
    let kustomization = yaml("deploy/k8s/kustomization.yaml");
    let resources: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for resource in &resources {
        assert!(
            project_root().join("deploy/k8s").join(resource).exists(),
            "{resource}"
        );
    }
    assert!(!resources.contains(&"secret.example.yaml"));
    let deployment_image =
        k8s_object("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    assert_eq!(
        str_at(&kustomization["images"][0], &["name"]),
        Some(deployment_image.as_str())
    );
}

#[test]
fn the_systemd_unit_runs_the_binary_hardened_with_an_environment_file() {
    let unit = read("deploy/systemd/api-key-rotator.service");
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect();
    let value = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };
    let exec = value("ExecStart");
    assert_eq!(exec.len(), 1);
    assert!(
        exec[0]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .ends_with(&format!("/{BINARY_NAME}")),
        "{exec:?}"
    );
    assert_eq!(value("EnvironmentFile").len(), 1);
    for (key, expected) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("DynamicUser", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(value(key), [expected], "{key}");
    }
    let database = value("Environment")
        .into_iter()
        .find_map(|e| e.strip_prefix("DATABASE_PATH="))
        .expect("DATABASE_PATH is set");
    let state = value("StateDirectory");
    assert!(
        database.starts_with(&format!("/var/lib/{}/", state[0])),
        "the database lives in the StateDirectory: {database}"
    );
}

#[test]
fn every_variable_named_in_deploy_files_is_one_the_server_reads() {
    let mut named = BTreeSet::new();
    for file in compose_files() {
        let file = file.as_str();
        let compose = yaml(file);
        for (_, service) in app_services(&compose) {
            named.extend(compose_environment(&service));
        }
        // `${NAME...}` interpolations: the operator sets server variables, nothing else.
        let text = read(file);
        for part in text.split("${").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            named.insert(name);
        }
    }
    for (kind, object) in k8s_objects() {
        let key = match kind.as_str() {
            "ConfigMap" => "data",
            "Secret" => "stringData",
            _ => continue,
        };
        let keys = object[key].as_mapping().expect("ConfigMap/Secret data");
        named.extend(keys.keys().filter_map(Value::as_str).map(str::to_owned));
    }
    for line in read("deploy/systemd/api-key-rotator.service").lines() {
        if let Some(assignment) = line.trim().strip_prefix("Environment=") {
            named.extend(assigned_name(assignment).map(str::to_owned));
        }
    }
    assert!(named.len() > 15, "names were read: {named:?}");
    assert!(
        unknown(&named).is_empty(),
        "deploy files set variables the server does not read: {:?}",
        unknown(&named)
    );
}

#[test]
fn env_example_lists_every_variable_once_with_a_comment() {
    let text = read(".env.example");
    let lines: Vec<&str> = text.lines().collect();
    let mut listed = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = assigned_name(line) else {
            continue;
        };
        let previous = i
            .checked_sub(1)
            .map(|p| lines[p].trim())
            .unwrap_or_default();
        assert!(
            previous.starts_with('#') && assigned_name(previous).is_none() && previous.len() > 4,
            ".env.example: {name} has no one-line comment above it"
        );
        listed.push(name.to_owned());
    }
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "a variable is listed twice: {listed:?}"
    );
    assert!(
        unknown(&unique).is_empty(),
        ".env.example names variables the server does not read: {:?}",
        unknown(&unique)
    );
    let missing: Vec<String> = server_variables().difference(&unique).cloned().collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
}

#[test]
fn the_configuration_reference_documents_every_variable() {
    let doc = read("docs/configuration.md");
    let missing: Vec<String> = server_variables()
        .into_iter()
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:?}"
    );
}
