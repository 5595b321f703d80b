//! Shared set-up of the real-guest tests: the image (cached under the target dir), the
//! static build of this program for the mock inside the guest, and one booted guest per
//! agent kind per test binary where the tests allow sharing.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use qga_harness::internals::qemu::{self, BootOptions, Guest, GuestAgentKind, Image, ImageOptions};
use qga_harness::{AgentLife, MockAgent, MockAgentBuilder};

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

/// A mock on the host, on its own runtime, for comparing with what runs in a guest: a fresh
/// socket in a temp dir it owns, shut down cleanly when dropped.
pub struct HostMock {
    mock: Option<MockAgent>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl HostMock {
    pub fn start(builder: MockAgentBuilder) -> HostMock {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let mock = runtime
            .block_on(builder.start_in(dir.path()))
            .expect("start the mock");
        HostMock {
            mock: Some(mock),
            runtime,
            _dir: dir,
        }
    }

    pub fn socket(&self) -> &Path {
        self.mock.as_ref().expect("running").socket_path()
    }

    pub fn life(&self) -> AgentLife {
        self.mock.as_ref().expect("running").life()
    }

    /// Runs `future` to its end on the mock's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

impl Drop for HostMock {
    fn drop(&mut self) {
        if let Some(mock) = self.mock.take() {
            let _ = self.runtime.block_on(mock.shutdown());
        }
    }
}
