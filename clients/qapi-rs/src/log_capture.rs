//! A `log` backend for the crate's own messages.
//!
//! The crate says why its event loop ended only through `log::warn!` ("QAPI stream
//! closed with error ..."), so those lines go to stderr (for transcripts) and the last
//! warning is kept to explain a later "QAPI stream disconnected".

use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

static LAST_WARNING: Mutex<Option<String>> = Mutex::new(None);

struct StderrLog;

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        eprintln!(
            "qapi-session: {} {}: {message}",
            record.level(),
            record.target()
        );
        if record.level() <= Level::Warn {
            if let Ok(mut last) = LAST_WARNING.lock() {
                *last = Some(message);
            }
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLog = StderrLog;

/// Routes the crate's log messages to stderr; call once at start.
pub(crate) fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}

/// The last warning or error the crate logged, if any.
pub(crate) fn last_warning() -> Option<String> {
    LAST_WARNING.lock().ok().and_then(|last| last.clone())
}
