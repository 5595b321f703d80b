//! `qga-harness run --target qemu` as a program: interrupted, and in bad environments, it
//! exits 2 with a clear message and leaves no QEMU and no socket behind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use qga_harness::internals::qemu::GuestAgentKind;

use crate::support;

fn harness(tmp: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qga-harness"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // Every socket and temp dir of the run goes here, so leftovers can be found.
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn run_args(image_dir: &Path) -> Vec<String> {
    [
        "run",
        "--target",
        "qemu",
        "--guest-agent",
        "real",
        "--image-dir",
        &image_dir.display().to_string(),
        "--filter",
        "commands.*",
        "--filter",
        "noreply.*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Stderr lines as they come, on a channel.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!("no line with '{needle}' within {within:?}; saw {seen:?}"),
        }
    }
}

fn wait_with_bound(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the harness did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No process mentions `tmp` on its command line (QEMU's sockets live there), and no socket
/// file is left under it.
fn assert_nothing_left(tmp: &Path) {
    let needle = tmp.display().to_string();
    let mut running = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("qemu-system") && cmdline.contains(&needle) {
                running.push(cmdline);
            }
        }
    }
    assert!(running.is_empty(), "QEMU left running: {running:?}");
    let mut sockets = Vec::new();
    let mut dirs = vec![tmp.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(entry.path());
            } else {
                use std::os::unix::fs::FileTypeExt;
                if kind.is_socket() {
                    sockets.push(entry.path());
                }
            }
        }
    }
    assert!(sockets.is_empty(), "sockets left behind: {sockets:?}");
}

fn interrupt(child: &Child) {
    // SAFETY: a plain kill(2) of our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
}

#[test]
fn ctrl_c_while_cases_run_leaves_no_qemu_and_no_socket() {
    let image_dir = support::image_dir(GuestAgentKind::Real);
    let tmp = tempfile::tempdir().unwrap();
    let mut child = harness(tmp.path())
        .args(run_args(&image_dir))
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    wait_for_line(&lines, "the guest is ready", Duration::from_secs(120));
    interrupt(&child);
    let status = wait_with_bound(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "an interrupted run exits 2");
    assert_nothing_left(tmp.path());
}

#[test]
fn ctrl_c_while_the_guest_boots_leaves_no_qemu_and_no_socket() {
    let image_dir = support::image_dir(GuestAgentKind::Real);
    let tmp = tempfile::tempdir().unwrap();
    let mut child = harness(tmp.path())
        .args(run_args(&image_dir))
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    wait_for_line(&lines, "booting the guest", Duration::from_secs(120));
    interrupt(&child);
    let status = wait_with_bound(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2));
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("interrupted")),
        "the message says it was interrupted: {rest:?}"
    );
    assert_nothing_left(tmp.path());
}

/// Runs the harness to its end and returns its stderr; it must exit 2 within `within`.
fn expect_exit_2(command: &mut Command, within: Duration) -> String {
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let lines = stderr_lines(&mut child);
    let status = wait_with_bound(&mut child, within);
    assert_eq!(status.code(), Some(2), "exit status");
    assert!(started.elapsed() < within);
    let mut text = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        text.push(line);
    }
    text.join("\n")
}

#[test]
fn no_qemu_system_is_a_clear_error() {
    let image_dir = support::image_dir(GuestAgentKind::Real);
    let tmp = tempfile::tempdir().unwrap();
    let stderr = expect_exit_2(
        harness(tmp.path())
            .args(run_args(&image_dir))
            .env("QGA_HARNESS_QEMU", "/nonexistent/qemu-system-x86_64"),
        Duration::from_secs(60),
    );
    assert!(
        stderr.contains("/nonexistent/qemu-system-x86_64 was not found")
            && stderr.contains("install qemu-system-x86"),
        "{stderr}"
    );
    assert_nothing_left(tmp.path());
}

#[test]
fn no_kernel_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let image_dir = tmp.path().join("images");
    let mut args = run_args(&image_dir);
    args.extend(["--kernel-version".into(), "0.0.0-none".into()]);
    let stderr = expect_exit_2(harness(tmp.path()).args(args), Duration::from_secs(60));
    assert!(
        stderr.contains("/boot/vmlinuz-0.0.0-none is missing") && stderr.contains("linux-image"),
        "{stderr}"
    );
    assert_nothing_left(tmp.path());
}

/// A copy of the cached image whose initramfs is replaced by `initrd` (the builder sees
/// unchanged inputs and keeps it).
fn doctored_image(tmp: &Path, initrd: &[u8]) -> std::path::PathBuf {
    let good = support::image_dir(GuestAgentKind::Real);
    let bad = tmp.join("images");
    std::fs::create_dir_all(&bad).unwrap();
    for entry in std::fs::read_dir(&good).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".inputs") && !name.contains("-mock") {
            std::fs::copy(entry.path(), bad.join(&name)).unwrap();
            let initrd_name = name.replace(".inputs", ".cpio.gz");
            std::fs::write(bad.join(initrd_name), initrd).unwrap();
        } else if name.starts_with("vmlinux-") {
            std::os::unix::fs::symlink(entry.path(), bad.join(&name)).unwrap();
        }
    }
    bad
}

#[test]
fn a_broken_image_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let image_dir = doctored_image(tmp.path(), b"this is not an initramfs");
    let stderr = expect_exit_2(
        harness(tmp.path()).args(run_args(&image_dir)),
        Duration::from_secs(90),
    );
    assert!(
        stderr.contains("QEMU exited during boot") || stderr.contains("did not answer"),
        "{stderr}"
    );
    assert_nothing_left(tmp.path());
}

#[test]
fn a_guest_that_never_answers_is_an_error_within_the_boot_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    // A valid initramfs whose /init never reports ready.
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::write(
        root.join("init"),
        "#!/bin/sh\nexec /bin/busybox sleep 3600\n",
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let archive = Command::new("sh")
        .arg("-c")
        .arg("find . -mindepth 1 | cpio --quiet -o -H newc -R 0:0 | gzip -1n")
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(archive.status.success());
    let image_dir = doctored_image(tmp.path(), &archive.stdout);
    let mut args = run_args(&image_dir);
    args.extend(["--boot-timeout".into(), "20".into()]);
    let started = Instant::now();
    let stderr = expect_exit_2(harness(tmp.path()).args(args), Duration::from_secs(60));
    assert!(stderr.contains("did not answer within 20 s"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(40));
    assert_nothing_left(tmp.path());
}
