//! Faults through the real gateway: workers that die mid-call, calls that
//! run past their deadline, and shutdown with calls in flight.

mod common;

use std::time::Duration;

use common::{Gateway, MARKER, TRANSPORTS, assert_response_contains, call, process_alive};
use tonic::Code;

#[tokio::test]
async fn a_worker_that_dies_mid_call_is_reported_and_replaced() {
    for &transport in TRANSPORTS {
        let mut gateway = Gateway::start(transport, &[]).await;
        for (name, cause) in [
            ("exit_3", "exit code 3"),
            ("segfault", "signal 11 (SIGSEGV)"),
            ("sigkill", "signal 9 (SIGKILL)"),
        ] {
            let status = gateway.execute(call(name)).await.unwrap_err();
            assert_eq!(status.code(), Code::Aborted, "{name}: {status:?}");
            assert!(
                status.message().contains(cause),
                "{name}: {}",
                status.message()
            );
            assert_eq!(
                status.metadata().get("mystic-error").unwrap(),
                "worker-crashed"
            );
        }
        assert_eq!(gateway.restarts_reaching(3).await, 3);
        // Calls keep working on the replacements.
        for _ in 0..4 {
            assert_response_contains(&gateway.execute(call("marker")).await.unwrap(), MARKER);
        }
        assert!(gateway.terminate().await.success());
    }
}

#[tokio::test]
async fn the_gateway_call_timeout_replaces_the_worker() {
    for &transport in TRANSPORTS {
        let mut gateway = Gateway::start(transport, &["--call-timeout", "1"]).await;
        let before: Vec<u32> = gateway
            .workers()
            .await
            .workers
            .iter()
            .map(|w| w.pid)
            .collect();
        let status = gateway.execute(call("sleep_10s")).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert_eq!(
            status.metadata().get("mystic-error").unwrap(),
            "call-timeout"
        );
        // The timed-out worker is killed, not left running the call.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let dead: Vec<_> = before.iter().filter(|pid| !process_alive(**pid)).collect();
        assert_eq!(dead.len(), 1, "exactly one worker was replaced");
        assert_response_contains(&gateway.execute(call("marker")).await.unwrap(), MARKER);
        assert_eq!(gateway.restarts_reaching(1).await, 1);
        assert!(gateway.terminate().await.success());
    }
}

#[tokio::test]
async fn the_client_deadline_is_honoured() {
    for &transport in TRANSPORTS {
        let mut gateway = Gateway::start(transport, &[]).await;
        let mut request = tonic::Request::new(mysticchallenge::pb::ExecuteRequest {
            payload: call("sleep_10s"),
        });
        request.set_timeout(Duration::from_secs(1));
        let status = gateway.client().await.execute(request).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
        // The worker running the call is replaced.
        assert_eq!(gateway.restarts_reaching(1).await, 1);
        assert_response_contains(&gateway.execute(call("marker")).await.unwrap(), MARKER);
        assert!(gateway.terminate().await.success());
    }
}

#[tokio::test]
async fn sigterm_lets_in_flight_calls_finish_and_stops_the_workers() {
    for &transport in TRANSPORTS {
        let mut gateway = Gateway::start(transport, &[]).await;
        let pids: Vec<u32> = gateway
            .workers()
            .await
            .workers
            .iter()
            .map(|w| w.pid)
            .collect();
        let in_flight = {
            let mut client = gateway.client().await;
            tokio::spawn(async move {
                let payload = call("sleep_1s");
                client
                    .execute(mysticchallenge::pb::ExecuteRequest { payload })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = gateway.terminate().await;
        assert!(
            status.success(),
            "exit status {status:?}\n{}",
            gateway.log()
        );
        let response = in_flight
            .await
            .unwrap()
            .expect("the in-flight call finished");
        assert_response_contains(&response.into_inner().payload, b"slept");
        for pid in pids {
            assert!(!process_alive(pid), "worker {pid} outlived the gateway");
        }
    }
}

#[tokio::test]
async fn worker_stderr_reaches_the_gateway_log_with_index_and_pid() {
    for &transport in TRANSPORTS {
        let mut gateway = Gateway::start(transport, &["--workers", "1"]).await;
        let pid = gateway.workers().await.workers[0].pid;
        gateway.execute(call("fd_writes")).await.unwrap();
        gateway.terminate().await;
        let log = gateway.log();
        let line = log
            .lines()
            .find(|line| line.contains("raw-fd-1-write"))
            .unwrap_or_else(|| panic!("no worker line in log:\n{log}"));
        assert!(line.contains("worker=0"), "{line}");
        assert!(line.contains(&format!("pid={pid}")), "{line}");
    }
}
