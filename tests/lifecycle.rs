//! What the shared-memory transport leaves on the machine: a fresh segment
//! per worker process, nothing after the gateway exits, and nothing for long
//! after a gateway was killed (its workers exit, the next gateway cleans up).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Gateway, MARKER, assert_response_contains, call, process_alive};

/// `/dev/shm` segments made by the gateway with this pid.
fn segments_of(gateway_pid: u32) -> Vec<String> {
    let prefix = format!("mystic-{gateway_pid}-");
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

fn runtime_dir(base: &Path, gateway_pid: u32) -> PathBuf {
    base.join("mysticchallenge").join(gateway_pid.to_string())
}

async fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_replaced_worker_gets_a_fresh_segment_and_the_old_one_goes() {
    let base = tempfile::tempdir().unwrap();
    let env = [("XDG_RUNTIME_DIR", base.path().to_str().unwrap())];
    let mut gateway = Gateway::start_with_env("shm", &[], &env).await;
    let pid = gateway.pid();
    let before = segments_of(pid);
    assert_eq!(before.len(), 2, "{before:?}");
    let dir = runtime_dir(base.path(), pid);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);

    gateway.execute(call("exit_3")).await.unwrap_err();
    assert_response_contains(&gateway.execute(call("marker")).await.unwrap(), MARKER);
    // The replacement may still be starting.
    assert!(wait_until(|| segments_of(pid).len() == 2).await);
    let after = segments_of(pid);
    assert_eq!(after.len(), 2, "one segment per worker: {after:?}");
    assert_eq!(
        after.iter().filter(|name| before.contains(name)).count(),
        1,
        "{before:?} -> {after:?}"
    );
    // Doorbell sockets are unlinked once connected.
    assert!(wait_until(|| std::fs::read_dir(&dir).unwrap().next().is_none()).await);

    assert!(gateway.terminate().await.success());
    assert!(segments_of(pid).is_empty());
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_killed_gateway_loses_its_workers_and_the_next_one_cleans_up() {
    let base = tempfile::tempdir().unwrap();
    let env = [("XDG_RUNTIME_DIR", base.path().to_str().unwrap())];
    let mut first = Gateway::start_with_env("shm", &[], &env).await;
    let pid = first.pid();
    let workers: Vec<u32> = first
        .workers()
        .await
        .workers
        .iter()
        .map(|w| w.pid)
        .collect();
    first.kill().await;
    assert!(
        wait_until(|| workers.iter().all(|worker| !process_alive(*worker))).await,
        "workers outlived a killed gateway"
    );
    // Its runtime directory is still there. (Its segments are too, unless a
    // gateway of a test running alongside already removed them: any new
    // gateway removes the segments of dead ones.)
    assert!(
        runtime_dir(base.path(), pid).exists(),
        "a killed gateway cannot clean up"
    );

    let mut second = Gateway::start_with_env("shm", &[], &env).await;
    assert!(
        segments_of(pid).is_empty(),
        "the next gateway removes stale segments"
    );
    assert!(!runtime_dir(base.path(), pid).exists());
    assert!(second.terminate().await.success());
}
