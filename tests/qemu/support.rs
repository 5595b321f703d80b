//! Shared set-up of the real-guest tests: the image (cached under the target dir), the
//! static build of this program for the mock inside the guest, and one booted guest per
//! agent kind per test binary where the tests allow sharing.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use qga_harness::qemu::{self, BootOptions, Guest, GuestAgentKind, Image, ImageOptions};

/// The image cache every test shares.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-images")
}

/// The static build of this program (built once; cargo makes it incremental).
pub fn static_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let manifest = env!("CARGO_MANIFEST_DIR");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(manifest)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .args([
                    "build",
                    "--release",
                    "--quiet",
                    "--target",
                    "x86_64-unknown-linux-gnu",
                    "--bin",
                    "qga-harness",
                ])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "the static build failed");
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(manifest).join("target"));
            target.join("x86_64-unknown-linux-gnu/release/qga-harness")
        })
        .clone()
}

/// The image, with the mock (built once per test binary).
pub fn image() -> Image {
    static IMAGE: Mutex<Option<Image>> = Mutex::new(None);
    let mut slot = IMAGE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(image) = &*slot {
        return image.clone();
    }
    let image = qemu::build_image(&ImageOptions {
        cache_dir: cache_dir(),
        kernel_version: None,
        mock_binary: Some(static_binary()),
    })
    .expect("the image builds");
    *slot = Some(image.clone());
    image
}

/// Boots a guest with the given agent.
pub fn boot(agent: GuestAgentKind) -> Guest {
    let mut options = BootOptions::new(image(), agent);
    options.boot_timeout = Duration::from_secs(90);
    qemu::boot(&options).expect("the guest boots")
}
