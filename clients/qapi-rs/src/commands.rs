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
