//! Shared set-up of the real-guest tests: the image (cached under the target dir), the
//! static build of this program for the mock inside the guest, and one booted guest per
//! agent kind per test binary where the tests allow sharing.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use qga_harness::internals::qemu::{self, BootOptions, Guest, GuestAgentKind, Image, ImageOptions};

/// The image cache every test shares.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-images")
}

/// The static build of this program, built into `target/static` when missing (cargo
/// makes it incremental); once per test binary.
pub fn static_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| qemu::find_static_binary(None).expect("the static build"))
        .clone()
}

/// The image's directory, built for `agent` (only the mock needs the static build).
pub fn image_dir(agent: GuestAgentKind) -> PathBuf {
    let image = match agent {
        GuestAgentKind::Real => real_image(),
        GuestAgentKind::Mock => image(),
    };
    image.kernel.parent().unwrap().to_owned()
}

/// The image with the real agent only.
pub fn real_image() -> Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            qemu::build_image(&ImageOptions {
                cache_dir: cache_dir(),
                kernel_version: None,
                mock_binary: None,
            })
            .expect("the image builds")
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
    let image = match agent {
        GuestAgentKind::Real => real_image(),
        GuestAgentKind::Mock => image(),
    };
    let mut options = BootOptions::new(image, agent);
    options.boot_timeout = Duration::from_secs(90);
    qemu::boot(&options).expect("the guest boots")
}
