//! Wiring: bind the listener, start the pool and the gRPC server, report
//! readiness, and shut down in order when asked.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::config::{Config, TransportKind};
use crate::pool::{Pool, StartError, WorkerState};
use crate::server::{self, GatewayService, SERVICE_NAME};
use crate::transport::shm::runtime_dir::RuntimeDir;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}; pick another --listen address")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    #[error(
        "cannot create the private runtime directory for shared memory: {0}; set XDG_RUNTIME_DIR to a directory of yours, or start the gateway with --transport pipe"
    )]
    RuntimeDir(std::io::Error),

    #[error(transparent)]
    Start(#[from] StartError),

    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs the gateway until `stop` resolves. `on_serving` is called with the
/// bound address once every worker is ready.
pub async fn run(
    config: Config,
    stop: impl Future<Output = ()>,
    on_serving: impl FnOnce(SocketAddr),
) -> Result<(), RunError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RunError::Bind {
        addr: config.listen,
        source,
    })?;

    let health = HealthReporter::new();
    set_health(&health, ServingStatus::NotServing).await;
    let runtime_dir = match config.transport {
        TransportKind::Pipe => None,
        TransportKind::Shm => Some(Arc::new(
            RuntimeDir::create().map_err(RunError::RuntimeDir)?,
        )),
    };
    let (pool, mut tasks) = Pool::spawn(&config, runtime_dir);
    let service = GatewayService {
        pool: pool.clone(),
        transport: config.transport,
        max_payload_bytes: config.max_payload_bytes,
        call_timeout: config.call_timeout,
    };
    let stopping = CancellationToken::new();
    let mut server = tokio::spawn(server::serve(
        listener,
        service,
        health.clone(),
        stopping.clone().cancelled_owned(),
    ));
    tokio::pin!(stop);

    let started = tokio::select! {
        started = tasks.ready() => Some(started),
        () = &mut stop => None,
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

    set_health(&health, ServingStatus::Serving).await;
    info!(%addr, workers = config.workers, transport = config.transport.as_str(), "serving");
    on_serving(addr);

    let served = tokio::select! {
        () = &mut stop => None,
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
    set_health(&health, ServingStatus::NotServing).await;
    stopping.cancel();
    match tokio::time::timeout(config.shutdown_grace, &mut server).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => panic!("the gRPC server task panicked: {join}"),
        Err(_elapsed) => {
            let busy = pool
                .workers()
                .iter()
                .filter(|slot| slot.state == WorkerState::Busy)
                .count();
            warn!(
                busy,
                "grace period over; cancelling the calls still running"
            );
            server.abort();
        }
    }
    tasks.shutdown().await;
    info!("stopped");
    Ok(())
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
}
