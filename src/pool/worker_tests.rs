//! Unit tests of the worker actor, driven through the pool's handle with
//! scripted workers (`scripted.rs`) that speak the real pipe protocol, under
//! paused time: crashes, timeouts, restarts and queue expiry run in
//! milliseconds. The call conversation's own tests (`conversation_tests.rs`)
//! use the same one-worker pool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::scripted::{Log, Script, ScriptedSpawner, exit_code, signalled};
use super::{Deadline, Pool, PoolSettings, PoolTasks, Recycle, WorkerState};
use crate::error::GatewayError;
use crate::functions::{WorkerCall, encode};
use crate::metrics::Metrics;
use crate::transport;

/// A one-worker pool whose workers follow `scripts` (then serve).
pub(super) async fn pool(
    scripts: impl IntoIterator<Item = Script>,
) -> (Pool, PoolTasks, Arc<Mutex<Log>>) {
    recycling_pool(scripts, Recycle::default()).await
}

/// As [`pool`], replacing workers as `recycle` says.
async fn recycling_pool(
    scripts: impl IntoIterator<Item = Script>,
    recycle: Recycle,
) -> (Pool, PoolTasks, Arc<Mutex<Log>>) {
    pool_with(scripts, |settings| settings.recycle = recycle).await
}

/// As [`pool`], with settings `adjust`ed.
async fn pool_with(
    scripts: impl IntoIterator<Item = Script>,
    adjust: impl FnOnce(&mut PoolSettings),
) -> (Pool, PoolTasks, Arc<Mutex<Log>>) {
    let spawner = ScriptedSpawner::new(scripts);
    let log = spawner.log();
    let mut settings = PoolSettings {
        workers: 1,
        queue_capacity: 16,
        queue_max_bytes: 1 << 20,
        startup_timeout: Duration::from_secs(10),
        max_queue_wait: Some(Duration::from_secs(30)),
        recycle: Recycle::default(),
        max_undelivered_bytes: 1 << 20,
    };
    adjust(&mut settings);
    let transport = transport::Spec::new(transport::TransportKind::Pipe, 1 << 20, 0);
    let metrics = Arc::new(Metrics::new(1, "pipe"));
    let (pool, mut tasks) = Pool::spawn_with(
        settings,
        spawner,
        transport,
        metrics,
        tokio_util::sync::CancellationToken::new(),
    );
    tasks.ready().await.expect("the first worker starts");
    (pool, tasks, log)
}

pub(super) async fn call(pool: &Pool, payload: &'static [u8]) -> Result<Bytes, GatewayError> {
    call_within(pool, payload, None).await
}

async fn call_within(
    pool: &Pool,
    payload: &'static [u8],
    deadline: Option<Deadline>,
) -> Result<Bytes, GatewayError> {
    pool.submit(job(payload), deadline, None)?
        .outcome()
        .await
        .map(|delivery| delivery.payload)
}

/// A call of the one function these tests use, with `arguments`.
pub(super) fn job(arguments: &[u8]) -> WorkerCall {
    encode::worker_call(b"the function", arguments)
}

pub(super) fn restarts(pool: &Pool) -> u64 {
    pool.workers()[0].restarts
}

fn scrape(pool: &Pool) -> String {
    crate::metrics::Scrape::scrape(pool)
}

#[tokio::test(start_paused = true)]
async fn a_worker_serves_calls_one_after_another() {
    let (pool, tasks, log) = pool([]).await;
    assert_eq!(&call(&pool, b"one").await.unwrap()[..], b"echo:one");
    assert_eq!(&call(&pool, b"two").await.unwrap()[..], b"echo:two");
    let slot = &pool.workers()[0];
    assert_eq!((slot.calls_served, slot.restarts), (2, 0));
    assert_eq!(slot.state, WorkerState::Idle);
    assert_eq!(
        log.lock().unwrap().requests,
        [b"one".to_vec(), b"two".to_vec()]
    );
    // The function went with the first call only.
    assert_eq!(log.lock().unwrap().attached, [true, false]);
    tasks.shutdown().await;
    assert_eq!(pool.workers()[0].state, WorkerState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_misses_a_function_it_was_just_sent_is_replaced() {
    let (pool, tasks, log) = pool([Script::AlwaysMisses]).await;
    let err = call(&pool, b"one").await.unwrap_err();
    assert!(matches!(err, GatewayError::WorkerCrashed { .. }), "{err}");
    // By digest was not tried: a new process is sent the function at once.
    assert_eq!(log.lock().unwrap().attached, [true]);
    assert_eq!(&call(&pool, b"two").await.unwrap()[..], b"echo:two");
    assert_eq!(restarts(&pool), 1);
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_mid_call_answers_that_call_and_the_worker_is_replaced() {
    let (pool, tasks, log) = pool([Script::CrashOnCall(exit_code(3))]).await;
    let err = call(&pool, b"boom").await.unwrap_err();
    match err {
        GatewayError::WorkerCrashed { worker, pid, cause } => {
            assert_eq!(worker, 0);
            assert_eq!(pid, 1001);
            assert_eq!(cause, "exit code 3");
        }
        other => panic!("expected a crash, got {other}"),
    }
    assert_eq!(&call(&pool, b"next").await.unwrap()[..], b"echo:next");
    assert_eq!(restarts(&pool), 1);
    assert_eq!(pool.workers()[0].pid, Some(1002));
    // The new process was sent the function, as if it were the first call.
    assert_eq!(log.lock().unwrap().attached, [true, true]);
    assert_eq!(log.lock().unwrap().spawns.len(), 2);
    assert_eq!(log.lock().unwrap().kills, 1);
    assert!(scrape(&pool).contains(r#"mystic_calls_total{worker="0",outcome="worker-crashed"} 1"#));
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_is_seen_at_once_even_while_its_children_hold_the_pipes() {
    let (pool, tasks, log) = pool([Script::CrashHoldingLink(signalled(11))]).await;
    let started = tokio::time::Instant::now();
    let err = call(&pool, b"forks").await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::WorkerCrashed { cause, .. } if cause == "killed by signal 11 (SIGSEGV)"),
        "{err}"
    );
    // No waiting for the pipes to close: the exit itself was seen.
    assert_eq!(started.elapsed(), Duration::ZERO);
    // Its group was killed: what it left running (here: holding the pipes) too.
    assert_eq!(log.lock().unwrap().kills, 1);
    assert_eq!(&call(&pool, b"next").await.unwrap()[..], b"echo:next");
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_dies_while_idle_is_replaced_before_the_next_call() {
    let (pool, tasks, log) = pool([Script::DieIdle {
        after: Duration::from_secs(1),
        status: signalled(11),
    }])
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(restarts(&pool), 1);
    assert_eq!(pool.workers()[0].state, WorkerState::Idle);
    assert_eq!(&call(&pool, b"x").await.unwrap()[..], b"echo:x");
    // Only the replacement saw a call.
    assert_eq!(log.lock().unwrap().requests.len(), 1);
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_deadline_kills_and_replaces_its_worker() {
    let (pool, tasks, log) = pool([Script::Hang]).await;
    let started = tokio::time::Instant::now();
    let deadline = Deadline::after(Duration::from_secs(5));
    let err = call_within(&pool, b"slow", Some(deadline))
        .await
        .unwrap_err();
    assert_eq!(err, GatewayError::Timeout(Duration::from_secs(5)));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(&call(&pool, b"after").await.unwrap()[..], b"echo:after");
    assert_eq!(log.lock().unwrap().kills, 1);
    assert_eq!(restarts(&pool), 1);
    assert!(scrape(&pool).contains(r#"mystic_calls_total{worker="0",outcome="call-timeout"} 1"#));
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_while_starts_fail_and_reset_after_a_good_start() {
    let idle_death = Script::DieIdle {
        after: Duration::from_secs(1),
        status: exit_code(1),
    };
    let failed = Script::FailStart(exit_code(1));
    let (pool, tasks, log) = pool([
        idle_death.clone(),
        failed.clone(),
        failed.clone(),
        failed,
        idle_death,
    ])
    .await;
    // Five scripted workers, then one that serves.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let spawns = log.lock().unwrap().spawns.clone();
    assert_eq!(spawns.len(), 6);
    let gaps: Vec<Duration> = spawns.windows(2).map(|pair| pair[1] - pair[0]).collect();
    let ms = Duration::from_millis;
    assert_eq!(
        gaps,
        [
            ms(1000), // ran 1 s, then replaced at once
            ms(50),   // failed to start: a delay, which doubles ...
            ms(100),
            ms(200),
            ms(1000), // ... and a good start resets it
        ]
    );
    assert_eq!(restarts(&pool), 5);
    assert_eq!(&call(&pool, b"ok").await.unwrap()[..], b"echo:ok");
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_that_expired_in_the_queue_is_not_run() {
    let (pool, tasks, log) = pool([Script::Serve {
        delay: Duration::from_secs(10),
    }])
    .await;
    let busy = pool.submit(job(b"long"), None, None).unwrap();
    let deadline = Deadline::after(Duration::from_secs(1));
    let err = call_within(&pool, b"expires", Some(deadline))
        .await
        .unwrap_err();
    assert_eq!(err, GatewayError::Timeout(Duration::from_secs(1)));
    assert_eq!(
        &busy
            .outcome()
            .await
            .map(|delivery| delivery.payload)
            .unwrap()[..],
        b"echo:long"
    );
    assert_eq!(&call(&pool, b"then").await.unwrap()[..], b"echo:then");
    let requests = log.lock().unwrap().requests.clone();
    assert_eq!(requests, [b"long".to_vec(), b"then".to_vec()]);
    assert!(scrape(&pool).contains(r#"mystic_rejected_calls_total{reason="deadline-in-queue"} 1"#));
    assert_eq!(restarts(&pool), 0);
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_caller_left_while_queued_is_not_run() {
    let (pool, tasks, log) = pool([Script::Serve {
        delay: Duration::from_secs(10),
    }])
    .await;
    let busy = pool.submit(job(b"long"), None, None).unwrap();
    let left = pool.submit(job(b"left"), None, None).unwrap();
    drop(left);
    assert_eq!(
        &busy
            .outcome()
            .await
            .map(|delivery| delivery.payload)
            .unwrap()[..],
        b"echo:long"
    );
    assert_eq!(&call(&pool, b"then").await.unwrap()[..], b"echo:then");
    let requests = log.lock().unwrap().requests.clone();
    assert_eq!(requests, [b"long".to_vec(), b"then".to_vec()]);
    assert!(scrape(&pool).contains(r#"mystic_rejected_calls_total{reason="caller-left"} 1"#));
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_mid_call_answers_unavailable_and_kills_the_worker() {
    let (pool, tasks, log) = pool([Script::Hang]).await;
    let running = pool.submit(job(b"stuck"), None, None).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pool.workers()[0].state, WorkerState::Busy);
    tasks.shutdown().await;
    assert_eq!(
        running
            .outcome()
            .await
            .map(|delivery| delivery.payload)
            .unwrap_err(),
        GatewayError::ShuttingDown
    );
    assert_eq!(log.lock().unwrap().kills, 1);
    assert!(matches!(
        pool.submit(job(b"late"), None, None),
        Err(GatewayError::ShuttingDown)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_call_no_worker_took_within_the_queue_wait_is_refused_and_never_runs() {
    let (pool, tasks, log) = pool([Script::Serve {
        delay: Duration::from_secs(60),
    }])
    .await;
    let busy = pool.submit(job(b"long"), None, None).unwrap();
    let started = tokio::time::Instant::now();
    let err = call(&pool, b"waits").await.unwrap_err();
    assert_eq!(err, GatewayError::QueueWait(Duration::from_secs(30)));
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(
        &busy
            .outcome()
            .await
            .map(|delivery| delivery.payload)
            .unwrap()[..],
        b"echo:long"
    );
    assert_eq!(&call(&pool, b"then").await.unwrap()[..], b"echo:then");
    let requests = log.lock().unwrap().requests.clone();
    assert_eq!(requests, [b"long".to_vec(), b"then".to_vec()]);
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_is_recycled_between_calls_once_it_has_served_its_bound() {
    let recycle = Recycle {
        max_calls: Some(2),
        max_rss_bytes: None,
    };
    let (pool, tasks, log) = recycling_pool([], recycle).await;
    let started = tokio::time::Instant::now();
    for arguments in [&b"1"[..], b"2", b"3", b"4", b"5"] {
        let answer = pool
            .submit(job(arguments), None, None)
            .unwrap()
            .outcome()
            .await
            .map(|delivery| delivery.payload);
        assert_eq!(answer.unwrap(), [&b"echo:"[..], arguments].concat());
    }
    // Two calls per process, then a new one at once: no restart backoff.
    assert_eq!(log.lock().unwrap().spawns.len(), 3);
    assert!(started.elapsed() < Duration::from_millis(50));
    let slot = &pool.workers()[0];
    assert_eq!((slot.calls_served, slot.restarts, slot.recycled), (5, 2, 2));
    assert!(
        scrape(&pool)
            .lines()
            .any(|line| line == r#"mystic_worker_restarts_total{worker="0",reason="recycled"} 2"#),
        "{}",
        scrape(&pool)
    );
    tasks.shutdown().await;
}

/// A pool whose results budget holds `bytes` undelivered.
async fn pool_holding(bytes: usize) -> (Pool, PoolTasks, Arc<Mutex<Log>>) {
    pool_with([], |settings| {
        settings.max_undelivered_bytes = bytes;
        settings.max_queue_wait = None;
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_worker_waits_with_its_result_while_undelivered_results_fill_the_budget() {
    let (pool, tasks, _log) = pool_holding(16).await;
    // Alone, a result of any size fits; held (its caller has not read it) ...
    let first = pool
        .submit(job(b"twenty bytes of args"), None, None)
        .unwrap();
    let first = first.outcome().await.unwrap();
    // ... it leaves no room for the next: that one's worker waits with it.
    let second = pool.submit(job(b"second"), None, None).unwrap();
    let second = tokio::spawn(second.outcome());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!second.is_finished());
    assert_eq!(pool.workers()[0].state, WorkerState::Busy);
    drop(first);
    let second = second.await.unwrap().unwrap();
    assert_eq!(&second.payload[..], b"echo:second");
    assert_eq!(pool.workers()[0].state, WorkerState::Idle);
    // A caller that leaves while its worker waits frees the worker.
    let third = pool.submit(job(b"third"), None, None).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(third);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pool.workers()[0].state, WorkerState::Idle);
    drop(second);
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_caller_past_its_share_has_its_calls_held_back_and_others_go_on() {
    // An eighth of 160 bytes: one result of this caller's fills its share.
    let (pool, tasks, log) = pool_holding(160).await;
    let owned = pool.share();
    let share = Arc::clone(owned.share());
    let first = pool.submit(job(b"a result of twenty"), None, Some(&share));
    let first = first.unwrap().outcome().await.unwrap();
    assert!(share.is_full());
    let held_back = pool.submit(job(b"held back"), None, Some(&share)).unwrap();
    let held_back = tokio::spawn(held_back.outcome());
    // Another caller's call runs meanwhile: the worker is not taken.
    let other = call(&pool, b"another caller").await.unwrap();
    assert_eq!(&other[..], b"echo:another caller");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!held_back.is_finished());
    assert!(share.has_parked());
    assert!(
        !log.lock()
            .unwrap()
            .requests
            .contains(&b"held back".to_vec())
    );
    // Its caller reads: queued again, it runs.
    drop(first);
    assert!(!share.is_full());
    let held_back = held_back.await.unwrap().unwrap();
    assert_eq!(&held_back.payload[..], b"echo:held back");
    // A caller that has gone leaves nothing held back behind.
    let _full = pool.submit(job(b"a result of twenty"), None, Some(&share));
    let gone = pool.submit(job(b"gone"), None, Some(&share)).unwrap();
    drop(owned);
    drop(gone);
    assert!(!share.has_parked());
    tasks.shutdown().await;
}
