//! Building and running the server: connect the backends, assemble the shared state, bind the
//! listener (port 0 picks a free port, for tests), start the workers and background tasks, and
//! on shutdown let in-flight requests finish and flush the last usage counters.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{App, HttpServer, dev::Server, web};
use anyhow::Context;
use cache_memory::SnapshotCache;
use chrono::TimeDelta;
use domain::{AdminService, Classifier, FailoverPolicy, Rotator, SystemClock};
use secrecy::ExposeSecret;

use crate::{
    auth::AdminAuth,
    background::{self, UsageFlusher},
    completion::ExchangeObserver,
    config::Settings,
    errors,
    hop::HopMarker,
    inbound::BodyLimits,
    metrics::Metrics,
    metrics::TokenMeter,
    probe,
    request_log::{self, DropCounter, RequestLogQueue},
    routes,
    state::AppState,
    upstream::{self, UpstreamClient},
    wiring,
};

/// Configs kept in the snapshot cache.
const SNAPSHOT_CAPACITY: usize = 10_000;
/// How long the request log writer gets to write what is queued on shutdown.
const REQUEST_LOG_DRAIN: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A built, bound, not yet awaited server.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    flusher: Arc<UsageFlusher>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    request_log_writer: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    stop_recovery: Arc<std::sync::atomic::AtomicBool>,
}

impl Application {
    /// Connects the backends and binds the listener.
    ///
    /// # Errors
    /// A backend that cannot be opened or was not compiled in; a port that cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let ports = wiring::connect(&settings).await?;
        Self::build_with_ports(settings, ports).await
    }

    /// Like [`Application::build`], over ports the caller connected (tests wrap them).
    ///
    /// # Errors
    /// A port that cannot be bound.
    pub async fn build_with_ports(
        settings: Settings,
        ports: wiring::Ports,
    ) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        tracing::info!(backends = %ports.description, edition = wiring::edition(), "backends connected");
        match background::seed_health(ports.store.as_ref(), ports.rotation.as_ref()).await {
            Ok(0) => {}
            Ok(seeded) => tracing::info!(seeded, "key health restored from the store"),
            Err(error) => tracing::warn!(%error, "stored key health could not be restored"),
        }

        let client_keys = Arc::new(crate::client_keys::ClientKeys::new(
            ports.client_keys.clone(),
            ports.client_limiter.clone(),
            ports.client_hasher.clone(),
        ));
        if let Err(error) = client_keys.refresh().await {
            tracing::warn!(%error, "client keys could not be loaded; they are retried on the next change notice");
        }
        let snapshots = Arc::new(SnapshotCache::new(SNAPSHOT_CAPACITY));
        let local = snapshots.clone();
        let admin = AdminService::new(
            ports.store.clone(),
            ports.rotation.clone(),
            ports.events.clone(),
        )
        .with_local_hook(Arc::new(move |change| {
            if change.slugs.is_empty() {
                local.clear();
            }
            change.slugs.iter().for_each(|slug| local.invalidate(slug));
        }));
        let rotator = Rotator::new(
            ports.rotation.clone(),
            ports.usage.clone(),
            Arc::new(SystemClock),
            Classifier::new(
                TimeDelta::from_std(settings.key_cooldown).unwrap_or(TimeDelta::seconds(60)),
            ),
            FailoverPolicy {
                max_retries: settings.max_retries,
                generic_response_timeout: settings.proxy_timeout,
                llm_response_timeout: settings.llm_response_timeout,
            },
        );
        let metrics = Metrics::new(settings.metrics_per_key_limit > 0);
        let mut observers: Vec<Arc<dyn ExchangeObserver>> =
            vec![Arc::new(TokenMeter::new(&metrics))];
        let mut request_log_writer = None;
        if settings.request_log_max_rows > 0 {
            let drops = Arc::new(DropCounter::new(metrics.request_log_dropped.clone()));
            let (queue, writer) = RequestLogQueue::new(
                settings.request_log_queue_size,
                ports.request_log.clone(),
                drops,
            );
            observers.push(Arc::new(queue));
            request_log_writer = Some(writer);
        }
        let state = web::Data::new(AppState {
            proxy_keys: AppState::proxy_key_set(&settings),
            settings: settings.clone(),
            admin,
            rotator,
            store: ports.store.clone(),
            rotation: ports.rotation.clone(),
            usage: ports.usage.clone(),
            events: ports.events.clone(),
            leases: ports.leases.clone(),
            snapshots: snapshots.clone(),
            metrics,
            bodies: BodyLimits::new(&settings),
            hop: HopMarker::new(&settings),
            // Client keys first: their concurrency slot is released before anything else runs.
            exchange_observers: crate::completion::ExchangeObservers::new(
                std::iter::once(client_keys.clone() as Arc<dyn ExchangeObserver>)
                    .chain(observers)
                    .collect(),
            ),
            request_log: ports.request_log.clone(),
            client_keys: client_keys.clone(),
        });
        let auth = web::Data::new(AdminAuth::new(
            &settings.admin_username,
            &settings.admin_password,
            &settings.jwt_secret,
            settings.jwt_ttl,
        ));

        let listener =
            TcpListener::bind((settings.host.as_str(), settings.port)).with_context(|| {
                format!(
                    "cannot listen on {}:{} (BACKEND_HOST/BACKEND_PORT)",
                    settings.host, settings.port
                )
            })?;
        let port = listener.local_addr()?.port();
        let server_state = state.clone();
        let server_settings = settings.clone();
        let mut server = HttpServer::new(move || {
            upstream::spawn_timer_floor();
            let upstream_client = web::Data::new(UpstreamClient::new(&server_settings));
            UpstreamClient::spawn_idle_sweep(upstream_client.clone());
            App::new()
                .app_data(server_state.clone())
                .app_data(auth.clone())
                .app_data(upstream_client)
                .app_data(
                    web::JsonConfig::default()
                        .limit(server_settings.max_body_bytes)
                        .error_handler(errors::json_error),
                )
                .app_data(web::PathConfig::default().error_handler(errors::path_error))
                .configure(|config| routes::configure_with_cors(config, &server_settings.cors))
                .default_service(web::to(routes::not_found))
        })
        .on_connect(crate::disconnect::watch_connection)
        .listen(listener)?
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs());
        if let Some(workers) = settings.workers {
            server = server.workers(workers);
        }
        let server = server.run();

        let flusher = Arc::new(UsageFlusher::new(ports.usage.clone(), ports.store.clone()));
        let mut tasks = vec![
            tokio::spawn(flusher.clone().run(settings.usage_flush_interval)),
            tokio::spawn(background::follow_changes(
                ports.events.clone(),
                snapshots,
                client_keys.clone(),
            )),
            tokio::spawn(client_keys.clone().run_flush(settings.usage_flush_interval)),
        ];
        let request_log_writer = request_log_writer.map(|writer| {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            (stop, tokio::spawn(writer.run(stopped)))
        });
        if settings.request_log_max_rows > 0 {
            tasks.push(tokio::spawn(request_log::prune_forever(
                ports.request_log.clone(),
                ports.leases.clone(),
                instance_name(),
                settings.request_log_retention_days,
                settings.request_log_max_rows,
            )));
        }
        let stop_recovery = Arc::new(std::sync::atomic::AtomicBool::new(false));
        probe::spawn_recovery(
            state.clone(),
            settings.key_recovery_interval,
            stop_recovery.clone(),
        )
        .context("cannot start the key recovery thread")?;
        Ok(Application {
            port,
            server,
            state,
            flusher,
            tasks,
            request_log_writer,
            stop_recovery,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (tests inspect it).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGTERM/SIGINT, or the handle), lets in-flight requests finish,
    /// then saves the last usage counters.
    ///
    /// # Errors
    /// The server failed.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.stop_recovery
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.flusher.flush().await;
        self.state.client_keys.flush().await;
        for task in self.tasks {
            task.abort();
        }
        // In-flight requests are done: the writer writes what is queued and ends (bounded, so
        // a dead store cannot hold the exit).
        if let Some((stop, writer)) = self.request_log_writer {
            let _ = stop.send(());
            if tokio::time::timeout(REQUEST_LOG_DRAIN, writer)
                .await
                .is_err()
            {
                tracing::warn!("the request log could not be written out before shutdown");
            }
        }
        result
    }
}

/// This process's name among the instances sharing leases: random, so two instances never
/// believe they share one.
fn instance_name() -> String {
    crate::config::random_token(8).unwrap_or_else(|_| format!("pid-{}", std::process::id()))
}

/// Tells the operator the secrets that were generated for this run.
pub fn announce_generated_secrets(settings: &Settings) {
    use crate::config::Provenance::Generated;
    if settings.admin_password_provenance == Generated {
        tracing::warn!(
            username = %settings.admin_username,
            password = %settings.admin_password.expose_secret(),
            "ADMIN_PASSWORD is not set: generated a password for this run; set ADMIN_PASSWORD to keep one"
        );
    }
    if settings.proxy_keys_provenance == Generated {
        let key = settings
            .proxy_keys
            .first()
            .map(|k| k.expose_secret().to_owned())
            .unwrap_or_default();
        tracing::warn!(
            proxy_key = %key,
            "GLOBAL_PROXY_KEYS is not set: generated a proxy key for this run; set GLOBAL_PROXY_KEYS to keep one"
        );
    }
}
