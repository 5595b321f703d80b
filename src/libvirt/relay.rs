//! The agent channel's relay: QEMU's chardev connects first and is held idle (the guest's
//! own agent then talks to nobody); every later connection is libvirt's, and is relayed
//! byte for byte to the mock of the case that is running, until either side closes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
struct Shared {
    /// The socket libvirt's next connection goes to.
    target: Option<PathBuf>,
    /// The next accepted connection is QEMU's.
    expect_qemu: bool,
    /// QEMU's connection, kept open and unread.
    qemu: Option<UnixStream>,
}

/// The relay; it stops when dropped.
#[derive(Debug)]
pub(crate) struct Relay {
    shared: Arc<Mutex<Shared>>,
    /// How many libvirt connections reached a mock so far.
    relayed: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens at `path` (which must not exist).
    pub(crate) fn bind(path: &Path) -> std::io::Result<Relay> {
        let listener = UnixListener::bind(path)?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, relayed) = watch::channel(0);
        let task = tokio::spawn(serve(listener, shared.clone(), tx));
        Ok(Relay {
            shared,
            relayed,
            task,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new domain is about to connect: its first connection is QEMU's.
    pub(crate) fn expect_qemu(&self) {
        let mut shared = self.lock();
        shared.expect_qemu = true;
        shared.qemu = None;
    }

    /// Where libvirt's next connections go.
    pub(crate) fn set_target(&self, socket: &Path) {
        self.lock().target = Some(socket.to_owned());
    }

    /// How many libvirt connections were relayed so far.
    pub(crate) fn relayed(&self) -> u64 {
        *self.relayed.borrow()
    }

    /// Waits until more than `count` connections were relayed.
    pub(crate) async fn wait_relayed_beyond(&mut self, count: u64) {
        let _ = self.relayed.wait_for(|n| *n > count).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: UnixListener, shared: Arc<Mutex<Shared>>, relayed: watch::Sender<u64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let target = {
            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if std::mem::take(&mut s.expect_qemu) {
                s.qemu = Some(stream);
                continue;
            }
            s.target.clone()
        };
        let Some(target) = target else {
            continue;
        };
        match UnixStream::connect(&target).await {
            Ok(mock) => {
                relayed.send_modify(|n| *n += 1);
                tokio::spawn(pipe(stream, mock));
            }
            // The case's mock is gone (the VM exited): libvirt sees its connection close.
            Err(_) => drop(stream),
        }
    }
}

/// Copies both ways; when one side ends, the other is closed too (a mock's VM exit is
/// an EOF for libvirt, libvirt leaving is a disconnect for the mock).
async fn pipe(mut libvirt: UnixStream, mut mock: UnixStream) {
    let _ = tokio::io::copy_bidirectional(&mut libvirt, &mut mock).await;
    let _ = libvirt.shutdown().await;
    let _ = mock.shutdown().await;
}
