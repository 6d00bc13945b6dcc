//! Redis Cluster with two instances proxying: a master killed (SIGKILL) under load while its
//! replica is promoted, and a standalone `redis://` URL pointed at one cluster node. Needs
//! `TEST_MYSQL_URL` and `TEST_REDIS_CLUSTER_URL` (a cluster on this machine, as
//! `.ci/redis-topologies.sh` starts it: the failover test kills a node's process and starts it
//! again from its config file, so the cluster is whole again afterwards).

use std::{
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use fred::{
    prelude::{Builder, ClientLike, Config, KeysInterface},
    types::CustomCommand,
    util::redis_keyslot,
};

use super::*;

/// A node as `CLUSTER NODES` lists it.
#[derive(Debug, Clone)]
struct Node {
    id: String,
    /// `host:port`.
    address: String,
    flags: Vec<String>,
    /// The master's id, for a replica.
    master_of: Option<String>,
    /// Inclusive slot ranges served, for a master.
    slots: Vec<(u16, u16)>,
}

impl Node {
    fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master") && !self.has_failed()
    }

    fn has_failed(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(first, last)| (first..=last).contains(&slot))
    }
}

/// Parses `CLUSTER NODES`: `id host:port@bus flags master ping pong epoch link slot...`.
fn parse_nodes(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (id, address, flags, master) = (
                fields.first()?,
                fields.get(1)?,
                fields.get(2)?,
                fields.get(3)?,
            );
            let slots = fields
                .iter()
                .skip(8)
                .filter(|slot| !slot.starts_with('['))
                .filter_map(|slot| match slot.split_once('-') {
                    Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
                    None => slot.parse().ok().map(|one| (one, one)),
                })
                .collect();
            Some(Node {
                id: (*id).to_owned(),
                address: address.split(['@', ',']).next()?.to_owned(),
                flags: flags.split(',').map(str::to_owned).collect(),
                master_of: (*master != "-").then(|| (*master).to_owned()),
                slots,
            })
        })
        .collect()
}

/// The credentials and first node of a `redis-cluster://` URL.
struct ClusterUrl {
    username: String,
    password: String,
    first: String,
}

fn cluster_url(url: &str) -> ClusterUrl {
    let parsed = url::Url::parse(url).unwrap();
    ClusterUrl {
        username: parsed.username().to_owned(),
        password: parsed.password().unwrap_or_default().to_owned(),
        first: format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap()),
    }
}

impl ClusterUrl {
    /// A standalone URL to one node, as a new user might write it.
    fn standalone(&self, address: &str) -> String {
        format!("redis://{}:{}@{address}/0", self.username, self.password)
    }
}

/// A plain (standalone) client to one node.
async fn node_client(cluster: &ClusterUrl, address: &str) -> fred::prelude::Client {
    let config = Config::from_url(&cluster.standalone(address)).unwrap();
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    client
}

async fn custom(client: &fred::prelude::Client, command: &'static str, args: Vec<&str>) -> String {
    client
        .custom(CustomCommand::new_static(command, None, false), args)
        .await
        .unwrap()
}

/// `CLUSTER NODES` as `address` sees it.
async fn cluster_nodes(cluster: &ClusterUrl, address: &str) -> Vec<Node> {
    let client = node_client(cluster, address).await;
    let nodes = parse_nodes(&custom(&client, "CLUSTER", vec!["NODES"]).await);
    client.quit().await.ok();
    nodes
}

/// A field of an `INFO` reply.
fn info_field(info: &str, name: &str) -> String {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("INFO has no {name}"))
        .trim()
        .to_owned()
}

/// One proxied request: when it started and ended, and its status (0 when it got no answer).
#[derive(Debug, Clone, Copy)]
struct Sent {
    start: Instant,
    end: Instant,
    status: u16,
}

/// Sends requests alternately to `urls` from 8 workers until `stop`.
fn load(
    client: &reqwest::Client,
    urls: [String; 2],
    stop: &Arc<AtomicBool>,
) -> Arc<Mutex<Vec<Sent>>> {
    let sent = Arc::new(Mutex::new(Vec::new()));
    for worker in 0..8 {
        let (client, urls, stop, sent) = (client.clone(), urls.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let status = client
                    .get(&urls[i % 2])
                    .header("X-Proxy-Key", PROXY_KEY)
                    .send()
                    .await
                    .map_or(0, |response| response.status().as_u16());
                sent.lock().unwrap().push(Sent {
                    start,
                    end: Instant::now(),
                    status,
                });
                i += 1;
            }
        });
    }
    sent
}

/// Waits until `ready` holds, polling every 50 ms, at most `limit`; when it first held.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut ready: F) -> Instant
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if ready().await {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready(app: &TestApp) -> bool {
    app.client
        .get(app.url("/ready"))
        .send()
        .await
        .is_ok_and(|response| response.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_master_killed_under_load_costs_no_request_and_fairness_resumes() {
    let Some(shared) = shared_on(Topology::Cluster) else {
        return;
    };
    let _running = RUNNING
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let _alone = TOPOLOGY.write().await;
    let cluster = cluster_url(&shared.redis);
    let slot = redis_keyslot(shared.namespace.as_bytes());
    let nodes = cluster_nodes(&cluster, &cluster.first).await;
    let master = nodes
        .iter()
        .find(|node| node.is_master() && node.serves(slot))
        .expect("a master serves the namespace's slot")
        .clone();
    let replica = nodes
        .iter()
        .find(|node| node.master_of.as_deref() == Some(master.id.as_str()))
        .expect("that master has a replica")
        .clone();
    let survivor = nodes
        .iter()
        .find(|node| node.is_master() && node.id != master.id)
        .expect("another master")
        .address
        .clone();
    let master_client = node_client(&cluster, &master.address).await;
    let info = custom(&master_client, "INFO", vec!["server"]).await;
    master_client.quit().await.ok();
    let (pid, executable, config_file) = (
        info_field(&info, "process_id"),
        info_field(&info, "executable"),
        info_field(&info, "config_file"),
    );
    assert!(
        !config_file.is_empty(),
        "the node was started from a config file"
    );

    let (a, b) = (instance(&shared, &[]).await, instance(&shared, &[]).await);
    let mock = MockUpstream::start().await;
    let slug = unique("failover");
    let id = generic_with_keys(&a, &slug, &mock.base, &["k1", "k2", "k3"]).await;
    let path = format!("/proxy/{slug}/x");
    let urls = [a.url(&path), b.url(&path)];
    let stop = Arc::new(AtomicBool::new(false));
    let sent = load(&a.client, urls.clone(), &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // SIGKILL: the connections die with the process, as in a crash.
    let killed_at = Instant::now();
    let killed = Command::new("kill").args(["-9", &pid]).status().unwrap();
    assert!(killed.success(), "kill -9 {pid}");
    let promoted_at = wait_for(
        "the replica is promoted",
        Duration::from_secs(30),
        || async {
            cluster_nodes(&cluster, &replica.address)
                .await
                .iter()
                .any(|node| node.id == replica.id && node.is_master() && node.serves(slot))
        },
    )
    .await;
    let shared_again_at = wait_for(
        "both instances answer /ready 200 again",
        Duration::from_secs(30),
        || async { ready(&a).await && ready(&b).await },
    )
    .await;
    // The fallback tries the shared state again at most a second after its last failure.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = sent.lock().unwrap().clone();
    let in_flight_at_kill = sent
        .iter()
        .filter(|r| r.start <= killed_at && killed_at <= r.end)
        .count();
    let failed: Vec<&Sent> = sent.iter().filter(|r| r.status != 200).collect();
    let during: Vec<&Sent> = sent
        .iter()
        .filter(|r| r.start >= killed_at && r.start <= shared_again_at)
        .collect();
    let slowest = during
        .iter()
        .map(|r| r.end - r.start)
        .max()
        .unwrap_or_default();
    eprintln!(
        "cluster failover: {} requests in all, {} failed ({in_flight_at_kill} in flight at the kill); \
         replica promoted {:?} after the kill, both instances ready {:?} after it; \
         {} requests served in between (slowest {slowest:?})",
        sent.len(),
        failed.len(),
        promoted_at - killed_at,
        shared_again_at - killed_at,
        during.len(),
    );
    assert!(
        failed.len() <= in_flight_at_kill,
        "{} requests failed, {in_flight_at_kill} were in flight at the kill: {failed:?}",
        failed.len()
    );

    // Fairness resumes: 1 500 requests over both instances split exactly over the three keys.
    let before = mock.keys_used();
    let stop = Arc::new(AtomicBool::new(false));
    let window = load(&a.client, urls, &stop);
    wait_for("1 500 requests", Duration::from_secs(60), || async {
        window.lock().unwrap().len() >= 1_500
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let window = window.lock().unwrap().clone();
    assert!(
        window.iter().all(|r| r.status == 200),
        "no failure once the failover is over"
    );
    let after = mock.keys_used();
    let per_key: Vec<usize> = ["k1", "k2", "k3"]
        .iter()
        .map(|key| after[*key] - before.get(*key).copied().unwrap_or(0))
        .collect();
    let even = window.len() / 3;
    eprintln!(
        "after the failover, {} requests split {per_key:?}",
        window.len()
    );
    for used in &per_key {
        assert!(
            used.abs_diff(even) <= 1,
            "split {per_key:?}, {even} ± 1 expected"
        );
    }

    // Config notices still cross instances over the promoted cluster.
    let changed = a
        .admin(Method::PUT, &format!("/proxy-configs/{id}/status"))
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    wait_for("B sees the change", Duration::from_secs(2), || async {
        b.proxy(Method::GET, &path).send().await.unwrap().status() == 404
    })
    .await;

    // Make the cluster whole again: the killed node comes back as the new master's replica.
    // INFO's `executable` is argv[0] made absolute against the node's working directory, which
    // is not where the binary is when it was started through PATH.
    let executable = Some(executable)
        .filter(|path| std::path::Path::new(path).exists())
        .unwrap_or_else(|| "redis-server".to_owned());
    let restarted = Command::new(&executable)
        .arg(&config_file)
        .status()
        .unwrap();
    assert!(restarted.success(), "{executable} {config_file}");
    wait_for(
        "the old master rejoins as a replica",
        Duration::from_secs(60),
        || async {
            let nodes = cluster_nodes(&cluster, &survivor).await;
            nodes.iter().any(|node| {
                node.id == master.id
                    && node.master_of.as_deref() == Some(replica.id.as_str())
                    && !node.has_failed()
            })
        },
    )
    .await;
    let node = node_client(&cluster, &master.address).await;
    wait_for("its replication link", Duration::from_secs(60), || async {
        custom(&node, "INFO", vec!["replication"])
            .await
            .contains("master_link_status:up")
    })
    .await;
    node.quit().await.ok();
    drop((a, b));
    settle().await;
}

/// A namespace whose slot the node at `address` does not serve.
async fn namespace_served_elsewhere(cluster: &ClusterUrl, address: &str) -> String {
    let node = node_client(cluster, address).await;
    for _ in 0..100 {
        let candidate = format!("akr-e2e-{}", domain::contract::unique_suffix());
        let probe: Result<Option<String>, _> = node.get(format!("{{{candidate}}}:probe")).await;
        if probe.is_err() {
            node.quit().await.ok();
            return candidate;
        }
    }
    panic!("one node serves every slot: not a cluster of several masters");
}

#[tokio::test]
async fn cluster_a_standalone_url_to_one_node_is_not_ready_from_start_up() {
    let Some(mut shared) = shared_on(Topology::Cluster) else {
        return;
    };
    let _turn = turn().await;
    let cluster = cluster_url(&shared.redis);
    shared.namespace = namespace_served_elsewhere(&cluster, &cluster.first).await;
    let node = cluster.standalone(&cluster.first);
    let (a, b) = (
        instance_via(&shared, &shared.mysql, &node, &[]).await,
        instance_via(&shared, &shared.mysql, &node, &[]).await,
    );
    for app in [&a, &b] {
        let response = app.client.get(app.url("/ready")).send().await.unwrap();
        assert_eq!(response.status(), 503, "not ready before any request");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (body["status"].as_str(), body["cache"].as_str()),
            (Some("degraded"), Some("unavailable")),
            "{body}"
        );
    }
    // Proxying goes on, each instance on its own counter, which /ready keeps saying.
    let mock = MockUpstream::start().await;
    let slug = unique("one-node");
    generic_with_keys(&a, &slug, &mock.base, &["k1", "k2"]).await;
    for app in [&a, &b] {
        let status = app
            .proxy(Method::GET, &format!("/proxy/{slug}/x"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        assert_eq!(
            app.client
                .get(app.url("/ready"))
                .send()
                .await
                .unwrap()
                .status(),
            503
        );
    }
    drop((a, b));
    settle().await;
}
