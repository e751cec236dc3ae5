//! Shared helpers for the integration tests: start the real gateway binary
//! with real Python workers on a free port, talk to it, stop it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use mysticchallenge::pb::gateway_client::GatewayClient;
use mysticchallenge::pb::{ExecuteRequest, GetWorkersRequest, GetWorkersResponse};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// Every transport the suite runs on.
pub const TRANSPORTS: &[&str] = &["pipe", "shm"];

/// The interpreter for workers: `$MYSTIC_PYTHON`, else the repo's virtualenv.
pub fn python() -> String {
    if let Ok(python) = std::env::var("MYSTIC_PYTHON") {
        return python;
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with worker_shim: run `make venv` or set MYSTIC_PYTHON"
    );
    venv.to_string_lossy().into_owned()
}

/// Encoded calls made by `tests/support/calls.py`, by name.
pub fn call(name: &str) -> Bytes {
    static CALLS: OnceLock<HashMap<String, Bytes>> = OnceLock::new();
    let calls = CALLS.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/calls.py");
        let output = std::process::Command::new(python())
            .arg(script)
            .output()
            .expect("run tests/support/calls.py");
        assert!(
            output.status.success(),
            "calls.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| {
                let (name, encoded) = line.split_once(' ').expect("`name base64` lines");
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap();
                (name.to_owned(), Bytes::from(payload))
            })
            .collect()
    });
    calls
        .get(name)
        .unwrap_or_else(|| panic!("no call named {name}"))
        .clone()
}

/// What the `marker` call returns somewhere inside its encoded response.
pub const MARKER: &[u8] = b"rust-integration-marker";

/// A running gateway process.
pub struct Gateway {
    child: Child,
    pub url: String,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    /// Starts a gateway on `transport` with `extra` flags (two workers unless
    /// they say otherwise) and waits until it serves.
    pub async fn start(transport: &str, extra: &[&str]) -> Gateway {
        Self::start_with_env(transport, extra, &[]).await
    }

    /// As [`Gateway::start`], with extra environment variables.
    pub async fn start_with_env(transport: &str, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let python = python();
        let mut command = Command::new(env!("CARGO_BIN_EXE_mysticchallenge"));
        command.envs(env.iter().copied());
        if !extra.contains(&"--workers") {
            command.args(["--workers", "2"]);
        }
        command
            .args(["--listen", "127.0.0.1:0", "--transport", transport])
            .args(["--python", &python])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn the gateway");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await;
        let url = match first {
            Ok(Ok(Some(line))) if line.starts_with("serving ") => {
                line["serving ".len()..].to_owned()
            }
            other => panic!(
                "gateway did not start ({other:?}); log:\n{}",
                log.lock().unwrap()
            ),
        };
        Gateway { child, url, log }
    }

    pub async fn client(&self) -> GatewayClient<Channel> {
        client_at(&self.url).await
    }

    /// One call, with a deadline so that a hang fails the test instead of
    /// stalling the suite.
    pub async fn execute(&self, payload: Bytes) -> Result<Bytes, tonic::Status> {
        self.execute_owned(payload).await
    }

    /// [`Gateway::execute`] as a future that does not borrow the gateway,
    /// to spawn.
    pub fn execute_owned(
        &self,
        payload: Bytes,
    ) -> impl Future<Output = Result<Bytes, tonic::Status>> + Send + 'static {
        let url = self.url.clone();
        async move {
            let mut request = tonic::Request::new(ExecuteRequest { payload });
            request.set_timeout(CALL_DEADLINE);
            let response = client_at(&url).await.execute(request).await?;
            Ok(response.into_inner().payload)
        }
    }

    /// Polls `GetWorkers` until `busy` workers are running a call.
    pub async fn wait_for_busy_workers(&self, busy: usize) {
        for _ in 0..500 {
            let workers = self.workers().await.workers;
            let now = workers
                .iter()
                .filter(|worker| worker.state() == mysticchallenge::pb::WorkerState::Busy)
                .count();
            if now == busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never saw {busy} busy workers");
    }

    /// Polls the metrics endpoint until the queue holds `depth` calls.
    pub async fn wait_for_queue_depth(&self, depth: usize, metrics_listen: &str) {
        let wanted = format!("mystic_queue_depth {depth}");
        for _ in 0..500 {
            if scrape(metrics_listen)
                .await
                .lines()
                .any(|line| line == wanted)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the queue never held {depth} calls");
    }

    pub async fn workers(&self) -> GetWorkersResponse {
        self.client()
            .await
            .get_workers(GetWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn restarts(&self) -> u64 {
        self.workers()
            .await
            .workers
            .iter()
            .map(|worker| worker.restarts)
            .sum()
    }

    /// The restarts once they reach `expected` (a slot counts its restart
    /// just after its caller hears of the crash), or after 5 s.
    pub async fn restarts_reaching(&self, expected: u64) -> u64 {
        let mut restarts = self.restarts().await;
        for _ in 0..50 {
            if restarts >= expected {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            restarts = self.restarts().await;
        }
        restarts
    }

    pub async fn calls_served(&self) -> u64 {
        self.workers()
            .await
            .workers
            .iter()
            .map(|worker| worker.calls_served)
            .sum()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("gateway still running")
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGKILL and reaps the gateway.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends SIGTERM and waits for the gateway to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("gateway exits within 30s of SIGTERM")
            .unwrap()
    }
}

async fn client_at(url: &str) -> GatewayClient<Channel> {
    GatewayClient::connect(url.replace("grpc://", "http://"))
        .await
        .expect("connect")
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET /metrics` from a gateway's `--metrics-listen` address.
pub async fn scrape(metrics_listen: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(metrics_listen)
        .await
        .expect("connect to the metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// Deadline of every call made through [`Gateway::execute`].
pub const CALL_DEADLINE: Duration = Duration::from_secs(120);

pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Asserts that the response is an encoded result containing `needle`.
pub fn assert_response_contains(response: &[u8], needle: &[u8]) {
    assert!(response.starts_with(b"MCR1"), "not an encoded response");
    assert!(
        response
            .windows(needle.len())
            .any(|window| window == needle),
        "response lacks {:?}",
        String::from_utf8_lossy(needle)
    );
}
