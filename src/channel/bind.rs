//! Creating the listening socket at a path, with a clear error for every way a path can be
//! wrong, and QEMU's listen backlog of 1.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};

/// The longest path a unix socket can have: `sun_path` as libc declares it (108 bytes
/// on Linux), less the terminating NUL.
pub const MAX_SOCKET_PATH: usize = std::mem::size_of::<libc::sockaddr_un>()
    - std::mem::offset_of!(libc::sockaddr_un, sun_path)
    - 1;

/// QEMU's chardev and qemu-ga both listen with a backlog of 1: two more clients can queue
/// (Linux allows backlog + 1), a further non-blocking connect gets EAGAIN.
const BACKLOG: libc::c_int = 1;

/// Why the socket could not be created at its path.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "socket path {} is {len} bytes long, but a unix socket path holds at most {MAX_SOCKET_PATH} bytes: choose a shorter path",
        path.display()
    )]
    TooLong { path: PathBuf, len: usize },
    #[error(
        "cannot create socket {}: its directory does not exist; create it or choose another path",
        path.display()
    )]
    MissingDirectory { path: PathBuf },
    #[error(
        "cannot create socket {}: the path exists and is not a socket; remove it or choose another path",
        path.display()
    )]
    NotASocket { path: PathBuf },
    #[error(
        "cannot create socket {}: another process is listening on it; stop that process or choose another path",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error(
        "cannot create socket {}: permission denied; choose a directory you can write to",
        path.display()
    )]
    PermissionDenied {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create socket {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl BindError {
    fn from_io(path: &Path, source: io::Error) -> Self {
        let path = path.to_owned();
        match source.kind() {
            io::ErrorKind::PermissionDenied => BindError::PermissionDenied { path, source },
            io::ErrorKind::NotFound => BindError::MissingDirectory { path },
            io::ErrorKind::AddrInUse => BindError::InUse { path },
            _ => BindError::Io { path, source },
        }
    }

    /// The path the error is about.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            BindError::TooLong { path, .. }
            | BindError::MissingDirectory { path }
            | BindError::NotASocket { path }
            | BindError::InUse { path }
            | BindError::PermissionDenied { path, .. }
            | BindError::Io { path, .. } => path,
        }
    }
}

/// What a connect to an existing socket file found.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// Someone accepts (or queues) connections there.
    Live,
    /// Nobody listens: a file left behind by a process that died.
    Stale,
    /// The file disappeared in the meantime.
    Gone,
}

/// Connects without blocking, so a server with a full backlog answers EAGAIN at once.
fn connect_nonblocking(path: &Path) -> io::Result<OwnedFd> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un and `len` does not exceed its size.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(socket)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Tells a live socket from a file left behind by a process that died.
fn probe(path: &Path) -> io::Result<Probe> {
    match connect_nonblocking(path) {
        Ok(_) => Ok(Probe::Live),
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINPROGRESS) => Ok(Probe::Live),
            Some(libc::ECONNREFUSED) => Ok(Probe::Stale),
            Some(libc::ENOENT) => Ok(Probe::Gone),
            _ => Err(e),
        },
    }
}

/// Rejects a path that cannot name a unix socket at all: empty, or longer than
/// [`MAX_SOCKET_PATH`]. Checked before binding or connecting, so the message names the
/// path and what to do instead of the kernel's "invalid argument".
pub fn check_socket_path(path: &Path) -> Result<(), BindError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(BindError::TooLong {
            path: path.to_owned(),
            len,
        });
    }
    if len == 0 {
        return Err(BindError::Io {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty socket path"),
        });
    }
    Ok(())
}

/// Checks the path, replaces a stale socket file, and binds a listening socket with a
/// backlog of 1, non-blocking, ready for tokio.
pub fn bind_socket(path: &Path) -> Result<StdUnixListener, BindError> {
    check_socket_path(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match probe(path) {
            Ok(Probe::Live) => {
                return Err(BindError::InUse {
                    path: path.to_owned(),
                })
            }
            Ok(Probe::Stale) => remove_stale(path)?,
            Ok(Probe::Gone) => {}
            Err(e) => return Err(BindError::from_io(path, e)),
        },
        Ok(_) => {
            return Err(BindError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = match path.parent() {
                Some(p) if p.as_os_str().is_empty() => Path::new("."),
                Some(p) => p,
                None => Path::new("/"),
            };
            if !parent.is_dir() {
                return Err(BindError::MissingDirectory {
                    path: path.to_owned(),
                });
            }
        }
        Err(e) => return Err(BindError::from_io(path, e)),
    }
    listen_at(path)
}

/// Binds at `path` the way qemu-ga does when it (re)starts: a socket file left there is
/// removed first (QEMU util/qemu-sockets.c unlinks the path before bind).
pub(crate) fn rebind_socket(path: &Path) -> Result<StdUnixListener, BindError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            remove_stale(path)?;
        }
    }
    listen_at(path)
}

fn remove_stale(path: &Path) -> Result<(), BindError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BindError::from_io(path, e)),
    }
}

fn listen_at(path: &Path) -> Result<StdUnixListener, BindError> {
    let listener = StdUnixListener::bind(path).map_err(|e| BindError::from_io(path, e))?;
    // Listening again on a listening socket only changes its backlog (Linux).
    // SAFETY: the descriptor is the listener's own and stays open for the call.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        return Err(BindError::from_io(path, io::Error::last_os_error()));
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| BindError::from_io(path, e))?;
    Ok(listener)
}

/// Removes the socket file at `path` if it is a socket, as QEMU does when it exits.
pub(crate) fn remove_socket_file(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The filesystem path a listener is bound to, if it has one.
pub(crate) fn listener_path(listener: &tokio::net::UnixListener) -> Option<PathBuf> {
    let addr = listener.local_addr().ok()?;
    let path = addr.as_pathname()?;
    (!OsStr::is_empty(path.as_os_str())).then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sock");
        let first = bind_socket(&path).expect("first bind");
        assert!(matches!(bind_socket(&path), Err(BindError::InUse { .. })));
        drop(first);
        // The file is left behind, as when a process dies: it is replaced.
        assert!(path.exists());
        let _second = bind_socket(&path).expect("stale socket replaced");
    }

    #[test]
    fn the_backlog_is_one_and_a_full_backlog_is_still_live() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sock");
        let _listener = bind_socket(&path).expect("bind");
        // Linux queues backlog + 1 connections before it refuses more.
        let queued: Vec<_> = (0..2)
            .map(|_| connect_nonblocking(&path).expect("queued connect"))
            .collect();
        let third = connect_nonblocking(&path).expect_err("backlog full");
        assert_eq!(third.raw_os_error(), Some(libc::EAGAIN));
        assert_eq!(probe(&path).expect("probe"), Probe::Live);
        drop(queued);
    }

    /// The limit is the kernel's: a path of exactly the limit binds, one byte more does
    /// not even reach bind.
    #[test]
    fn the_path_limit_is_sun_path_less_its_nul() {
        assert_eq!(MAX_SOCKET_PATH, 107, "Linux sun_path is 108 bytes");
        let dir = tempfile::tempdir().expect("temp dir");
        let base = dir.path().as_os_str().len() + 1;
        let longest = dir.path().join("x".repeat(MAX_SOCKET_PATH - base));
        assert_eq!(longest.as_os_str().len(), MAX_SOCKET_PATH);
        bind_socket(&longest).expect("the longest path binds");
        let one_more = dir.path().join("y".repeat(MAX_SOCKET_PATH + 1 - base));
        let e = check_socket_path(&one_more).expect_err("one byte too long");
        assert!(matches!(e, BindError::TooLong { len: 108, .. }), "{e}");
        assert!(
            e.to_string().contains(&one_more.display().to_string()),
            "{e}"
        );
        assert!(e.to_string().contains("choose a shorter path"), "{e}");
    }

    #[test]
    fn path_problems_name_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let long = dir.path().join("x".repeat(120));
        let e = bind_socket(&long).expect_err("too long");
        assert!(matches!(e, BindError::TooLong { .. }), "{e}");
        assert!(e.to_string().contains("at most 107 bytes"), "{e}");

        let missing = dir.path().join("no/such/dir/s.sock");
        let e = bind_socket(&missing).expect_err("missing dir");
        assert!(matches!(e, BindError::MissingDirectory { .. }), "{e}");
        assert_eq!(e.path(), missing);

        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").expect("write");
        let e = bind_socket(&file).expect_err("not a socket");
        assert!(matches!(e, BindError::NotASocket { .. }), "{e}");
        assert!(e.to_string().contains(&*file.to_string_lossy()), "{e}");
    }
}
