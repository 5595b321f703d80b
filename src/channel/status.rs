//! What the socket side has seen: connections and byte counts, published so that tests
//! (and fault triggers) can wait for "the mock accepted my client" or "the mock read my
//! bytes" instead of sleeping.
//!
//! Updated on every read and write, so the update is a few atomic stores, and waiters
//! are woken only when there are any.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use tokio::sync::Notify;

/// The socket side of a running mock, as seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStatus {
    /// Connections accepted so far; connections are numbered from 1 in accept order, so
    /// this is also the number of the latest.
    pub accepted: u64,
    /// The connection being served now, if any.
    pub serving: Option<u64>,
    /// Bytes read from clients so far.
    pub bytes_in: u64,
    /// Bytes written to clients so far.
    pub bytes_out: u64,
}

#[derive(Debug, Default)]
struct Board {
    accepted: AtomicU64,
    /// 0: nobody.
    serving: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// The last request number and output number given (mock-wide, across agent processes).
    requests: AtomicU64,
    outputs: AtomicU64,
    /// Tasks inside [`StatusView::wait_for`].
    waiting: AtomicUsize,
    changed: Notify,
    closed: AtomicBool,
}

impl Board {
    fn snapshot(&self) -> ChannelStatus {
        ChannelStatus {
            accepted: self.accepted.load(SeqCst),
            serving: match self.serving.load(SeqCst) {
                0 => None,
                n => Some(n),
            },
            bytes_in: self.bytes_in.load(SeqCst),
            bytes_out: self.bytes_out.load(SeqCst),
        }
    }

    /// Called after every change. A waiter registers before it counts itself and looks,
    /// and the change is stored before the count is read, so either the waiter sees the
    /// change or the change sees the waiter.
    fn publish(&self) {
        if self.waiting.load(SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }
}

/// The writing end, shared by whatever serves clients (chardev or agent process).
#[derive(Clone, Debug)]
pub(crate) struct StatusBoard(Arc<Board>);

/// The reading end, held by [`super::AgentLife`].
#[derive(Clone, Debug)]
pub(crate) struct StatusView(Arc<Board>);

/// Marks the status closed when the mock stops serving, so waiters give up.
#[derive(Debug)]
pub(crate) struct StatusCloser(Arc<Board>);

impl Drop for StatusCloser {
    fn drop(&mut self) {
        self.0.closed.store(true, SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// The mock stopped serving while someone waited for a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Closed;

pub(crate) fn status_board() -> (StatusBoard, StatusView, StatusCloser) {
    let board = Arc::new(Board::default());
    (
        StatusBoard(board.clone()),
        StatusView(board.clone()),
        StatusCloser(board),
    )
}

impl StatusBoard {
    /// A client was accepted; returns its number.
    pub(crate) fn connected(&self) -> u64 {
        let number = self.0.accepted.fetch_add(1, SeqCst) + 1;
        self.0.serving.store(number, SeqCst);
        self.0.publish();
        number
    }

    pub(crate) fn disconnected(&self) {
        self.0.serving.store(0, SeqCst);
        self.0.publish();
    }

    /// The next mock-wide request number (from 1): every item an agent process handles.
    pub(crate) fn next_request(&self) -> u64 {
        self.0.requests.fetch_add(1, SeqCst) + 1
    }

    /// The next mock-wide output number (from 1): everything the agent writes.
    pub(crate) fn next_output(&self) -> u64 {
        self.0.outputs.fetch_add(1, SeqCst) + 1
    }

    pub(crate) fn serving(&self) -> Option<u64> {
        self.0.snapshot().serving
    }

    pub(crate) fn read(&self, n: usize) {
        self.0.bytes_in.fetch_add(n as u64, SeqCst);
        self.0.publish();
    }

    pub(crate) fn wrote(&self, n: usize) {
        self.0.bytes_out.fetch_add(n as u64, SeqCst);
        self.0.publish();
    }
}

/// Counts a waiter for as long as it waits, even if its future is dropped.
struct Waiting<'a>(&'a Board);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, SeqCst);
    }
}

impl StatusView {
    pub(crate) fn get(&self) -> ChannelStatus {
        self.0.snapshot()
    }

    /// Waits until `ready` holds for the status, and returns that status.
    pub(crate) async fn wait_for(
        &self,
        mut ready: impl FnMut(&ChannelStatus) -> bool,
    ) -> Result<ChannelStatus, Closed> {
        let board = &*self.0;
        loop {
            let changed = board.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            board.waiting.fetch_add(1, SeqCst);
            let _waiting = Waiting(board);
            let status = board.snapshot();
            if ready(&status) {
                return Ok(status);
            }
            if board.closed.load(SeqCst) {
                return Err(Closed);
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_numbered_from_one_and_bytes_add_up() {
        let (board, view, _closer) = status_board();
        assert_eq!(board.connected(), 1);
        board.read(10);
        board.wrote(4);
        board.disconnected();
        assert_eq!(board.connected(), 2);
        assert_eq!(
            view.get(),
            ChannelStatus {
                accepted: 2,
                serving: Some(2),
                bytes_in: 10,
                bytes_out: 4
            }
        );
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_the_change_it_waits_for() {
        let (board, view, _closer) = status_board();
        let waiter = tokio::spawn(async move { view.wait_for(|s| s.bytes_in >= 5).await });
        tokio::task::yield_now().await;
        board.read(3);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        board.read(2);
        let status = waiter.await.expect("task").expect("open");
        assert_eq!(status.bytes_in, 5);
    }

    #[tokio::test]
    async fn waiters_give_up_when_the_mock_stops() {
        let (_board, view, closer) = status_board();
        let waiter = tokio::spawn(async move { view.wait_for(|s| s.accepted > 0).await });
        tokio::task::yield_now().await;
        drop(closer);
        assert_eq!(waiter.await.expect("task"), Err(Closed));
    }
}
