//! The gateway's Unix socket file (`--listen unix:PATH`): bound with mode
//! 0600, so that only this user can connect; a leftover socket at PATH that
//! nobody listens on is replaced, anything else there is refused and left
//! alone; and the file is removed when the gateway is done with it, if it is
//! still the gateway's own.

use std::fs::{self, FileType};
use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::stat::{Mode, umask};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

/// How long a process listening at PATH has to take the probe's connection
/// before PATH counts as in use anyway.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum UnixSocketError {
    #[error(
        "{path} is in use by another gateway (or another program listening on it); stop it, or pick another path"
    )]
    InUse { path: PathBuf },

    #[error(
        "{path} exists and is {kind}, not a socket; it was left alone: remove it yourself, or pick another path"
    )]
    NotASocket { path: PathBuf, kind: &'static str },

    #[error(
        "cannot create the socket {path}: the directory {parent} does not exist; create it first, or pick another path"
    )]
    NoParent { path: PathBuf, parent: PathBuf },

    #[error("cannot check whether {path} is in use: {source}; it was left alone")]
    Probe { path: PathBuf, source: io::Error },

    #[error("cannot replace the leftover socket {path}: {source}")]
    Replace { path: PathBuf, source: io::Error },

    #[error("cannot listen on unix:{path}: {source}; pick another path")]
    Bind { path: PathBuf, source: io::Error },
}

/// The socket file the gateway bound. Dropping it removes the file, if the
/// file at its path is still this socket ([`Identity`]): a socket some
/// other process has put there since is left alone.
#[derive(Debug)]
pub struct SocketFile {
    /// Absolute, so that the file is found whatever the working directory.
    path: PathBuf,
    identity: Identity,
}

/// What tells one file from another at the same path: its device and inode,
/// and when that inode was born. The inode number alone is not enough:
/// ext4 hands a freed inode's number to the next file created, so a socket
/// removed and bound again by someone else often has the same one. Where
/// the filesystem records no birth time, the last status change stands in
/// (a `chmod` of the gateway's socket then makes it look replaced: it is
/// left behind, as a leftover the next gateway replaces, never the reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    born: (i64, i64),
}

impl Identity {
    fn of(meta: &fs::Metadata) -> Self {
        let born = meta
            .created()
            .ok()
            .and_then(|born| born.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or((meta.ctime(), meta.ctime_nsec()), |since| {
                (since.as_secs() as i64, i64::from(since.subsec_nanos()))
            });
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            born,
        }
    }

    /// The identity of the file at `path` now (not following a symlink).
    fn at(path: &Path) -> io::Result<Self> {
        fs::symlink_metadata(path).map(|meta| Identity::of(&meta))
    }
}

impl SocketFile {
    /// The socket's absolute path (as clients on this host can reach it).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let path = self.path.display();
        match Identity::at(&self.path) {
            Ok(now) if now == self.identity => match fs::remove_file(&self.path) {
                Ok(()) => info!("removed the socket {path}"),
                Err(err) => warn!(cause = %err, "cannot remove the socket {path}"),
            },
            Ok(_) => {
                warn!("{path} is no longer this gateway's socket (it was replaced): left alone")
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                warn!("the socket {path} was already removed");
            }
            Err(err) => warn!(cause = %err, "cannot check the socket {path}: left alone"),
        }
    }
}

/// Binds a listening Unix socket at `path`, mode 0600, after replacing a
/// leftover socket there (one that refuses connections).
pub async fn bind(path: &Path) -> Result<(UnixListener, SocketFile), UnixSocketError> {
    let absolute = std::path::absolute(path).map_err(|source| UnixSocketError::Bind {
        path: path.to_owned(),
        source,
    })?;
    clear_leftover(&absolute).await?;
    // Bound at the path as given: an absolute path may be longer than
    // sun_path where the relative one fits.
    let listener = bind_owner_only(path).map_err(|source| match source.raw_os_error() {
        Some(nix::libc::ENOENT) => UnixSocketError::NoParent {
            path: absolute.clone(),
            parent: absolute.parent().unwrap_or(Path::new("/")).to_owned(),
        },
        Some(nix::libc::EADDRINUSE) => UnixSocketError::InUse {
            path: absolute.clone(),
        },
        _ => UnixSocketError::Bind {
            path: absolute.clone(),
            source,
        },
    })?;
    let identity = Identity::at(&absolute).map_err(|source| UnixSocketError::Bind {
        path: absolute.clone(),
        source,
    })?;
    let file = SocketFile {
        path: absolute,
        identity,
    };
    Ok((listener, file))
}

/// Serializes this process's changes of its umask, so that two binds at
/// once (tests do that) cannot leave the restrictive one in place.
static UMASK: Mutex<()> = Mutex::new(());

/// Binds with the umask at 0o177 for the duration of `bind(2)`, so that the
/// kernel creates the file as 0600: it is never more open, not even for an
/// instant before a `chmod`.
///
/// Why the umask rather than binding inside a private directory and
/// renaming the socket into place: that temporary path is longer than PATH,
/// so a PATH near the 107-byte limit would fail for a reason of ours, and a
/// gateway killed mid-way would leave the directory behind. The umask is
/// process-wide, which is safe here: the gateway binds before it spawns any
/// worker (so no child inherits 0o177, and it is restored long before), no
/// other part of the gateway changes the umask (so nothing can loosen it
/// during the bind), and a file another thread might create meanwhile only
/// comes out more restrictive, never more open.
fn bind_owner_only(path: &Path) -> io::Result<UnixListener> {
    let _serial = UMASK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let previous = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(previous);
    bound
}

/// Makes room at `path`: nothing there is fine; a socket that refuses
/// connections is a leftover of a gateway that did not clean up (SIGKILL,
/// a crash) and is removed; anything else is an error, and left alone.
async fn clear_leftover(path: &Path) -> Result<(), UnixSocketError> {
    let found = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Nothing there, or its directory is missing (which bind reports).
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(UnixSocketError::Probe {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !found.file_type().is_socket() {
        return Err(UnixSocketError::NotASocket {
            path: path.to_owned(),
            kind: describe(found.file_type()),
        });
    }
    // Non-blocking: a listener whose backlog is full answers WouldBlock
    // rather than making the probe wait.
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Err(err)) if err.kind() == io::ErrorKind::ConnectionRefused => {}
        Ok(Ok(_)) | Err(_) => {
            return Err(UnixSocketError::InUse {
                path: path.to_owned(),
            });
        }
        Ok(Err(err)) if err.kind() == io::ErrorKind::WouldBlock => {
            return Err(UnixSocketError::InUse {
                path: path.to_owned(),
            });
        }
        Ok(Err(source)) => {
            return Err(UnixSocketError::Probe {
                path: path.to_owned(),
                source,
            });
        }
    }
    // Removed only if it is still the socket that refused: another gateway
    // starting at the same moment may have replaced it since.
    if Identity::at(path).ok() != Some(Identity::of(&found)) {
        return Err(UnixSocketError::InUse {
            path: path.to_owned(),
        });
    }
    fs::remove_file(path).map_err(|source| UnixSocketError::Replace {
        path: path.to_owned(),
        source,
    })?;
    info!(
        "replaced the leftover socket {} (nothing listened on it)",
        path.display()
    );
    Ok(())
}

/// What a file that is not a socket is, for the error that refuses it.
fn describe(kind: FileType) -> &'static str {
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a named pipe"
    } else {
        "a device or other special file"
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn the_socket_is_owner_only_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sock");
        let (listener, file) = bind(&path).await.unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(file.path(), path);
        let _client = UnixStream::connect(&path).await.unwrap();
        let (_server, _) = listener.accept().await.unwrap();
        drop(file);
        assert!(!path.exists(), "the socket file is still there");
    }

    #[tokio::test]
    async fn a_leftover_is_replaced_and_a_live_socket_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sock");
        let (first, file) = bind(&path).await.unwrap();
        let err = bind(&path).await.unwrap_err();
        assert!(matches!(err, UnixSocketError::InUse { .. }), "{err}");
        assert!(
            err.to_string().contains("in use by another gateway"),
            "{err}"
        );
        // Still the first one's: it keeps accepting.
        let _client = UnixStream::connect(&path).await.unwrap();
        assert!(first.accept().await.is_ok());
        // Gone without cleaning up (as after SIGKILL): a leftover.
        drop(first);
        std::mem::forget(file);
        let (_second, file) = bind(&path).await.unwrap();
        assert!(UnixStream::connect(&path).await.is_ok());
        drop(file);
    }

    #[tokio::test]
    async fn anything_but_a_socket_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        fs::write(&file, "keep me").unwrap();
        let err = bind(&file).await.unwrap_err();
        assert!(
            err.to_string().contains("is a regular file, not a socket"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = bind(&link).await.unwrap_err();
        assert!(err.to_string().contains("a symbolic link"), "{err}");
        let err = bind(dir.path()).await.unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("g.sock");
        let err = bind(&path).await.unwrap_err();
        assert!(matches!(err, UnixSocketError::NoParent { .. }), "{err}");
        let parent = dir.path().join("absent");
        assert!(
            err.to_string().contains(&parent.display().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_replaced_socket_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sock");
        let (first, file) = bind(&path).await.unwrap();
        drop(first);
        // Someone else's socket now sits at the path.
        fs::remove_file(&path).unwrap();
        let _theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(file);
        assert!(path.exists(), "another process's socket was removed");
    }

    /// The process's umask, read (by setting it and back) while no bind
    /// changes it.
    fn current_umask() -> Mode {
        let _serial = UMASK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = umask(Mode::from_bits_truncate(0o022));
        umask(current);
        current
    }

    #[tokio::test]
    async fn the_umask_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let before = current_umask();
        assert_ne!(before, Mode::from_bits_truncate(0o177));
        let (_listener, _file) = bind(&dir.path().join("g.sock")).await.unwrap();
        assert_eq!(current_umask(), before);
    }
}
