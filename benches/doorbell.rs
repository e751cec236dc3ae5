//! How one side of a worker's link wakes the other: the doorbells the
//! link could use, measured in one run, interleaved round by round.
//!
//! `cargo bench --bench doorbell` (add `-- --round-trips N --rounds R`).
//!
//! Two threads play the gateway and the worker: the gateway publishes a
//! message (a counter in memory both share, as a ring's head would be),
//! wakes the worker, and waits for its answer; the worker answers the same
//! way. Each doorbell is measured two ways:
//!
//! - `always`: every message rings, and every wait sleeps in the kernel
//!   (what the link did before: a byte on a socket pair each way);
//! - `gated`: a side rings only when its peer said it is going to sleep (a
//!   flag beside the counter, set before it sleeps and checked again after,
//!   as io_uring's and iceoryx2's wake-ups do); a side that waits first
//!   spins for up to `spin` before it says so.
//!
//! and in two patterns: back to back (the next message follows the answer
//! at once, as in a `map`), and with a gap of 200 µs of other work between
//! round trips (one call at a time: the peer has gone to sleep by then).
//! Printed per doorbell: the round trip's median and 99th percentile, and
//! the CPU time (user and system, both threads) per round trip.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, eventfd};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
use rustix::thread::futex;

/// How one side sleeps until the other wakes it.
trait Bell: Send + Sync {
    /// Wakes side `to`.
    fn ring(&self, to: usize);
    /// Sleeps until side `me` is woken (a wake-up may be spurious).
    fn sleep(&self, me: usize);
}

/// A byte on a seqpacket socket pair: each side sleeps in `recv`.
struct Socket([OwnedFd; 2]);

impl Socket {
    fn new() -> Self {
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        Socket([a, b])
    }
}

impl Bell for Socket {
    fn ring(&self, to: usize) {
        // Side `to` reads from its own end; we write into the other one.
        rustix::net::send(
            self.0[1 - to].as_fd(),
            b"!",
            rustix::net::SendFlags::empty(),
        )
        .unwrap();
    }

    fn sleep(&self, me: usize) {
        let mut byte = [0u8; 64];
        rustix::net::recv(
            self.0[me].as_fd(),
            &mut byte,
            rustix::net::RecvFlags::empty(),
        )
        .unwrap();
    }
}

/// An eventfd per side.
struct Eventfd([OwnedFd; 2]);

impl Eventfd {
    fn new() -> Self {
        let make = || eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        Eventfd([make(), make()])
    }
}

impl Bell for Eventfd {
    fn ring(&self, to: usize) {
        rustix::io::write(&self.0[to], &1u64.to_ne_bytes()).unwrap();
    }

    fn sleep(&self, me: usize) {
        let mut count = [0u8; 8];
        rustix::io::read(&self.0[me], &mut count).unwrap();
    }
}

/// A futex word per side: a ring bumps it and wakes, a sleeper waits while
/// it is what it last saw.
struct Futex([AtomicU32; 2], [AtomicU32; 2]);

impl Futex {
    fn new() -> Self {
        Futex(Default::default(), Default::default())
    }
}

impl Bell for Futex {
    fn ring(&self, to: usize) {
        self.0[to].fetch_add(1, Ordering::SeqCst);
        futex::wake(&self.0[to], futex::Flags::empty(), 1).unwrap();
    }

    fn sleep(&self, me: usize) {
        let seen = self.1[me].load(Ordering::Relaxed);
        if self.0[me].load(Ordering::SeqCst) == seen {
            let _ = futex::wait(&self.0[me], futex::Flags::empty(), seen, None);
        }
        self.1[me].store(self.0[me].load(Ordering::SeqCst), Ordering::Relaxed);
    }
}

/// What both sides share: the message counter each side last published,
/// and whether each side is (about to be) asleep.
#[derive(Default)]
struct Shared {
    published: [AtomicU64; 2],
    sleeping: [AtomicU32; 2],
}

/// Makes a fresh doorbell for one run.
type MakeBell = fn() -> Arc<dyn Bell>;

#[derive(Clone, Copy)]
enum Policy {
    Always,
    Gated { spin: Duration },
}

/// Side `me` waits until side `1 - me` has published `expected`.
fn wait_for(shared: &Shared, bell: &dyn Bell, policy: Policy, me: usize, expected: u64) {
    let peer = 1 - me;
    let arrived = || shared.published[peer].load(Ordering::Acquire) >= expected;
    match policy {
        Policy::Always => {
            while !arrived() {
                bell.sleep(me);
            }
        }
        Policy::Gated { spin } => {
            let started = Instant::now();
            while !arrived() {
                if started.elapsed() < spin {
                    std::hint::spin_loop();
                    continue;
                }
                // Say so, then look again: a message published before the
                // flag is seen now; one after it comes with a ring.
                shared.sleeping[me].store(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if arrived() {
                    shared.sleeping[me].store(0, Ordering::Relaxed);
                    break;
                }
                bell.sleep(me);
            }
        }
    }
}

/// Side `me` publishes `value` and wakes its peer if it has to.
fn publish(shared: &Shared, bell: &dyn Bell, policy: Policy, me: usize, value: u64) {
    let peer = 1 - me;
    shared.published[me].store(value, Ordering::Release);
    match policy {
        Policy::Always => bell.ring(peer),
        Policy::Gated { .. } => {
            fence(Ordering::SeqCst);
            if shared.sleeping[peer].swap(0, Ordering::SeqCst) == 1 {
                bell.ring(peer);
            }
        }
    }
}

/// This process's CPU time so far (both threads, user and system).
fn cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

struct Figures {
    median: Duration,
    p99: Duration,
    cpu_per_trip: Duration,
}

/// `trips` round trips, each after `gap` of other work.
fn run(bell: Arc<dyn Bell>, policy: Policy, trips: u64, gap: Duration) -> Figures {
    let shared = Arc::new(Shared::default());
    let worker = {
        let (shared, bell) = (Arc::clone(&shared), Arc::clone(&bell));
        std::thread::spawn(move || {
            for trip in 1..=trips {
                wait_for(&shared, bell.as_ref(), policy, 1, trip);
                publish(&shared, bell.as_ref(), policy, 1, trip);
            }
        })
    };
    let mut times = Vec::with_capacity(trips as usize);
    let cpu_before = cpu_time();
    for trip in 1..=trips {
        if !gap.is_zero() {
            let busy = Instant::now();
            while busy.elapsed() < gap {
                std::hint::spin_loop();
            }
        }
        let started = Instant::now();
        publish(&shared, bell.as_ref(), policy, 0, trip);
        wait_for(&shared, bell.as_ref(), policy, 0, trip);
        times.push(started.elapsed());
    }
    worker.join().unwrap();
    let cpu = cpu_time().saturating_sub(cpu_before);
    let cpu = cpu.saturating_sub(gap * trips as u32);
    times.sort();
    Figures {
        median: times[times.len() / 2],
        p99: times[times.len() * 99 / 100],
        cpu_per_trip: cpu / trips as u32,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: u64| {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|at| args.get(at + 1))
            .map_or(default, |text| text.parse().expect("a number"))
    };
    let trips = value("--round-trips", 20_000);
    let rounds = value("--rounds", 3);
    let bells: [(&str, MakeBell); 3] = [
        ("socket pair", || Arc::new(Socket::new())),
        ("eventfd", || Arc::new(Eventfd::new())),
        ("futex", || Arc::new(Futex::new())),
    ];
    let policies = [
        ("always", Policy::Always),
        (
            "gated",
            Policy::Gated {
                spin: Duration::ZERO,
            },
        ),
        (
            "gated, spin 20 µs",
            Policy::Gated {
                spin: Duration::from_micros(20),
            },
        ),
    ];
    for (pattern, gap) in [
        ("back to back", Duration::ZERO),
        ("200 µs apart", Duration::from_micros(200)),
    ] {
        println!("\n{pattern} ({trips} round trips a run, {rounds} rounds)\n");
        println!("| doorbell | policy | round trip p50 | p99 | CPU per round trip |");
        println!("|---|---|---:|---:|---:|");
        let trips = if gap.is_zero() { trips } else { trips / 10 };
        let mut results: Vec<(String, Vec<Figures>)> = Vec::new();
        for _ in 0..rounds {
            for (name, make) in bells {
                for (policy_name, policy) in policies {
                    let figures = run(make(), policy, trips, gap);
                    let key = format!("| {name} | {policy_name} |");
                    match results.iter_mut().find(|(seen, _)| *seen == key) {
                        Some((_, all)) => all.push(figures),
                        None => results.push((key, vec![figures])),
                    }
                }
            }
        }
        for (key, mut all) in results {
            // The round with the median p50 stands for the rest.
            all.sort_by_key(|figures| figures.median);
            let middle = &all[all.len() / 2];
            println!(
                "{key} {:.1} µs | {:.1} µs | {:.1} µs |",
                middle.median.as_secs_f64() * 1e6,
                middle.p99.as_secs_f64() * 1e6,
                middle.cpu_per_trip.as_secs_f64() * 1e6,
            );
        }
    }
}
