//! Wiring: read the access settings, bind the listeners, start the pool, the
//! gRPC server and the metrics endpoint, report readiness, and shut down in
//! order when asked (a Unix socket's file is removed on the way out, however
//! `run` ends). Each layer takes its own settings, built here from the
//! [`Config`] ([`pool_settings`], [`launch_settings`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::budget::Budget;
use crate::config::{Config, TlsFiles};
use crate::descriptors;
use crate::functions::FunctionCache;
use crate::metrics::{self, Metrics};
use crate::pool::{LaunchSettings, Pool, PoolSettings, StartError, WorkerState};
use crate::segments::Door;
use crate::server::{
    self, Access, Admission, BindError, Deadlines, GatewayService, Refusals, SERVICE_NAME,
    ServeError, Tls, TlsError, TokenError,
};
use crate::transport;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Bind(#[from] BindError),

    #[error(transparent)]
    Start(#[from] StartError),

    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("the token file {path} {source}")]
    Token { path: PathBuf, source: TokenError },

    #[error(
        "the TLS certificate or key cannot be used: {0}; pass a PEM certificate chain to --tls-cert and its PEM private key to --tls-key"
    )]
    Tls(#[from] TlsError),

    #[error("the gRPC server failed: {0}")]
    Serve(#[from] ServeError),

    #[error("stopped at once on a second {signal}: {busy} running calls were cut off")]
    Interrupted { signal: &'static str, busy: usize },
}

/// Runs the gateway until the first item of `stop` (a graceful stop: calls
/// in flight get `--shutdown-grace` to finish); a second item stops it at
/// once. `on_serving` is called with the gateway's URL (`grpc://` or, with
/// TLS, `grpcs://` and the bound address; `unix:` and the socket's absolute
/// path) once every worker is ready.
///
/// With `--listen unix:PATH`, the socket file is removed when this returns,
/// whichever way (a stop, a second signal, a failure after the bind), unless
/// another process has replaced it meanwhile.
pub async fn run(
    config: Config,
    mut stop: impl Stream<Item = &'static str> + Unpin,
    on_serving: impl FnOnce(&str),
) -> Result<(), RunError> {
    let access = read_access(&config)?;
    let tls = access.tls.is_some();
    let max_connections = descriptors::fit_connections(config.max_connections, config.workers);
    // Held to the end of `run`: dropping it removes a Unix socket's file.
    let (listener, bound) = server::bind(&config.listen).await?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(server::bind_tcp(addr).await?),
        None => None,
    };

    let health = HealthReporter::new();
    set_health(&health, ServingStatus::NotServing).await;
    let transport = transport::Spec::new(
        config.transport,
        config.max_payload_bytes,
        config.ring_bytes,
    );
    let metrics = Arc::new(Metrics::new(config.workers, config.transport.as_str()));
    let (pool, mut tasks) = Pool::spawn(
        pool_settings(&config),
        launch_settings(&config),
        transport,
        Arc::clone(&metrics),
    );
    let stopping = CancellationToken::new();
    let receiving = Budget::new(config.max_receiving_bytes);
    let door = open_door(config.max_payload_bytes, &receiving, &stopping);
    let admission = Admission {
        pool: pool.clone(),
        functions: Arc::new(FunctionCache::new(
            config.function_cache_bytes,
            config.max_payload_bytes,
        )),
        door,
        max_payload_bytes: config.max_payload_bytes,
    };
    let service = GatewayService {
        admission,
        transport: config.transport,
        call_timeout: config.call_timeout,
        refusals: Refusals::new(metrics),
        stopping: stopping.clone(),
    };
    if let Some((listener, addr)) = metrics_listener {
        info!("metrics at http://{addr}/metrics");
        if let Some(warning) = metrics::exposure_warning(addr) {
            warn!("{warning}");
        }
        let stopped = stopping.clone().cancelled_owned();
        let pool = pool.clone();
        tokio::spawn(async move {
            if let Err(err) = metrics::serve(listener, pool, stopped).await {
                warn!(cause = %err, "the metrics endpoint failed");
            }
        });
    }
    let bounds = server::Bounds {
        max_connections,
        max_connections_per_peer: config.max_connections_per_peer,
        deadlines: Deadlines {
            handshake: config.handshake_timeout,
            idle: config.idle_connection_timeout,
        },
        max_streams_per_connection: config.max_streams_per_connection,
        receiving,
    };
    let mut server = tokio::spawn(server::serve(
        listener,
        service,
        health.clone(),
        access,
        bounds,
        stopping.clone(),
    ));
    let started = tokio::select! {
        started = tasks.ready() => Some(started),
        _ = stop.next() => None,
    };
    match started {
        Some(Ok(())) => {}
        Some(Err(err)) => {
            stopping.cancel();
            tasks.shutdown().await;
            let _ = server.await;
            return Err(err.into());
        }
        None => {
            info!("asked to stop during start-up");
            stopping.cancel();
            tasks.shutdown().await;
            let _ = server.await;
            return Ok(());
        }
    }

    // Every worker is ready: serving now, before anyone is told so.
    set_health(&health, ServingStatus::Serving).await;
    let stop_following = CancellationToken::new();
    let health_follower = tokio::spawn(follow_workers(
        pool.serving(),
        health.clone(),
        stop_following.clone(),
    ));
    let url = bound.url(tls);
    info!(%url, workers = config.workers, transport = config.transport.as_str(), "serving");
    on_serving(&url);

    let served = tokio::select! {
        _ = stop.next() => None,
        served = &mut server => Some(served),
    };
    if let Some(served) = served {
        // The server stopped on its own: only an accept-loop failure does that.
        tasks.shutdown().await;
        return match served {
            Ok(result) => result.map_err(RunError::from),
            Err(join) => panic!("the gRPC server task panicked: {join}"),
        };
    }

    info!(
        grace_secs = config.shutdown_grace.as_secs_f64(),
        "stopping: letting in-flight calls finish"
    );
    // The follower stops first, so that it cannot undo what is set next.
    stop_following.cancel();
    let _ = health_follower.await;
    set_health(&health, ServingStatus::NotServing).await;
    stopping.cancel();
    let busy = || {
        pool.workers()
            .iter()
            .filter(|slot| slot.state == WorkerState::Busy)
            .count()
    };
    let mut interrupted = None;
    tokio::select! {
        finished = tokio::time::timeout(config.shutdown_grace, &mut server) => match finished {
            Ok(Ok(result)) => result?,
            Ok(Err(join)) => panic!("the gRPC server task panicked: {join}"),
            Err(_elapsed) => {
                warn!(busy = busy(), "grace period over; cancelling the calls still running");
                server.abort();
            }
        },
        Some(signal) = stop.next() => {
            let busy = busy();
            warn!(signal, busy, "asked again to stop: cutting off the calls still running");
            server.abort();
            interrupted = Some(RunError::Interrupted { signal, busy });
        }
    }
    tasks.shutdown().await;
    info!("stopped");
    interrupted.map_or(Ok(()), Err)
}

/// How big the pool is and how patient, from `config`.
pub fn pool_settings(config: &Config) -> PoolSettings {
    PoolSettings {
        workers: config.workers,
        queue_capacity: config.queue_capacity,
        queue_max_bytes: config.queue_max_bytes,
        startup_timeout: config.startup_timeout,
        max_queue_wait: config.max_queue_wait,
        recycle: config.recycle,
        max_undelivered_bytes: config.max_undelivered_bytes,
    }
}

/// How the pool's workers are started, from `config`.
pub fn launch_settings(config: &Config) -> LaunchSettings {
    LaunchSettings {
        python: config.python.clone(),
        memory_limit: config.worker_memory_bytes,
        max_output_bytes: config.max_output_bytes,
        preload: config.preload.clone(),
        debuggable: config.debuggable,
        template: config.template,
        startup_timeout: config.startup_timeout,
    }
}

/// Reads the token file and the TLS identity named in `config`.
fn read_access(config: &Config) -> Result<Access, RunError> {
    let token = match &config.auth_token_file {
        Some(path) => {
            let content = read("the token file", path)?;
            let token = server::read_token(&content).map_err(|source| RunError::Token {
                path: path.clone(),
                source,
            })?;
            Some(token)
        }
        None => None,
    };
    // Checked now, so that a bad file stops the gateway before it starts
    // workers or says it is serving.
    let tls = match &config.tls {
        Some(TlsFiles { cert, key }) => Some(Tls::from_pem(
            &read("the TLS certificate", cert)?,
            &read("the TLS key", key)?,
        )?),
        None => None,
    };
    Ok(Access { token, tls })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, RunError> {
    std::fs::read(path).map_err(|source| RunError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Keeps health SERVING (as it is when this starts) while at least one
/// worker can take a call and NOT_SERVING while none can (all of them
/// restarting or failing to start), until the gateway stops.
async fn follow_workers(
    mut serving: tokio::sync::watch::Receiver<usize>,
    health: HealthReporter,
    stopping: CancellationToken,
) {
    let mut reported = Some(true);
    loop {
        let now = *serving.borrow_and_update() > 0;
        if reported != Some(now) {
            reported = Some(now);
            if now {
                info!("a worker can take calls: health is SERVING");
            } else {
                warn!("no worker can take a call: health is NOT_SERVING until one is back");
            }
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&health, status).await;
        }
        tokio::select! {
            changed = serving.changed() => if changed.is_err() { return },
            () = stopping.cancelled() => return,
        }
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
}

/// Opens the socket callers on this host hand segments through (taking
/// callers until `stopping`); without it, every call travels inline.
fn open_door(
    max_payload_bytes: usize,
    receiving: &Arc<Budget>,
    stopping: &CancellationToken,
) -> Option<Arc<Door>> {
    match Door::bind(
        max_payload_bytes,
        Arc::clone(receiving),
        crate::segments::door::DESCRIPTORS,
    ) {
        Ok((door, listener)) => {
            tokio::spawn(Arc::clone(&door).serve(listener, stopping.clone()));
            Some(door)
        }
        Err(err) => {
            warn!(
                cause = %err,
                "cannot open the shared-memory segment socket; callers on this host send their calls inline"
            );
            None
        }
    }
}
