//! What the socket side has seen: connections and byte counts, published so that tests
//! (and fault triggers) can wait for "the mock accepted my client" or "the mock read my
//! bytes" instead of sleeping.

use tokio::sync::watch;

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

/// The writing end, shared by whatever serves clients (chardev or agent process).
#[derive(Clone, Debug)]
pub(crate) struct StatusBoard(watch::Sender<ChannelStatus>);

impl StatusBoard {
    pub(crate) fn new() -> (Self, watch::Receiver<ChannelStatus>) {
        let (tx, rx) = watch::channel(ChannelStatus::default());
        (Self(tx), rx)
    }

    /// A client was accepted; returns its number.
    pub(crate) fn connected(&self) -> u64 {
        let mut number = 0;
        self.0.send_modify(|s| {
            s.accepted += 1;
            number = s.accepted;
            s.serving = Some(number);
        });
        number
    }

    pub(crate) fn disconnected(&self) {
        self.0.send_modify(|s| s.serving = None);
    }

    pub(crate) fn serving(&self) -> Option<u64> {
        self.0.borrow().serving
    }

    pub(crate) fn read(&self, n: usize) {
        self.0.send_modify(|s| s.bytes_in += n as u64);
    }

    pub(crate) fn wrote(&self, n: usize) {
        self.0.send_modify(|s| s.bytes_out += n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_numbered_from_one_and_bytes_add_up() {
        let (board, rx) = StatusBoard::new();
        assert_eq!(board.connected(), 1);
        board.read(10);
        board.wrote(4);
        board.disconnected();
        assert_eq!(board.connected(), 2);
        assert_eq!(
            *rx.borrow(),
            ChannelStatus {
                accepted: 2,
                serving: Some(2),
                bytes_in: 10,
                bytes_out: 4
            }
        );
    }
}
