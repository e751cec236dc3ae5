//! What the shared-memory transport leaves on the machine: a fresh segment
//! per worker process, and nothing at all once the gateway and its workers
//! are gone, whether the gateway exited or was killed. Segments are memfds
//! (`memfd:mysticchallenge-rings` in `/proc/<pid>/maps`), which live only
//! while a process maps them; doorbells are socket pairs with no name.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{Gateway, MARKER, assert_response_contains, call, process_alive};

const RING_MEMFD: &str = "memfd:mysticchallenge-rings";

/// The segments process `pid` maps, by inode.
fn segments_of(pid: u32) -> BTreeSet<u64> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return BTreeSet::new();
    };
    maps.lines()
        .filter(|line| line.contains(RING_MEMFD))
        .filter_map(|line| line.split_whitespace().nth(4)?.parse().ok())
        .collect()
}

/// Which of `segments` any living process still maps.
fn mapped_by_anyone(segments: &BTreeSet<u64>) -> BTreeSet<u64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .flat_map(segments_of)
        .filter(|segment| segments.contains(segment))
        .collect()
}

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
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
    let shm_before = entries(Path::new("/dev/shm"));
    let mut gateway = Gateway::start_with_env("shm", &[], &env).await;
    let pid = gateway.pid();
    let before = segments_of(pid);
    assert_eq!(before.len(), 2, "{before:?}");

    gateway.execute(call("exit_3")).await.unwrap_err();
    assert_response_contains(&gateway.execute(call("marker")).await.unwrap(), MARKER);
    // The replacement may still be starting.
    assert!(wait_until(|| segments_of(pid).len() == 2).await);
    let after = segments_of(pid);
    assert_eq!(
        after.intersection(&before).count(),
        1,
        "one segment replaced: {before:?} -> {after:?}"
    );
    let gone: BTreeSet<u64> = before.difference(&after).copied().collect();
    assert!(wait_until(|| mapped_by_anyone(&gone).is_empty()).await);

    assert!(gateway.terminate().await.success());
    assert!(mapped_by_anyone(&after).is_empty());
    assert!(entries(Path::new("/dev/shm")).is_subset(&shm_before));
    assert!(
        entries(base.path()).is_empty(),
        "nothing in the runtime directory"
    );
}

#[tokio::test]
async fn a_killed_gateway_loses_its_workers_and_leaves_nothing() {
    let base = tempfile::tempdir().unwrap();
    let env = [("XDG_RUNTIME_DIR", base.path().to_str().unwrap())];
    let shm_before = entries(Path::new("/dev/shm"));
    let mut gateway = Gateway::start_with_env("shm", &["--workers", "8"], &env).await;
    let segments = segments_of(gateway.pid());
    assert_eq!(segments.len(), 8);
    let workers: Vec<u32> = gateway
        .workers()
        .await
        .workers
        .iter()
        .map(|w| w.pid)
        .collect();
    gateway.kill().await;
    assert!(
        wait_until(|| workers.iter().all(|worker| !process_alive(*worker))).await,
        "workers outlived a killed gateway"
    );
    assert!(wait_until(|| mapped_by_anyone(&segments).is_empty()).await);
    assert!(entries(Path::new("/dev/shm")).is_subset(&shm_before));
    assert!(
        entries(base.path()).is_empty(),
        "nothing in the runtime directory"
    );
}
