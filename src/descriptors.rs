//! The gateway's file descriptors: at start-up the soft limit of open files
//! (`RLIMIT_NOFILE`) is raised to the hard limit, a reserve is kept so that
//! a worker can always be (re)started, and `--max-connections` is lowered,
//! with a warning, if it does not fit in what is left (each connection
//! holds one descriptor).
//!
//! The reserve: per worker slot, its link (two pipes, or its ring's memfd,
//! seal and doorbell), its stderr pipe, its segment socket, the ends it is
//! given while it (re)starts and the segments of the call it runs; besides
//! the workers, the standard streams, the runtime's, the listeners, the
//! template and its pipes, the segment socket, the metrics endpoint, and
//! what the segment socket holds for its callers (at most
//! [`door::DESCRIPTORS`]).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use crate::segments::door;
use tracing::{debug, warn};

/// Descriptors one worker slot may hold at once, a (re)start included.
const PER_WORKER: u64 = 16;
/// Descriptors the gateway holds besides its workers and connections.
const BESIDES_WORKERS: u64 = 128;

/// Descriptors kept for `workers` workers and the rest of the gateway.
pub fn reserve(workers: usize) -> u64 {
    BESIDES_WORKERS + door::DESCRIPTORS as u64 + PER_WORKER * workers as u64
}

/// Raises the soft limit of open files to the hard one; returns the limit
/// in force afterwards (`None`: no limit).
pub fn raise_limit() -> Option<u64> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current == maximum {
        return current;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: maximum,
            maximum,
        },
    ) {
        Ok(()) => {
            debug!(from = ?current, to = ?maximum, "raised the open-files limit");
            maximum
        }
        Err(err) => {
            warn!(cause = %err, limit = ?current, "cannot raise the open-files limit to its hard limit");
            current
        }
    }
}

/// The connections that fit in `limit` descriptors beside
/// `reserve(workers)`: `wanted`, or fewer (at least one).
pub fn connection_cap(wanted: usize, limit: Option<u64>, workers: usize) -> usize {
    let Some(limit) = limit else {
        return wanted;
    };
    let room = limit.saturating_sub(reserve(workers)).max(1);
    usize::try_from(room).map_or(wanted, |room| wanted.min(room))
}

/// Raises the open-files limit and returns the connection cap that fits
/// in it, warning once if that is less than `wanted`.
pub fn fit_connections(wanted: usize, workers: usize) -> usize {
    let limit = raise_limit();
    let cap = connection_cap(wanted, limit, workers);
    if cap < wanted {
        warn!(
            max_connections = wanted,
            lowered_to = cap,
            open_files_limit = limit,
            kept_for_workers = reserve(workers),
            "--max-connections lowered to fit the open-files limit, keeping enough descriptors that workers can always be (re)started; raise the hard limit (ulimit -Hn, or LimitNOFILE= under systemd) to allow more"
        );
    }
    cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_beside_the_workers_reserve() {
        let reserve = reserve(4);
        assert_eq!(reserve, 128 + 256 + 4 * 16);
        assert_eq!(connection_cap(1024, Some(1_048_576), 4), 1024);
        assert_eq!(connection_cap(1024, None, 4), 1024);
        assert_eq!(connection_cap(1024, Some(1024), 4), 1024 - 448);
        assert_eq!(connection_cap(1024, Some(1024 + 448), 4), 1024);
        // However small the limit, one connection may come in.
        assert_eq!(connection_cap(1024, Some(100), 4), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let before = getrlimit(Resource::Nofile);
        // This test process's own limit: lowered a little (other tests run
        // beside this one), then raised back.
        if let Some(hard) = before.maximum {
            let lowered = Rlimit {
                current: Some(hard - 1),
                maximum: before.maximum,
            };
            setrlimit(Resource::Nofile, lowered).unwrap();
        }
        assert_eq!(raise_limit(), before.maximum);
        assert_eq!(getrlimit(Resource::Nofile).current, before.maximum);
    }
}
