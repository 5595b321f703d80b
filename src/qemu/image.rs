//! The guest image: `qemu-images/build-image.sh`, compiled into this program so it works
//! from any directory, run on a cache directory the caller names.

use std::path::PathBuf;
use std::process::Command;

use super::QemuError;

/// The builder script (also usable by hand: `qemu-images/build-image.sh -h`).
const BUILD_SCRIPT: &str = include_str!("../../qemu-images/build-image.sh");

/// What to build.
#[derive(Clone, Debug, Default)]
pub struct ImageOptions {
    /// The cache: the image is (re)built here only when an input changed.
    pub cache_dir: PathBuf,
    /// The kernel version (default: the newest in /boot).
    pub kernel_version: Option<String>,
    /// A static build of this program, added as the in-guest mock agent.
    pub mock_binary: Option<PathBuf>,
}

/// A built image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The kernel to boot (the PVH vmlinux when it could be made, else the bzImage).
    pub kernel: PathBuf,
    /// The initramfs with the real qemu-ga.
    pub initrd: PathBuf,
    /// The initramfs that also holds the mock (when a mock binary was given).
    pub initrd_mock: Option<PathBuf>,
}

/// Builds the image, or returns the cached one when nothing changed.
pub fn build_image(options: &ImageOptions) -> Result<Image, QemuError> {
    let dir = &options.cache_dir;
    std::fs::create_dir_all(dir).map_err(|e| {
        QemuError::io(
            format!("cannot create the image cache {}", dir.display()),
            e,
        )
    })?;
    let script = dir.join("build-image.sh");
    let current = std::fs::read_to_string(&script).ok();
    if current.as_deref() != Some(BUILD_SCRIPT) {
        std::fs::write(&script, BUILD_SCRIPT)
            .map_err(|e| QemuError::io(format!("cannot write {}", script.display()), e))?;
    }
    let mut command = Command::new("/bin/sh");
    command.arg(&script);
    if let Some(version) = &options.kernel_version {
        command.arg("-k").arg(version);
    }
    if let Some(binary) = &options.mock_binary {
        command.arg("-a").arg(binary);
    }
    command.arg(dir);
    let output = command.output().map_err(|e| QemuError::Spawn {
        program: "/bin/sh".into(),
        source: e,
    })?;
    if !output.status.success() {
        return Err(QemuError::Image {
            dir: dir.clone(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key).map(PathBuf::from))
    };
    let missing = || QemuError::Image {
        dir: dir.clone(),
        message: format!("the builder printed no kernel or initrd: {text}"),
    };
    Ok(Image {
        kernel: value("kernel=").ok_or_else(missing)?,
        initrd: value("initrd=").ok_or_else(missing)?,
        initrd_mock: value("initrd_mock="),
    })
}

/// How to make the static binary the guest's mock needs.
pub fn static_binary_hint() -> &'static str {
    "RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu --bin qga-harness"
}
