//! From a step's command name and arguments to one of the crate's generated command
//! types, and from the crate's results back to the session contract.
//!
//! The crate's API is typed: `execute` takes a `qapi::qga::*` struct whose name is a
//! compile-time constant and returns that command's typed result. A real user writes
//! `service.execute(qapi::qga::guest_info {})`, so every step goes through the type of
//! its command: the arguments are deserialised into it and the result is serialised
//! back. A step that type cannot carry unchanged is `Unsupported`, not silently altered.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use qapi::qga;
use qapi::ExecuteError;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use tokio::task::JoinError;

use crate::{log_capture, Failure, Service};

type Running = Pin<Box<dyn Future<Output = Result<Value, Failure>> + Send>>;

/// A step turned into a typed call, ready to run on a service.
pub(crate) struct Call {
    start: Box<dyn FnOnce(Arc<Service>, Duration) -> Running + Send>,
}

impl Call {
    /// The typed call for `name`, or `Unsupported` when the crate cannot express it.
    pub(crate) fn parse(name: &str, arguments: &Value) -> Result<Call, Failure> {
        macro_rules! typed {
            ($($command:ident),* $(,)?) => {
                match name {
                    $(n if n == <qga::$command as qapi::Command>::NAME =>
                        Call::typed::<qga::$command>(arguments),)*
                    _ => Err(Failure::new(
                        "Unsupported",
                        format!("the qapi crate has no type for the command {name}"),
                    )),
                }
            };
        }
        typed!(
            guest_sync_delimited,
            guest_sync,
            guest_ping,
            guest_get_time,
            guest_set_time,
            guest_info,
            guest_shutdown,
            guest_file_open,
            guest_file_close,
            guest_file_read,
            guest_file_write,
            guest_file_seek,
            guest_file_flush,
            guest_fsfreeze_status,
            guest_fsfreeze_freeze,
            guest_fsfreeze_freeze_list,
            guest_fsfreeze_thaw,
            guest_fstrim,
            guest_suspend_disk,
            guest_suspend_ram,
            guest_suspend_hybrid,
            guest_network_get_interfaces,
            guest_get_vcpus,
            guest_set_vcpus,
            guest_get_disks,
            guest_get_fsinfo,
            guest_set_user_password,
            guest_get_memory_blocks,
            guest_set_memory_blocks,
            guest_get_memory_block_info,
            guest_exec_status,
            guest_exec,
            guest_get_host_name,
            guest_get_users,
            guest_get_timezone,
            guest_get_osinfo,
            guest_get_devices,
            guest_ssh_get_authorized_keys,
            guest_ssh_add_authorized_keys,
            guest_ssh_remove_authorized_keys,
            guest_get_diskstats,
            guest_get_cpustats,
            guest_network_get_route,
        )
    }

    fn typed<C>(arguments: &Value) -> Result<Call, Failure>
    where
        C: qga::QgaCommand + DeserializeOwned + Serialize + 'static,
        C::Ok: Serialize + Send,
        crate::Writer: futures_sink::Sink<qapi::Execute<C, u32>, Error = io::Error>,
    {
        let command: C = serde_json::from_value(arguments.clone()).map_err(|e| {
            Failure::new(
                "Unsupported",
                format!(
                    "the qapi crate's type for {} rejects these arguments: {e}",
                    C::NAME
                ),
            )
        })?;
        // The type drops unknown members and may normalise values: what it would send
        // must be what the step asked for.
        match serde_json::to_value(&command) {
            Ok(ref sent) if sent == arguments => {}
            Ok(sent) => {
                return Err(Failure::new(
                    "Unsupported",
                    format!(
                        "the qapi crate's type for {} would send {sent} instead of {arguments}",
                        C::NAME
                    ),
                ))
            }
            Err(e) => {
                return Err(Failure::new(
                    "Unsupported",
                    format!(
                        "the qapi crate's type for {} does not serialise: {e}",
                        C::NAME
                    ),
                ))
            }
        }
        Ok(Call {
            start: Box::new(move |service, timeout| Box::pin(execute(service, command, timeout))),
        })
    }

    pub(crate) async fn run(
        self,
        service: Arc<Service>,
        timeout: Duration,
    ) -> Result<Value, Failure> {
        (self.start)(service, timeout).await
    }
}

/// One `execute`, under `tokio::time::timeout`, in its own task so that a panic inside
/// the crate ends that task and is reported instead of ending the session.
async fn execute<C>(service: Arc<Service>, command: C, timeout: Duration) -> Result<Value, Failure>
where
    C: qga::QgaCommand + 'static,
    C::Ok: Serialize + Send,
    crate::Writer: futures_sink::Sink<qapi::Execute<C, u32>, Error = io::Error>,
{
    let task =
        tokio::spawn(async move { tokio::time::timeout(timeout, service.execute(command)).await });
    match task.await {
        Ok(Ok(Ok(value))) => serde_json::to_value(value).map_err(|e| {
            Failure::new(
                "Protocol",
                format!("{}: result does not serialise: {e}", C::NAME),
            )
        }),
        Ok(Ok(Err(e))) => Err(execute_failure(C::NAME, e)),
        Ok(Err(_elapsed)) => Err(Failure::new(
            "Timeout",
            format!("{}: no reply within {} ms", C::NAME, timeout.as_millis()),
        )),
        Err(join) => Err(join_failure(C::NAME, join)),
    }
}

/// The crate's error, in contract terms: an agent error keeps its class; a stream that
/// is gone is `Disconnected` (with the reason the crate logged when its event loop
/// ended); a reply the crate could not decode is `Protocol`.
pub(crate) fn execute_failure(name: &str, error: ExecuteError) -> Failure {
    match error {
        ExecuteError::Qapi(e) => Failure::new(&format!("{:?}", e.class), e.desc),
        ExecuteError::Io(e) => {
            let class = match e.kind() {
                io::ErrorKind::InvalidData => "Protocol",
                _ => "Disconnected",
            };
            let mut desc = format!("{name}: {e}");
            if class == "Disconnected" {
                if let Some(reason) = log_capture::last_warning() {
                    desc.push_str(&format!(" ({reason})"));
                }
            }
            Failure::new(class, desc)
        }
    }
}

/// A task that did not finish: the crate panicked inside `execute`.
pub(crate) fn join_failure(name: &str, join: JoinError) -> Failure {
    if join.is_panic() {
        let payload = join.into_panic();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_string());
        Failure::new(
            "Protocol",
            format!("{name}: the qapi crate panicked: {message}"),
        )
    } else {
        Failure::new("Protocol", format!("{name}: the call's task was cancelled"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class_of(result: Result<Call, Failure>) -> Option<String> {
        result.err().map(|f| f.class)
    }

    /// Steps a catalogue sends, which the crate's types carry unchanged.
    #[test]
    fn typed_commands_carry_their_arguments_unchanged() {
        for (name, arguments) in [
            ("guest-ping", json!({})),
            ("guest-sync", json!({"id": 4294967295_i64})),
            ("guest-sync-delimited", json!({"id": -1})),
            ("guest-get-host-name", json!({})),
            ("guest-info", json!({})),
            ("guest-shutdown", json!({})),
            ("guest-shutdown", json!({"mode": "reboot"})),
            ("guest-suspend-ram", json!({})),
            (
                "guest-exec",
                json!({"path": "/bin/sh", "arg": ["-c", "echo hi"], "capture-output": true}),
            ),
            ("guest-exec-status", json!({"pid": 1234})),
            ("guest-file-open", json!({"path": "/tmp/x", "mode": "w+"})),
            (
                "guest-file-write",
                json!({"handle": 1000, "buf-b64": "aGVsbG8="}),
            ),
            ("guest-file-read", json!({"handle": 1000, "count": 4096})),
            (
                "guest-file-seek",
                json!({"handle": 1000, "offset": 0, "whence": "set"}),
            ),
            ("guest-file-close", json!({"handle": 1000})),
            ("guest-fsfreeze-freeze", json!({})),
            ("guest-fsfreeze-freeze-list", json!({"mountpoints": ["/"]})),
            ("guest-fsfreeze-thaw", json!({})),
            ("guest-set-time", json!({})),
            ("guest-set-time", json!({"time": 1700000000000000000_i64})),
        ] {
            assert_eq!(
                class_of(Call::parse(name, &arguments)),
                None,
                "{name} {arguments}"
            );
        }
    }

    /// What the typed API cannot say is reported, never sent altered.
    #[test]
    fn steps_the_types_cannot_carry_are_unsupported() {
        for (name, arguments) in [
            // No such command in the crate's schema.
            ("guest-frobnicate", json!({})),
            // A member the type does not have would be dropped.
            ("guest-ping", json!({"x": 1})),
            // A missing mandatory member, and a member of the wrong type.
            ("guest-sync", json!({})),
            ("guest-sync", json!({"id": "a"})),
            // A value the type cannot hold (qemu-ga takes any int64).
            ("guest-sync", json!({"id": 9223372036854775808_u64})),
            // Not base64.
            ("guest-file-write", json!({"handle": 1000, "buf-b64": "!!"})),
        ] {
            assert_eq!(
                class_of(Call::parse(name, &arguments)).as_deref(),
                Some("Unsupported"),
                "{name} {arguments}"
            );
        }
    }

    #[test]
    fn the_crates_errors_map_to_the_contracts_classes() {
        let agent = ExecuteError::Qapi(qapi::Error {
            class: qapi::ErrorClass::CommandNotFound,
            desc: "Command guest-exec has been disabled".into(),
            id: None,
        });
        let f = execute_failure("guest-exec", agent);
        assert_eq!(
            (f.class.as_str(), f.desc.as_str()),
            ("CommandNotFound", "Command guest-exec has been disabled")
        );
        let gone = io::Error::new(io::ErrorKind::UnexpectedEof, "QAPI stream disconnected");
        assert_eq!(
            execute_failure("guest-ping", gone.into()).class,
            "Disconnected"
        );
        let undecodable = io::Error::new(io::ErrorKind::InvalidData, "invalid type");
        assert_eq!(
            execute_failure("guest-ping", undecodable.into()).class,
            "Protocol"
        );
        let reset = io::Error::new(io::ErrorKind::BrokenPipe, "broken pipe");
        assert_eq!(
            execute_failure("guest-ping", reset.into()).class,
            "Disconnected"
        );
    }
}
