//! Why a worker could not start, in words that say how to fix it.
//!
//! At gateway start-up these errors end the process with one line; later they
//! are logged and the slot retries with backoff.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use super::process::describe_exit;
use super::template::TemplateError;
use crate::transport::TransportError;

/// A worker that did not reach its handshake.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot run the worker interpreter `{python}`: {source}; pass --python with the path of a Python 3 interpreter"
    )]
    Spawn { python: String, source: io::Error },

    #[error(
        "cannot set up the shared-memory transport for worker {index}: {source}; check that /dev/shm is mounted and writable, or start the gateway with --transport pipe"
    )]
    Transport {
        index: usize,
        #[source]
        source: TransportError,
    },

    #[error(
        "the workers cannot import `worker_shim` with `{python}`; install the package into that interpreter (`{python} -m pip install .` at the repository root) or pass --python with the python of a virtualenv that has it (`make run` does this)"
    )]
    ShimMissing { python: String },

    #[error(
        "the workers cannot import `mystic_native`, mysticchallenge's native extension, with `{python}` ({reason}); install mysticchallenge into that interpreter (`{python} -m pip install .` at the repository root, or its wheel) or pass --python with the python of a virtualenv that has it (`make run` does this)"
    )]
    NativeMissing { python: String, reason: String },

    #[error("worker {index} exited during start-up ({status}){detail}")]
    Exited {
        index: usize,
        status: String,
        detail: String,
    },

    #[error(
        "worker {index} did not say `ready` within {}s; raise --startup-timeout if the interpreter is slow to start", .limit.as_secs_f64()
    )]
    TimedOut { index: usize, limit: Duration },

    #[error(
        "cannot preload `{module}` in the workers: {reason}; install it into the workers' interpreter (--python) or drop it from --preload"
    )]
    Preload { module: String, reason: String },

    #[error("the worker template could not start worker {index}: {source}")]
    Template {
        index: usize,
        #[source]
        source: TemplateError,
    },

    #[error("the pool is stopping, or the worker template's supervisor has stopped")]
    Stopping,

    #[error("worker {index} broke the start-up handshake: {source}")]
    Handshake {
        index: usize,
        #[source]
        source: TransportError,
    },
}

impl StartError {
    /// Explains a handshake that failed, from how the process ended and the
    /// last lines it wrote to stderr.
    pub fn from_failed_handshake(
        index: usize,
        python: String,
        exit: Option<ExitStatus>,
        stderr: &[String],
        error: TransportError,
    ) -> StartError {
        if stderr
            .iter()
            .any(|line| line.contains("No module named worker_shim"))
            || stderr
                .iter()
                .any(|line| line.contains("No module named 'worker_shim'"))
        {
            return StartError::ShimMissing { python };
        }
        if let Some(reason) = stderr
            .iter()
            .find_map(|line| line.split_once(NATIVE_MISSING).map(|(_, reason)| reason))
        {
            return StartError::NativeMissing {
                python,
                reason: reason.trim().to_owned(),
            };
        }
        match exit {
            Some(status) => StartError::Exited {
                index,
                status: describe_exit(status),
                detail: last_words(stderr),
            },
            None => StartError::Handshake {
                index,
                source: error,
            },
        }
    }
}

/// What a worker says when its interpreter cannot import the native core
/// (`worker_shim/__main__.py`), before why.
const NATIVE_MISSING: &str =
    "cannot import mystic_native, the native extension of mysticchallenge:";

/// `: <the last line that is not blank>` of a process's stderr, or nothing.
pub fn last_words(stderr: &[String]) -> String {
    stderr
        .iter()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| format!(": {}", line.trim()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_missing_shim_says_how_to_install_it() {
        let stderr = vec!["/usr/bin/python3: No module named worker_shim".to_owned()];
        let err = StartError::from_failed_handshake(
            0,
            "/usr/bin/python3".into(),
            Some(ExitStatus::from_raw(1 << 8)),
            &stderr,
            TransportError::Closed,
        );
        let message = err.to_string();
        assert!(matches!(err, StartError::ShimMissing { .. }));
        assert!(
            message.contains("/usr/bin/python3 -m pip install ."),
            "{message}"
        );
    }

    #[test]
    fn a_missing_native_core_says_how_to_install_it() {
        let stderr = vec![
            "worker_shim: cannot import mystic_native, the native extension of mysticchallenge: No module named 'mystic_native._native'".to_owned(),
        ];
        let err = StartError::from_failed_handshake(
            0,
            "/venv/bin/python".into(),
            Some(ExitStatus::from_raw(4 << 8)),
            &stderr,
            TransportError::Closed,
        );
        let message = err.to_string();
        assert!(matches!(err, StartError::NativeMissing { .. }), "{message}");
        assert!(
            message.contains("/venv/bin/python -m pip install ."),
            "{message}"
        );
        assert!(
            message.contains("No module named 'mystic_native._native'"),
            "{message}"
        );
    }

    #[test]
    fn other_exits_name_the_status_and_last_line() {
        let stderr = vec![
            "Traceback".to_owned(),
            "ValueError: boom".to_owned(),
            String::new(),
        ];
        let err = StartError::from_failed_handshake(
            2,
            "python3".into(),
            Some(ExitStatus::from_raw(1 << 8)),
            &stderr,
            TransportError::Closed,
        );
        assert_eq!(
            err.to_string(),
            "worker 2 exited during start-up (exit code 1): ValueError: boom"
        );
    }
}
