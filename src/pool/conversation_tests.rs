//! Unit tests of the call conversation (`conversation.rs`), driven as the
//! actor's are (`worker_tests.rs`: a one-worker pool of scripted workers,
//! under paused time): functions by digest, a worker's miss or its keeping
//! none, and streamed items paced by their caller.

use std::time::Duration;

use super::PendingItems;
use super::scripted::Script;
use super::worker_tests::{call, job, pool, restarts};
use crate::wire::items::CHUNK_MAGIC;

#[tokio::test(start_paused = true)]
async fn a_worker_that_no_longer_holds_a_function_is_sent_it_again() {
    let (pool, tasks, log) = pool([Script::Forgetful]).await;
    for arguments in [&b"one"[..], b"two", b"three"] {
        let answer = pool
            .submit(job(arguments), None, None)
            .unwrap()
            .outcome()
            .await
            .map(|delivery| delivery.payload);
        assert_eq!(answer.unwrap(), [&b"echo:"[..], arguments].concat());
    }
    // Each later call went by digest, met a miss, and went again attached;
    // nothing failed and the worker was never replaced.
    let log = log.lock().unwrap().clone();
    assert_eq!(log.attached, [true, false, true, false, true]);
    assert_eq!(log.requests.len(), 3);
    assert_eq!((restarts(&pool), pool.workers()[0].calls_served), (0, 3));
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_function_the_worker_did_not_keep_goes_attached_every_time() {
    let (pool, tasks, log) = pool([Script::KeepsNone]).await;
    for arguments in [&b"one"[..], b"two", b"three"] {
        assert_eq!(
            call(&pool, arguments).await.unwrap(),
            [&b"echo:"[..], arguments].concat()
        );
    }
    // Never by digest: no miss, and no round trip wasted on one.
    assert_eq!(log.lock().unwrap().attached, [true, true, true]);
    assert_eq!(restarts(&pool), 0);
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_streamed_call_sends_its_chunks_then_its_end() {
    let (pool, tasks, log) = pool([]).await;
    let PendingItems {
        mut items,
        call: last,
    } = pool.submit_items(job(b"3"), None, None).unwrap();
    let mut chunks = 0;
    while let Some(chunk) = items.recv().await {
        assert_eq!(chunk.payload, [&CHUNK_MAGIC[..], b"chunk"].concat());
        chunks += 1;
    }
    assert_eq!(chunks, 3);
    assert_eq!(
        &last
            .outcome()
            .await
            .map(|delivery| delivery.payload)
            .unwrap()[..],
        b"echo:3"
    );
    assert_eq!(log.lock().unwrap().closes, 0);
    // The worker takes the next call as usual.
    assert_eq!(&call(&pool, b"next").await.unwrap()[..], b"echo:next");
    assert_eq!(pool.workers()[0].calls_served, 2);
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_caller_pauses_a_streamed_call_and_one_that_leaves_closes_it() {
    let (pool, tasks, log) = pool([]).await;
    let mut pending = pool.submit_items(job(b"1000"), None, None).unwrap();
    assert!(pending.items.recv().await.is_some());
    tokio::time::sleep(Duration::from_secs(10)).await;
    // One chunk taken, one waiting in the gateway, one in the actor's hands.
    assert!(log.lock().unwrap().chunks <= 3, "{:?}", log.lock().unwrap());
    drop(pending);
    // Closed, not run to its end nor killed: the same worker takes the next call.
    assert_eq!(&call(&pool, b"next").await.unwrap()[..], b"echo:next");
    let log = log.lock().unwrap().clone();
    assert_eq!((log.closes, log.chunks <= 4), (1, true), "{log:?}");
    assert_eq!(restarts(&pool), 0);
    tasks.shutdown().await;
}
