//! The private runtime directory for doorbell sockets, and the clean-up of
//! what a killed gateway left behind.
//!
//! `$XDG_RUNTIME_DIR/mysticchallenge` (or `/tmp/mysticchallenge-<uid>`), mode
//! 0700 and owned by us, holds one directory per gateway named after its pid.
//! Segments live in `/dev/shm` as `mystic-<gateway pid>-<slot>-<generation>`.
//! A new gateway removes the directories and segments of gateways that are no
//! longer running.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::{Pid, geteuid};

/// Prefix of every segment name in `/dev/shm`.
pub const SEGMENT_PREFIX: &str = "mystic-";
const SHM_DIR: &str = "/dev/shm";

/// This gateway's private directory; removed when dropped.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
    pid: u32,
}

impl RuntimeDir {
    /// Creates this gateway's directory after removing stale ones.
    pub fn create() -> io::Result<RuntimeDir> {
        let base = match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("mysticchallenge"),
            _ => std::env::temp_dir().join(format!("mysticchallenge-{}", geteuid())),
        };
        Self::create_in(&base)
    }

    /// As [`RuntimeDir::create`], under `base`.
    pub fn create_in(base: &Path) -> io::Result<RuntimeDir> {
        private_dir(base)?;
        remove_stale(base, Path::new(SHM_DIR));
        let pid = std::process::id();
        let path = base.join(pid.to_string());
        if path.exists() {
            fs::remove_dir_all(&path)?;
        }
        private_dir(&path)?;
        Ok(RuntimeDir { path, pid })
    }

    /// Where slot `index`'s doorbell for its `generation`-th process lives.
    pub fn socket_path(&self, index: usize, generation: u64) -> PathBuf {
        self.path.join(format!("w{index}-{generation}.sock"))
    }

    /// The `/dev/shm` name for slot `index`'s `generation`-th segment.
    pub fn segment_name(&self, index: usize, generation: u64) -> String {
        format!("{SEGMENT_PREFIX}{}-{index}-{generation}", self.pid)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Creates `path` as a 0700 directory, or checks that an existing one is a
/// real directory owned by us and closed to others.
fn private_dir(path: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let metadata = fs::symlink_metadata(path)?;
    let refuse = |why: &str| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: {why}", path.display()),
        )
    };
    if !metadata.is_dir() {
        return Err(refuse("not a directory"));
    }
    if metadata.uid() != geteuid().as_raw() {
        return Err(refuse("owned by another user"));
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(refuse("open to other users; it must be mode 0700"));
    }
    Ok(())
}

/// Whether a process with this pid exists.
fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    !matches!(kill(Pid::from_raw(raw), None), Err(Errno::ESRCH))
}

/// Removes directories and segments of gateways that are gone.
fn remove_stale(base: &Path, shm_dir: &Path) {
    let gone = |pid: &str| {
        pid.parse::<u32>()
            .is_ok_and(|pid| pid != std::process::id() && !alive(pid))
    };
    if let Ok(entries) = fs::read_dir(base) {
        for entry in entries.flatten() {
            if gone(&entry.file_name().to_string_lossy()) {
                tracing::info!(path = %entry.path().display(), "removing a stale runtime directory");
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    if let Ok(entries) = fs::read_dir(shm_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(SEGMENT_PREFIX) else {
                continue;
            };
            if rest.split('-').next().is_some_and(gone) {
                tracing::info!(segment = name, "removing a stale shared-memory segment");
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_private_and_removed_on_drop() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path().join("rt");
        let dir = RuntimeDir::create_in(&base).unwrap();
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(
            fs::metadata(&base).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn an_open_base_directory_is_refused() {
        let base = tempfile::tempdir().unwrap();
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let err = RuntimeDir::create_in(base.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn leftovers_of_dead_gateways_are_removed() {
        let base = tempfile::tempdir().unwrap();
        let shm = tempfile::tempdir().unwrap();
        // A pid far above pid_max is never alive.
        let dead = "999999999";
        let mine = std::process::id().to_string();
        fs::create_dir(base.path().join(dead)).unwrap();
        fs::create_dir(base.path().join(&mine)).unwrap();
        fs::write(shm.path().join(format!("mystic-{dead}-0-1")), b"").unwrap();
        fs::write(shm.path().join(format!("mystic-{mine}-0-1")), b"").unwrap();
        fs::write(shm.path().join("someone-else"), b"").unwrap();
        remove_stale(base.path(), shm.path());
        assert!(!base.path().join(dead).exists());
        assert!(base.path().join(&mine).exists());
        assert!(!shm.path().join(format!("mystic-{dead}-0-1")).exists());
        assert!(shm.path().join(format!("mystic-{mine}-0-1")).exists());
        assert!(shm.path().join("someone-else").exists());
    }
}
