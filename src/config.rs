//! The gateway's settings: the command line (clap) and the validated [`Config`]
//! built from it (`--listen`'s address: [`listen`]). No IO happens here.

mod listen;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::transport::{DEFAULT_RING_BYTES, TransportKind};

pub use listen::{ListenAddr, ListenAddrError, MAX_UNIX_PATH_BYTES};

/// Default `--max-payload-bytes`: 1 GiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// Default `--max-output-bytes`: 4 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 4 << 20;

/// Command-line arguments of the `mysticchallenge` binary.
#[derive(Debug, Parser)]
#[command(name = "mysticchallenge", version, about)]
pub struct Args {
    /// Number of worker processes [default: number of CPUs].
    #[arg(long, value_name = "N")]
    pub workers: Option<NonZeroUsize>,

    /// How payloads reach the workers.
    #[arg(long, value_enum, default_value_t = TransportKind::Shm)]
    pub transport: TransportKind,

    /// Where the gRPC server listens: HOST:PORT (port 0 picks a free port),
    /// or unix:PATH for a Unix socket only this user can connect to (mode
    /// 0600; a leftover socket nobody listens on is replaced, and the file is
    /// removed on exit).
    #[arg(
        long,
        value_name = "HOST:PORT|unix:PATH",
        default_value = "127.0.0.1:8000"
    )]
    pub listen: ListenAddr,

    /// Python interpreter that runs the workers; it must be able to import
    /// `worker_shim` [default: the `python3` or `python` beside this binary
    /// (the environment it was installed into), else `python3` on PATH].
    #[arg(long, value_name = "PATH")]
    pub python: Option<OsString>,

    /// Longest a call may run, in seconds; on expiry its worker is replaced [default: none].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub call_timeout: Option<Duration>,

    /// Largest request or response payload, in bytes, on gRPC and on the transport.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PAYLOAD_BYTES, value_parser = parse_payload_limit)]
    pub max_payload_bytes: usize,

    /// Size of each shared-memory ring, in bytes (a power of two, at least 4096);
    /// larger messages stream through it.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_RING_BYTES,
        value_parser = parse_ring_bytes
    )]
    pub ring_bytes: usize,

    /// Calls that may wait for a free worker before new ones are refused.
    #[arg(long, value_name = "N", default_value = "65536")]
    pub queue_capacity: NonZeroUsize,

    /// On SIGINT/SIGTERM, how long in-flight calls may take to finish, in seconds.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_seconds)]
    pub shutdown_grace: Duration,

    /// Threads that run the gateway's async work (gRPC, the queue, the
    /// worker channels) [default: number of CPUs]. Fewer threads mean fewer
    /// wake-ups of another thread per call, more let large payloads be copied
    /// in parallel; on a 2-core machine 1 and 2 measured the same.
    #[arg(long, value_name = "N")]
    pub runtime_threads: Option<NonZeroUsize>,

    /// How long a new worker may take to say it is ready, in seconds.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_seconds)]
    pub startup_timeout: Duration,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics, without
    /// authentication: keep it on loopback (any other address is warned
    /// about at start-up) [default: off].
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<SocketAddr>,

    /// File holding the token callers must send as `authorization: Bearer <token>`.
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// PEM certificate chain for TLS (clients then use grpcs://); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS; needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Allow binding a non-loopback address without --auth-token-file:
    /// anyone who can reach the port can then run code as this user (a
    /// Unix socket counts as loopback).
    #[arg(long)]
    pub insecure_allow_remote_without_token: bool,

    /// Modules every worker has imported before it serves, comma-separated:
    /// the template imports them once and the workers it forks share them
    /// (a module that fails to import stops the gateway at start-up).
    #[arg(long, value_name = "MODULE[,MODULE...]", value_delimiter = ',', value_parser = parse_module)]
    pub preload: Vec<String>,

    /// Start every worker as its own interpreter instead of forking it from
    /// the template (slower to start; for modules that do not survive a fork).
    #[arg(long)]
    pub no_template: bool,

    /// Leave the gateway, the template and the workers dumpable, for
    /// debugging: core dumps, and debuggers and profilers (gdb, perf,
    /// py-spy) attach as the same user. Without it they are not dumpable,
    /// so that a function cannot open another worker's or the gateway's
    /// descriptors or memory through /proc; with it, it can.
    #[arg(long)]
    pub debuggable: bool,

    /// Replace a worker after it has served N calls (between calls: nothing
    /// is lost) [default: never].
    #[arg(long, value_name = "N")]
    pub max_calls_per_worker: Option<std::num::NonZeroU64>,

    /// Replace a worker after a call that leaves its resident memory (RSS,
    /// shared pages included) at N bytes or more [default: never].
    #[arg(long, value_name = "N")]
    pub max_worker_rss_bytes: Option<std::num::NonZeroU64>,

    /// What a call may print, in UTF-8 bytes, to its stdout and again to its
    /// stderr (per chunk of items for a streamed call): the worker keeps
    /// the first and the last half of each, and puts a line saying how much
    /// it dropped between them, so that its memory and the response stay
    /// bounded whatever a function prints.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_OUTPUT_BYTES)]
    pub max_output_bytes: u64,

    /// Address-space limit of each worker process (RLIMIT_AS), in bytes [default: none].
    #[arg(long, value_name = "N", value_parser = parse_memory_limit)]
    pub worker_memory_bytes: Option<u64>,

    /// Payload bytes that may wait in the queue before new calls are refused
    /// [default: 4 x --max-payload-bytes].
    #[arg(long, value_name = "N")]
    pub queue_max_bytes: Option<NonZeroUsize>,

    /// Bytes of pickled functions the gateway keeps, so that clients send a
    /// function once rather than with every call (least recently used go
    /// first; with 0 every call is refused as function-unknown and sent
    /// again with its function attached, which costs a round trip).
    #[arg(long, value_name = "N", default_value_t = crate::functions::DEFAULT_CACHE_BYTES)]
    pub function_cache_bytes: usize,

    /// Bytes of requests that may be arriving at once, before they are
    /// decoded; a request that would pass it is refused as queue-full
    /// [default: --queue-max-bytes].
    #[arg(long, value_name = "N")]
    pub max_receiving_bytes: Option<NonZeroUsize>,

    /// Bytes of results finished but not yet delivered (responses waiting
    /// for callers that read slowly or not at all, chunks of streamed
    /// items, result segments held until taken); past it, workers wait with
    /// their results. A caller (a stream of calls, or the unary calls of
    /// one connection) holding an eighth of it undelivered has its calls
    /// that no worker has started held back until it reads [default:
    /// --queue-max-bytes].
    #[arg(long, value_name = "N")]
    pub max_undelivered_bytes: Option<NonZeroUsize>,

    /// Longest a call may wait for a free worker, in seconds; past it the call
    /// is refused (nothing ran) so that a client with several gateways sends
    /// it to another one [default: no limit].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub max_queue_wait: Option<Duration>,

    /// Seconds a new client connection has to finish its TLS and HTTP/2
    /// handshakes and send an admitted call (one with the right token; any
    /// call without --auth-token-file); if it does not, it is closed and
    /// its place under --max-connections freed.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub handshake_timeout: Duration,

    /// Seconds a client connection may stay open with no admitted call on
    /// it before the gateway closes it with a GOAWAY (a call sent in that
    /// instant still runs, and the client reconnects for its next call).
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_seconds)]
    pub idle_connection_timeout: Duration,

    /// Client connections open at once; more wait until one closes (lowered
    /// at start-up, with a warning, if the open-files limit cannot hold
    /// them beside what the workers need).
    #[arg(long, value_name = "N", default_value = "1024")]
    pub max_connections: NonZeroUsize,

    /// Client connections open at once from one IP address (every client
    /// on a unix:PATH socket counts as one); past it, a new connection is
    /// closed at once [default: no bound but --max-connections].
    #[arg(long, value_name = "N")]
    pub max_connections_per_peer: Option<NonZeroUsize>,

    /// Calls (HTTP/2 streams) open at once on one connection; a client
    /// queues the rest.
    #[arg(long, value_name = "N", default_value = "1024")]
    pub max_streams_per_connection: std::num::NonZeroU32,
}

/// Settings the gateway runs with, checked once at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    pub workers: usize,
    pub runtime_threads: Option<usize>,
    pub transport: TransportKind,
    pub listen: ListenAddr,
    pub python: OsString,
    pub call_timeout: Option<Duration>,
    pub max_payload_bytes: usize,
    pub ring_bytes: usize,
    pub queue_capacity: usize,
    pub shutdown_grace: Duration,
    pub startup_timeout: Duration,
    pub metrics_listen: Option<SocketAddr>,
    pub auth_token_file: Option<PathBuf>,
    pub tls: Option<TlsFiles>,
    pub worker_memory_bytes: Option<u64>,
    pub max_output_bytes: u64,
    pub preload: Vec<String>,
    pub template: bool,
    pub debuggable: bool,
    pub recycle: crate::pool::Recycle,
    pub queue_max_bytes: usize,
    pub function_cache_bytes: usize,
    pub max_receiving_bytes: usize,
    pub max_undelivered_bytes: usize,
    pub max_queue_wait: Option<Duration>,
    pub handshake_timeout: Duration,
    pub idle_connection_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_peer: Option<NonZeroUsize>,
    pub max_streams_per_connection: u32,
}

/// Where the TLS certificate chain and key are (read at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Settings that cannot be used together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "refusing to listen on {0} without --auth-token-file: anyone who can reach it could run code as this user. Add --auth-token-file FILE, listen on 127.0.0.1, or pass --insecure-allow-remote-without-token if the network is trusted"
    )]
    RemoteWithoutToken(SocketAddr),

    #[error(
        "TLS on a Unix socket is not supported: clients reach unix:PATH in plaintext, and the socket's file mode (0600) already decides who may connect. Drop --tls-cert and --tls-key, or listen on HOST:PORT"
    )]
    TlsOnUnixSocket,
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(args: Args) -> Result<Self, ConfigError> {
        let workers = args
            .workers
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get);
        match args.listen {
            ListenAddr::Tcp(addr)
                if !args.listen.is_local()
                    && args.auth_token_file.is_none()
                    && !args.insecure_allow_remote_without_token =>
            {
                return Err(ConfigError::RemoteWithoutToken(addr));
            }
            ListenAddr::Unix(_) if args.tls_cert.is_some() => {
                return Err(ConfigError::TlsOnUnixSocket);
            }
            _ => {}
        }
        let tls = match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => None,
        };
        let queue_max_bytes = args
            .queue_max_bytes
            .map_or(args.max_payload_bytes.saturating_mul(4), NonZeroUsize::get);
        Ok(Config {
            workers,
            runtime_threads: args.runtime_threads.map(NonZeroUsize::get),
            transport: args.transport,
            listen: args.listen,
            python: args
                .python
                .unwrap_or_else(|| default_python(&beside_this_binary)),
            call_timeout: args.call_timeout,
            max_payload_bytes: args.max_payload_bytes,
            ring_bytes: args.ring_bytes,
            queue_capacity: args.queue_capacity.get(),
            shutdown_grace: args.shutdown_grace,
            startup_timeout: args.startup_timeout,
            metrics_listen: args.metrics_listen,
            auth_token_file: args.auth_token_file,
            tls,
            worker_memory_bytes: args.worker_memory_bytes,
            max_output_bytes: args.max_output_bytes,
            preload: args.preload,
            template: !args.no_template,
            debuggable: args.debuggable,
            recycle: crate::pool::Recycle {
                max_calls: args.max_calls_per_worker.map(std::num::NonZeroU64::get),
                max_rss_bytes: args.max_worker_rss_bytes.map(std::num::NonZeroU64::get),
            },
            queue_max_bytes,
            function_cache_bytes: args.function_cache_bytes,
            max_receiving_bytes: args
                .max_receiving_bytes
                .map_or(queue_max_bytes, NonZeroUsize::get),
            max_undelivered_bytes: args
                .max_undelivered_bytes
                .map_or(queue_max_bytes, NonZeroUsize::get),
            max_queue_wait: args.max_queue_wait,
            handshake_timeout: args.handshake_timeout,
            idle_connection_timeout: args.idle_connection_timeout,
            max_connections: args.max_connections.get(),
            max_connections_per_peer: args.max_connections_per_peer,
            max_streams_per_connection: args.max_streams_per_connection.get(),
        })
    }
}

/// The interpreter workers run when `--python` is not given: the `python3`
/// or `python` that `beside` finds (next to this binary), else `python3` on
/// `PATH`.
fn default_python(beside: &dyn Fn(&str) -> Option<PathBuf>) -> OsString {
    ["python3", "python"]
        .iter()
        .find_map(|name| beside(name))
        .map_or_else(|| OsString::from("python3"), PathBuf::into_os_string)
}

/// `name` in the directory of this binary, if it is a file there: a binary
/// installed into a virtualenv's `bin/` finds that environment's Python.
fn beside_this_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::current_exe().ok()?.parent()?.join(name);
    path.is_file().then_some(path)
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{text}` must be a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|err| format!("`{text}`: {err}"))
}

fn parse_ring_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of bytes"))?;
    if bytes < 4096 || !bytes.is_power_of_two() || bytes > 1 << 32 {
        return Err("must be a power of two from 4096 to 4294967296".into());
    }
    Ok(bytes)
}

fn parse_memory_limit(text: &str) -> Result<u64, String> {
    let bytes: u64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of bytes"))?;
    // Python itself needs some room before it can run anything.
    if bytes < 64 << 20 {
        return Err("must be at least 67108864 (64 MiB): Python needs that much to start".into());
    }
    Ok(bytes)
}

/// A dotted module name, as `import` takes it.
fn parse_module(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        });
    if !valid {
        return Err(format!("`{text}` is not a module name"));
    }
    Ok(text.to_owned())
}

fn parse_payload_limit(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of bytes"))?;
    // gRPC frames carry a 32-bit length: nothing larger can cross the wire.
    let ceiling = u32::MAX as usize - 64;
    if bytes == 0 || bytes > ceiling {
        return Err(format!("must be between 1 and {ceiling} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args =
            Args::try_parse_from(std::iter::once("mysticchallenge").chain(args.iter().copied()))
                .map_err(|err| err.to_string())?;
        Config::try_from(args).map_err(|err| err.to_string())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(config.transport, TransportKind::Shm);
        assert_eq!(config.max_payload_bytes, 1 << 30);
        assert_eq!(config.call_timeout, None);
        assert_eq!(config.max_output_bytes, 4 << 20);
        assert!(config.workers >= 1);
    }

    #[test]
    fn the_default_python_is_the_one_beside_the_binary() {
        let venv = |name: &str| (name == "python").then(|| PathBuf::from("/venv/bin/python"));
        assert_eq!(default_python(&venv), "/venv/bin/python");
        let both = |name: &str| Some(PathBuf::from(format!("/venv/bin/{name}")));
        assert_eq!(default_python(&both), "/venv/bin/python3");
        assert_eq!(default_python(&|_| None), "python3");
        let config = parse(&["--python", "/opt/py"]).unwrap();
        assert_eq!(config.python, "/opt/py");
    }

    #[test]
    fn seconds_accept_fractions_and_refuse_nonsense() {
        let config = parse(&["--call-timeout", "0.5"]).unwrap();
        assert_eq!(config.call_timeout, Some(Duration::from_millis(500)));
        for bad in ["0", "-1", "abc", "inf", "NaN"] {
            assert!(parse(&["--call-timeout", bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn zero_workers_and_zero_payload_are_refused() {
        assert!(parse(&["--workers", "0"]).is_err());
        assert!(parse(&["--max-payload-bytes", "0"]).is_err());
        assert!(parse(&["--max-payload-bytes", "99999999999"]).is_err());
    }

    #[test]
    fn ring_sizes_are_powers_of_two() {
        assert_eq!(parse(&["--ring-bytes", "65536"]).unwrap().ring_bytes, 65536);
        for bad in ["0", "4095", "5000", "abc"] {
            assert!(parse(&["--ring-bytes", bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn remote_listening_needs_a_token_or_a_loud_override() {
        let err = parse(&["--listen", "0.0.0.0:8000"]).unwrap_err();
        assert!(err.contains("--auth-token-file"), "{err}");
        assert!(parse(&["--listen", "0.0.0.0:8000", "--auth-token-file", "t"]).is_ok());
        let flag = "--insecure-allow-remote-without-token";
        assert!(parse(&["--listen", "0.0.0.0:8000", flag]).is_ok());
        assert!(parse(&["--listen", "[::1]:8000"]).is_ok());
    }

    #[test]
    fn a_unix_socket_is_local_and_needs_no_token() {
        let config = parse(&["--listen", "unix:/run/g.sock"]).unwrap();
        assert_eq!(
            config.listen,
            ListenAddr::Unix(PathBuf::from("/run/g.sock"))
        );
        let config = parse(&["--listen", "unix:g.sock", "--auth-token-file", "t"]).unwrap();
        assert_eq!(config.auth_token_file, Some(PathBuf::from("t")));
    }

    #[test]
    fn bad_listen_addresses_are_refused_with_the_reason() {
        let err = parse(&["--listen", "localhost:8000"]).unwrap_err();
        assert!(err.contains("unix:PATH"), "{err}");
        let long = format!("unix:/{}", "s".repeat(200));
        let err = parse(&["--listen", &long]).unwrap_err();
        assert!(err.contains("at most 107 bytes"), "{err}");
        let tls = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];
        let err = parse(&[&["--listen", "unix:/run/g.sock"][..], &tls].concat()).unwrap_err();
        assert!(err.contains("TLS on a Unix socket"), "{err}");
    }

    #[test]
    fn tls_needs_both_files_and_memory_limits_leave_room_for_python() {
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        let config = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(config.tls.unwrap().key, PathBuf::from("k.pem"));
        assert!(parse(&["--worker-memory-bytes", "1000"]).is_err());
        let config = parse(&["--worker-memory-bytes", "1073741824"]).unwrap();
        assert_eq!(config.worker_memory_bytes, Some(1 << 30));
    }

    #[test]
    fn runtime_threads_default_to_the_runtime_s_choice_and_are_never_zero() {
        assert_eq!(parse(&[]).unwrap().runtime_threads, None);
        assert_eq!(
            parse(&["--runtime-threads", "3"]).unwrap().runtime_threads,
            Some(3)
        );
        assert!(Args::try_parse_from(["mysticchallenge", "--runtime-threads", "0"]).is_err());
    }

    #[test]
    fn the_function_cache_is_bounded_by_bytes() {
        assert_eq!(
            parse(&[]).unwrap().function_cache_bytes,
            crate::functions::DEFAULT_CACHE_BYTES
        );
        assert_eq!(
            parse(&["--function-cache-bytes", "0"])
                .unwrap()
                .function_cache_bytes,
            0
        );
    }

    #[test]
    fn the_queue_byte_bound_defaults_to_four_payloads() {
        let config = parse(&["--max-payload-bytes", "1000"]).unwrap();
        assert_eq!(config.queue_max_bytes, 4000);
        let config = parse(&["--queue-max-bytes", "10"]).unwrap();
        assert_eq!(config.queue_max_bytes, 10);
        assert_eq!(config.max_receiving_bytes, 10);
        let config = parse(&["--max-receiving-bytes", "7"]).unwrap();
        assert_eq!(config.max_receiving_bytes, 7);
        assert_eq!(config.max_undelivered_bytes, config.queue_max_bytes);
        let config = parse(&["--max-undelivered-bytes", "9"]).unwrap();
        assert_eq!(config.max_undelivered_bytes, 9);
    }

    #[test]
    fn connections_and_streams_are_bounded_by_default() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.max_streams_per_connection, 1024);
        assert_eq!(config.max_connections_per_peer, None);
        assert!(parse(&["--max-connections", "0"]).is_err());
        assert!(parse(&["--max-connections-per-peer", "0"]).is_err());
        assert!(parse(&["--max-streams-per-connection", "0"]).is_err());
    }

    #[test]
    fn connections_must_earn_their_place_within_seconds_by_default() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.idle_connection_timeout, Duration::from_secs(300));
        let config = parse(&[
            "--handshake-timeout",
            "0.5",
            "--idle-connection-timeout",
            "2",
        ]);
        let config = config.unwrap();
        assert_eq!(config.handshake_timeout, Duration::from_millis(500));
        assert_eq!(config.idle_connection_timeout, Duration::from_secs(2));
        assert!(parse(&["--handshake-timeout", "0"]).is_err());
    }
}
