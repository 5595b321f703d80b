//! The guest image: `qemu-images/build-image.sh`, compiled into this program so it works
//! from any directory, run on a cache directory the caller names.

use std::path::{Path, PathBuf};
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

/// Where `cargo build` puts the static build, under the source tree's `target/`: a
/// directory of its own, so the normal build is not invalidated by other flags.
const STATIC_TARGET_DIR: &str = "target/static";
const STATIC_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// A static build of this program for the guest's mock: `given`, else
/// `$QGA_HARNESS_STATIC_BINARY`, else this program when it is statically linked, else one
/// built with cargo into `target/static` of the source tree this program was built from
/// (when that tree is still there and cargo runs). Blocking; a build takes minutes.
pub fn find_static_binary(given: Option<&Path>) -> Result<PathBuf, QemuError> {
    let explicit = given
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("QGA_HARNESS_STATIC_BINARY").map(PathBuf::from));
    if let Some(path) = explicit {
        return match is_static(&path) {
            Ok(true) => Ok(path),
            Ok(false) => Err(QemuError::Image {
                dir: path.clone(),
                message: format!(
                    "{} is dynamically linked; build it with {}",
                    path.display(),
                    static_binary_hint()
                ),
            }),
            Err(e) => Err(QemuError::io(format!("cannot read {}", path.display()), e)),
        };
    }
    if let Ok(me) = std::env::current_exe() {
        if is_static(&me).unwrap_or(false) {
            return Ok(me);
        }
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !source.join("Cargo.toml").is_file() {
        return Err(QemuError::Image {
            dir: source.to_owned(),
            message: format!(
                "no static build of qga-harness: make one with {} and pass it with --mock-binary",
                static_binary_hint()
            ),
        });
    }
    let binary = source
        .join(STATIC_TARGET_DIR)
        .join(STATIC_TRIPLE)
        .join("release")
        .join("qga-harness");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(source)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--release",
            "--bin",
            "qga-harness",
            "--target",
            STATIC_TRIPLE,
        ])
        .arg("--target-dir")
        .arg(STATIC_TARGET_DIR)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| QemuError::Spawn {
            program: "cargo".into(),
            source: e,
        })?;
    if !status.success() || !binary.is_file() {
        return Err(QemuError::Image {
            dir: source.to_owned(),
            message: format!(
                "the static build failed ({status}); try {}",
                static_binary_hint()
            ),
        });
    }
    Ok(binary)
}

/// True when the ELF file has no program interpreter (statically linked).
fn is_static(path: &Path) -> std::io::Result<bool> {
    let bytes = std::fs::read(path)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 64-bit ELF file");
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Err(bad());
    }
    let word = |at: usize, n: usize| -> Option<u64> {
        let slice = bytes.get(at..at + n)?;
        let mut value = 0u64;
        for (i, b) in slice.iter().enumerate() {
            value |= u64::from(*b) << (8 * i);
        }
        Some(value)
    };
    let phoff = word(0x20, 8).ok_or_else(bad)? as usize;
    let phentsize = word(0x36, 2).ok_or_else(bad)? as usize;
    let phnum = word(0x38, 2).ok_or_else(bad)? as usize;
    for i in 0..phnum {
        // PT_INTERP = 3
        if word(phoff + i * phentsize, 4).ok_or_else(bad)? == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}
