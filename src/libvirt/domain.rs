//! The transient TCG domain: direct kernel boot of the image from `qemu-images/`, the agent
//! channel connecting to the harness's relay, the control port on a socket QEMU serves.
//!
//! Every domain this process creates is registered; [`Domain`]'s drop destroys it, and
//! [`destroy_all_owned`] destroys whatever is still registered (a signal handler's last
//! act). Domains left by a process that was killed outright (SIGKILL) carry its pid in
//! their name, and [`destroy_stale_domains`] removes them on the next run.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{virsh, LibvirtError};

/// Every domain the harness creates is named `qgah-PID-N`.
pub const DOMAIN_PREFIX: &str = "qgah-";

/// The domains this process created and has not destroyed yet.
static OWNED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A transient domain, destroyed when dropped.
#[derive(Debug)]
pub struct Domain {
    name: String,
}

/// The files a domain is made of.
#[derive(Debug)]
pub struct DomainSpec<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Where QEMU's agent chardev connects (the relay listens there).
    pub agent_socket: &'a Path,
    /// Where QEMU serves the control port.
    pub control_socket: &'a Path,
    /// The serial console's file.
    pub console: &'a Path,
    pub kernel_args: &'a str,
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn domain_xml(name: &str, spec: &DomainSpec<'_>) -> String {
    let p = |path: &Path| xml_escape(&path.to_string_lossy());
    // The template of the reference notes (libvirt 9.0, Debian 12): `<acpi/>` or libvirt
    // adds -no-acpi; on_reboot=restart for reboot --mode agent; no USB, no balloon.
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 {args}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <channel type='unix'>
      <source mode='connect' path='{agent}'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <channel type='unix'>
      <source mode='bind' path='{control}'/>
      <target type='virtio' name='{control_port}'/>
    </channel>
    <memballoon model='none'/>
  </devices>
</domain>
",
        kernel = p(spec.kernel),
        initrd = p(spec.initrd),
        args = xml_escape(spec.kernel_args),
        console = p(spec.console),
        agent = p(spec.agent_socket),
        control = p(spec.control_socket),
        control_port = crate::qemu::CONTROL_PORT,
    )
}

impl Domain {
    /// Creates the transient domain `name` (it starts at once).
    pub fn create(name: &str, spec: &DomainSpec<'_>, dir: &Path) -> Result<Domain, LibvirtError> {
        let xml_path: PathBuf = dir.join(format!("{name}.xml"));
        std::fs::write(&xml_path, domain_xml(name, spec))
            .map_err(|e| LibvirtError::io(format!("cannot write {}", xml_path.display()), e))?;
        // Registered first: a signal between create and registration must not leave it.
        lock().push(name.to_owned());
        match virsh(&["create", &xml_path.to_string_lossy()]) {
            Ok(_) => Ok(Domain {
                name: name.to_owned(),
            }),
            Err(e) => {
                lock().retain(|n| n != name);
                Err(e)
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<String>> {
    OWNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn destroy(name: &str) {
    // A domain that is already gone is not an error here.
    let _ = virsh(&["destroy", name]);
}

impl Drop for Domain {
    fn drop(&mut self) {
        destroy(&self.name);
        lock().retain(|n| n != &self.name);
    }
}

/// Destroys every domain this process created and still owns.
pub fn destroy_all_owned() {
    let names: Vec<String> = lock().drain(..).collect();
    for name in names {
        destroy(&name);
    }
}

/// Destroys domains named `qgah-PID-...` whose process is gone (a run killed outright).
pub fn destroy_stale_domains() {
    let Ok(list) = virsh(&["list", "--name"]) else {
        return;
    };
    for name in list.lines().map(str::trim) {
        let Some(rest) = name.strip_prefix(DOMAIN_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) == 0 };
        if !alive {
            destroy(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_connects_its_agent_channel_to_the_relay() {
        let xml = domain_xml(
            "qgah-1-1",
            &DomainSpec {
                kernel: Path::new("/k"),
                initrd: Path::new("/i"),
                agent_socket: Path::new("/r/agent'.sock"),
                control_socket: Path::new("/r/control.sock"),
                console: Path::new("/r/console"),
                kernel_args: "qgah.agent=real",
            },
        );
        assert!(xml.contains("<source mode='connect' path='/r/agent&apos;.sock'/>"));
        assert!(xml.contains("<source mode='bind' path='/r/control.sock'/>"));
        assert!(xml.contains("name='org.qga-harness.control.0'"));
        assert!(xml.contains("qgah.agent=real</cmdline>"));
    }
}
