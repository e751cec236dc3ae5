//! `--listen`: where the gRPC server accepts connections, `HOST:PORT` or
//! `unix:PATH`, parsed and checked in one place. No IO happens here: whether
//! the address can be bound is the listener's business
//! (`server::listener`).

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The longest path a Unix socket can be bound at, in bytes: `sun_path`
/// holds 108 bytes, the last of which is the terminating NUL.
pub const MAX_UNIX_PATH_BYTES: usize = 107;

/// Where the gRPC server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address (port 0 picks a free port).
    Tcp(SocketAddr),
    /// A Unix domain socket at this path (relative paths are relative to the
    /// gateway's working directory).
    Unix(PathBuf),
}

impl ListenAddr {
    /// Whether only this host can connect: a loopback IP, or a Unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            ListenAddr::Tcp(addr) => addr.ip().is_loopback(),
            ListenAddr::Unix(_) => true,
        }
    }
}

/// Why a `--listen` value is not an address to listen on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenAddrError {
    #[error(
        "`{0}` is neither HOST:PORT (an IP address and a port: 127.0.0.1:8000, [::1]:8000, 0.0.0.0:8000) nor unix:PATH (unix:/run/mysticchallenge.sock)"
    )]
    Unrecognized(String),

    #[error("the socket path is missing: write unix:PATH, e.g. unix:/run/mysticchallenge.sock")]
    MissingPath,

    #[error("unix:// takes no host: write unix:PATH or unix:///ABSOLUTE/PATH")]
    UnixHost,

    #[error(
        "the socket path {path} is {len} bytes long; a Unix socket path can be at most {MAX_UNIX_PATH_BYTES} bytes (sun_path holds 108 with the terminating NUL): pick a shorter path"
    )]
    PathTooLong { path: String, len: usize },
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(text: &str) -> Result<Self, ListenAddrError> {
        let Some(rest) = text.strip_prefix("unix:") else {
            return text
                .parse()
                .map(ListenAddr::Tcp)
                .map_err(|_| ListenAddrError::Unrecognized(text.to_owned()));
        };
        // `unix:///ABSOLUTE` as well as `unix:PATH`, as gRPC clients write it.
        let path = match rest.strip_prefix("//") {
            Some(absolute) if absolute.starts_with('/') => absolute,
            Some(_) => return Err(ListenAddrError::UnixHost),
            None => rest,
        };
        if path.is_empty() {
            return Err(ListenAddrError::MissingPath);
        }
        let len = Path::new(path).as_os_str().as_bytes().len();
        if len > MAX_UNIX_PATH_BYTES {
            return Err(ListenAddrError::PathTooLong {
                path: path.to_owned(),
                len,
            });
        }
        Ok(ListenAddr::Unix(PathBuf::from(path)))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => addr.fmt(f),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(path: &str) -> ListenAddr {
        ListenAddr::Unix(PathBuf::from(path))
    }

    #[test]
    fn tcp_addresses_and_unix_paths_parse() {
        let parsed = |text: &str| text.parse::<ListenAddr>().unwrap();
        assert_eq!(
            parsed("127.0.0.1:8000"),
            ListenAddr::Tcp("127.0.0.1:8000".parse().unwrap())
        );
        assert_eq!(
            parsed("[::1]:0"),
            ListenAddr::Tcp("[::1]:0".parse().unwrap())
        );
        assert_eq!(parsed("unix:/run/g.sock"), unix("/run/g.sock"));
        assert_eq!(parsed("unix:///run/g.sock"), unix("/run/g.sock"));
        assert_eq!(parsed("unix:g.sock"), unix("g.sock"));
        assert_eq!(parsed("unix:./dir/g.sock"), unix("./dir/g.sock"));
    }

    #[test]
    fn it_displays_as_it_is_written() {
        for text in [
            "127.0.0.1:8000",
            "[::1]:9",
            "unix:/run/g.sock",
            "unix:g.sock",
        ] {
            assert_eq!(text.parse::<ListenAddr>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn only_loopback_and_unix_sockets_are_local() {
        let local = |text: &str| text.parse::<ListenAddr>().unwrap().is_local();
        assert!(local("127.0.0.1:1"));
        assert!(local("[::1]:1"));
        assert!(local("unix:/run/g.sock"));
        assert!(!local("0.0.0.0:1"));
        assert!(!local("10.1.2.3:1"));
    }

    #[test]
    fn bad_addresses_say_which_forms_are_accepted() {
        let error = |text: &str| text.parse::<ListenAddr>().unwrap_err();
        for bad in [
            "",
            "localhost:8000",
            "127.0.0.1",
            ":8000",
            "unix",
            "/run/g.sock",
        ] {
            let err = error(bad);
            assert_eq!(err, ListenAddrError::Unrecognized(bad.to_owned()));
            let message = err.to_string();
            assert!(message.contains("HOST:PORT") && message.contains("unix:PATH"));
        }
        assert_eq!(error("unix:"), ListenAddrError::MissingPath);
        assert_eq!(error("unix://"), ListenAddrError::UnixHost);
        assert_eq!(error("unix://host/g.sock"), ListenAddrError::UnixHost);
    }

    #[test]
    fn socket_paths_must_fit_in_sun_path() {
        let longest = format!("/{}", "a".repeat(MAX_UNIX_PATH_BYTES - 1));
        assert_eq!(
            format!("unix:{longest}").parse::<ListenAddr>(),
            Ok(unix(&longest))
        );
        let over = format!("{longest}b");
        let err = format!("unix:{over}").parse::<ListenAddr>().unwrap_err();
        assert_eq!(
            err,
            ListenAddrError::PathTooLong {
                path: over,
                len: 108
            }
        );
        assert!(err.to_string().contains("at most 107 bytes"), "{err}");
        // Bytes, not characters: é is two.
        let accented = format!("unix:/{}", "é".repeat(54));
        assert!(matches!(
            accented.parse::<ListenAddr>(),
            Err(ListenAddrError::PathTooLong { len: 109, .. })
        ));
    }
}
