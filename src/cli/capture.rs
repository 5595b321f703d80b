//! `qga-harness capture`: asks a real agent every read-only command and writes a profile that emulates it.

use std::path::PathBuf;
use std::time::Duration;

use crate::guest::capture::{capture, CaptureOptions};

/// Asks a real agent every read-only command and writes a profile that emulates it.
#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// The agent's unix socket (qemu-ga's own, or QEMU's chardev socket).
    #[arg(long)]
    socket: PathBuf,
    /// Write the profile here instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// The longest wait for any one reply, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// A user whose authorized keys to record (guest-ssh-get-authorized-keys); repeat for
    /// more. Default: root and nobody.
    #[arg(long = "ssh-user")]
    ssh_users: Vec<String>,
}

pub fn run(args: CaptureArgs) -> i32 {
    let mut options = CaptureOptions {
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        ..CaptureOptions::default()
    };
    if !args.ssh_users.is_empty() {
        options.ssh_users = args.ssh_users;
    }
    let profile = match capture(&args.socket, &options) {
        Ok(captured) => {
            for warning in &captured.warnings {
                eprintln!("qga-harness capture: warning: {warning}");
            }
            captured.profile
        }
        Err(e) => {
            eprintln!("qga-harness capture: {e}");
            return 2;
        }
    };
    let mut text = profile.to_json_pretty();
    text.push('\n');
    match &args.output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!(
                    "qga-harness capture: cannot write {}: {e}; check the directory exists and is writable",
                    path.display()
                );
                return 2;
            }
        }
        None => print!("{text}"),
    }
    0
}
