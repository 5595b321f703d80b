//! The simulated file system and guest-file-* handles (QEMU qga/commands-posix.c,
//! qga/commands.c, qga/main.c `ga_get_fd_handle`).
//!
//! Files live in memory, bounded by a capacity. A handle is a stdio stream as qemu-ga
//! holds one: writes go through a 4 KiB buffer with glibc's rules, so another handle
//! sees them only after a flush, a seek, a read on the same handle, a close, or once a
//! write overflows the buffer. Reads see the file as it is (the read-ahead buffer of
//! glibc is not modelled).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// glibc's stdio buffer size for files (st_blksize of ext4).
const STDIO_BUFFER: usize = 4096;

/// The errno values the simulation produces, with glibc's strerror texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Errno {
    NoEnt,
    NotDir,
    IsDir,
    NameTooLong,
    NoSpc,
    BadF,
    Inval,
    Acces,
}

impl Errno {
    pub(crate) fn text(self) -> &'static str {
        match self {
            Errno::NoEnt => "No such file or directory",
            Errno::NotDir => "Not a directory",
            Errno::IsDir => "Is a directory",
            Errno::NameTooLong => "File name too long",
            Errno::NoSpc => "No space left on device",
            Errno::BadF => "Bad file descriptor",
            Errno::Inval => "Invalid argument",
            Errno::Acces => "Permission denied",
        }
    }
}

/// A character device of /dev.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Device {
    Null,
    Zero,
    Random,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    Dir,
    File(Vec<u8>),
    Device(Device),
}

/// A resolved path: normalized, absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub path: String,
    /// The path ended in a slash, so it must name a directory.
    pub trailing_slash: bool,
}

/// The files and directories of the guest.
///
/// Copy-on-write: a fleet's guests start from one shared tree (cloning a file system
/// clones a pointer), and a guest gets a copy of its own at its first change.
#[derive(Clone, Debug)]
pub(crate) struct FileSystem {
    nodes: Arc<BTreeMap<String, Node>>,
    used: u64,
    capacity: u64,
}

impl FileSystem {
    pub(crate) fn new(capacity: u64) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_owned(), Node::Dir);
        nodes.insert("/dev".to_owned(), Node::Dir);
        for (name, dev) in [
            ("null", Device::Null),
            ("zero", Device::Zero),
            ("random", Device::Random),
            ("urandom", Device::Random),
        ] {
            nodes.insert(format!("/dev/{name}"), Node::Device(dev));
        }
        FileSystem {
            nodes: Arc::new(nodes),
            used: 0,
            capacity,
        }
    }

    /// The tree, to change: this guest's own copy from now on.
    fn nodes_mut(&mut self) -> &mut BTreeMap<String, Node> {
        Arc::make_mut(&mut self.nodes)
    }

    /// Creates a directory and its parents (for the profile's initial tree).
    pub(crate) fn add_dir_all(&mut self, path: &str) {
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            self.nodes_mut().entry(prefix.clone()).or_insert(Node::Dir);
        }
    }

    /// Creates a file with its parents, replacing what was there (for the initial tree).
    pub(crate) fn add_file(&mut self, path: &str, content: Vec<u8>) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.add_dir_all(parent);
        }
        self.used = self.used.saturating_add(content.len() as u64);
        if let Some(Node::File(old)) = self
            .nodes_mut()
            .insert(path.to_owned(), Node::File(content))
        {
            self.used = self.used.saturating_sub(old.len() as u64);
        }
    }

    pub(crate) fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// The content of a regular file.
    pub(crate) fn read_file(&self, path: &str) -> Result<&[u8], Errno> {
        match self.nodes.get(path) {
            Some(Node::File(data)) => Ok(data),
            Some(Node::Dir) => Err(Errno::IsDir),
            Some(Node::Device(_)) => Ok(&[]),
            None => Err(Errno::NoEnt),
        }
    }

    /// Replaces a regular file's content (creating it), within the capacity.
    pub(crate) fn write_file(&mut self, path: &str, content: Vec<u8>) -> Result<(), Errno> {
        let old = match self.nodes.get(path) {
            Some(Node::File(data)) => data.len() as u64,
            Some(Node::Dir) => return Err(Errno::IsDir),
            Some(Node::Device(_)) => return Ok(()),
            None => 0,
        };
        let used = self.used - old;
        if used.saturating_add(content.len() as u64) > self.capacity {
            return Err(Errno::NoSpc);
        }
        self.used = used + content.len() as u64;
        self.nodes_mut()
            .insert(path.to_owned(), Node::File(content));
        Ok(())
    }

    pub(crate) fn make_dir(&mut self, path: &str) -> Result<(), Errno> {
        match self.nodes.get(path) {
            Some(Node::Dir) => Ok(()),
            Some(_) => Err(Errno::NotDir),
            None => {
                self.nodes_mut().insert(path.to_owned(), Node::Dir);
                Ok(())
            }
        }
    }

    /// Resolves a path as the kernel would, component by component: every component
    /// before the last must be an existing directory. Relative paths start at `/`,
    /// qemu-ga's working directory.
    pub(crate) fn resolve(&self, path: &str) -> Result<Resolved, Errno> {
        if path.is_empty() {
            return Err(Errno::NoEnt);
        }
        if path.len() >= 4096 {
            return Err(Errno::NameTooLong);
        }
        let mut parts: Vec<&str> = Vec::new();
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for (i, comp) in components.iter().enumerate() {
            if comp.len() > 255 {
                return Err(Errno::NameTooLong);
            }
            let last = i + 1 == components.len();
            match *comp {
                "." => {}
                ".." => {
                    parts.pop();
                }
                name => {
                    parts.push(name);
                    if !last {
                        match self.nodes.get(&join(&parts)) {
                            Some(Node::Dir) => {}
                            Some(_) => return Err(Errno::NotDir),
                            None => return Err(Errno::NoEnt),
                        }
                    }
                }
            }
        }
        Ok(Resolved {
            path: join(&parts),
            trailing_slash: path.ends_with('/') && !parts.is_empty(),
        })
    }

    /// Opens `path` with an fopen mode, as qemu-ga's `safe_open_or_create` does.
    pub(crate) fn open(&mut self, path: &str, mode: &str) -> Result<OpenFile, String> {
        let flags =
            OpenFlags::parse(mode).ok_or_else(|| format!("invalid file open mode '{mode}'"))?;
        let fail = |e: Errno| {
            format!(
                "failed to open file '{path}' (mode: '{mode}'): {}",
                e.text()
            )
        };
        let resolved = self.resolve(path).map_err(fail)?;
        let target = resolved.path.clone();
        match self.nodes.get(&target) {
            None if flags.create => {
                if resolved.trailing_slash {
                    return Err(fail(Errno::IsDir));
                }
                self.nodes_mut()
                    .insert(target.clone(), Node::File(Vec::new()));
            }
            None => return Err(fail(Errno::NoEnt)),
            Some(Node::Dir) if flags.write => return Err(fail(Errno::IsDir)),
            Some(Node::File(_)) | Some(Node::Device(_)) if resolved.trailing_slash => {
                return Err(fail(Errno::NotDir))
            }
            Some(Node::File(_)) if flags.truncate => {
                if let Some(Node::File(data)) = Arc::make_mut(&mut self.nodes).get_mut(&target) {
                    self.used = self.used.saturating_sub(data.len() as u64);
                    data.clear();
                }
            }
            Some(_) => {}
        }
        // fdopen in write-only append mode starts at the end; "a+" reads from the start.
        let pos = if flags.append && !flags.read {
            self.len(&target)
        } else {
            0
        };
        Ok(OpenFile {
            path: target,
            flags,
            pos,
            state: RwState::New,
            pending: Vec::new(),
            pending_start: 0,
            buffer_room: false,
        })
    }

    fn len(&self, path: &str) -> u64 {
        match self.nodes.get(path) {
            Some(Node::File(data)) => data.len() as u64,
            _ => 0,
        }
    }

    /// Writes `data` at `offset` (or at the end, for append), zero-filling a gap.
    /// Capacity was reserved by the caller for `data.len()` bytes.
    fn apply(&mut self, path: &str, offset: Option<u64>, data: &[u8], reserved: u64) -> u64 {
        self.used = self.used.saturating_sub(reserved);
        let Some(Node::File(file)) = Arc::make_mut(&mut self.nodes).get_mut(path) else {
            return 0;
        };
        let at = offset.unwrap_or(file.len() as u64);
        // The caller checked the capacity, so `at + len` fits in memory.
        let at = usize::try_from(at).unwrap_or(usize::MAX);
        let end = at.saturating_add(data.len());
        let old = file.len();
        if end > file.len() {
            file.resize(end, 0);
        }
        file[at..end].copy_from_slice(data);
        self.used = self.used.saturating_add((file.len() - old) as u64);
        end as u64
    }
}

fn join(parts: &[&str]) -> String {
    if parts.is_empty() {
        "/".to_owned()
    } else {
        parts.iter().fold(String::new(), |mut s, p| {
            s.push('/');
            s.push_str(p);
            s
        })
    }
}

/// The access an fopen mode asks for (QEMU's `guest_file_open_modes` table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OpenFlags {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub truncate: bool,
    pub append: bool,
}

impl OpenFlags {
    fn parse(mode: &str) -> Option<OpenFlags> {
        let (read, write, create, truncate, append) = match mode {
            "r" | "rb" => (true, false, false, false, false),
            "w" | "wb" => (false, true, true, true, false),
            "a" | "ab" => (false, true, true, false, true),
            "r+" | "rb+" | "r+b" => (true, true, false, false, false),
            "w+" | "wb+" | "w+b" => (true, true, true, true, false),
            "a+" | "ab+" | "a+b" => (true, true, true, false, true),
            _ => return None,
        };
        Some(OpenFlags {
            read,
            write,
            create,
            truncate,
            append,
        })
    }
}

/// Which way the stream was last used (qemu-ga's `RwState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RwState {
    New,
    Reading,
    Writing,
}

/// An open stdio stream on a simulated file.
#[derive(Debug)]
pub(crate) struct OpenFile {
    path: String,
    flags: OpenFlags,
    /// The stream position (what ftell reports once the buffer is flushed).
    pos: u64,
    state: RwState,
    /// Written bytes still in the stdio buffer.
    pending: Vec<u8>,
    /// Where `pending` goes in the file (ignored in append mode).
    pending_start: u64,
    /// glibc leaves no room in a fresh, just-seeked or just-read stream's buffer, so the
    /// first write goes mostly straight to the file; after an overflow or a flush the
    /// whole buffer is available.
    buffer_room: bool,
}

/// What a read returned.
pub(crate) struct ReadResult {
    pub data: Vec<u8>,
    pub eof: bool,
}

impl OpenFile {
    fn device(&self, fs: &FileSystem) -> Option<Device> {
        match fs.node(&self.path) {
            Some(Node::Device(d)) => Some(*d),
            _ => None,
        }
    }

    /// Writes the stdio buffer to the file (fflush).
    fn flush_buffer(&mut self, fs: &mut FileSystem) {
        if self.pending.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.pending);
        let offset = (!self.flags.append).then_some(self.pending_start);
        let end = fs.apply(&self.path, offset, &data, data.len() as u64);
        if self.flags.append {
            self.pos = end;
        }
    }

    /// guest-file-flush.
    pub(crate) fn flush(&mut self, fs: &mut FileSystem) {
        self.flush_buffer(fs);
        self.state = RwState::New;
    }

    /// guest-file-close: fclose flushes.
    pub(crate) fn close(mut self, fs: &mut FileSystem) {
        self.flush_buffer(fs);
    }

    /// Drops the buffer without writing it: the agent process died.
    pub(crate) fn abandon(self, fs: &mut FileSystem) {
        fs.used = fs.used.saturating_sub(self.pending.len() as u64);
    }

    /// guest-file-read's stream part (`guest_file_read_unsafe`).
    pub(crate) fn read(&mut self, fs: &mut FileSystem, count: usize) -> Result<ReadResult, String> {
        if self.state == RwState::Writing {
            self.flush_buffer(fs);
            self.state = RwState::New;
        }
        let fail = |e: Errno| format!("failed to read file: {}", e.text());
        if !self.flags.read {
            return Err(fail(Errno::BadF));
        }
        let data = match fs.node(&self.path) {
            Some(Node::Dir) => return Err(fail(Errno::IsDir)),
            None => Vec::new(),
            Some(Node::Device(Device::Null)) => Vec::new(),
            Some(Node::Device(Device::Zero)) => vec![0; count],
            Some(Node::Device(Device::Random)) => {
                let mut buf = vec![0; count];
                rand::Rng::fill(&mut rand::rng(), &mut buf[..]);
                buf
            }
            Some(Node::File(content)) => {
                let start = usize::try_from(self.pos)
                    .unwrap_or(usize::MAX)
                    .min(content.len());
                let end = start.saturating_add(count).min(content.len());
                content[start..end].to_vec()
            }
        };
        if self.device(fs).is_none() {
            self.pos += data.len() as u64;
        }
        self.state = RwState::Reading;
        self.buffer_room = false;
        // fread stops short only at end of file, which sets the EOF flag.
        let eof = data.len() < count;
        Ok(ReadResult { data, eof })
    }

    /// Switching from reading to writing: qemu-ga does `fseek(fh, 0, SEEK_CUR)`.
    pub(crate) fn prepare_write(&mut self, fs: &mut FileSystem) {
        if self.state == RwState::Reading {
            self.flush_buffer(fs);
            self.buffer_room = false;
            self.state = RwState::New;
        }
    }

    /// guest-file-write's stream part: fwrite with glibc's buffering.
    pub(crate) fn write(&mut self, fs: &mut FileSystem, data: &[u8]) -> Result<usize, String> {
        let fail = |e: Errno| format!("failed to write to file: {}", e.text());
        if !self.flags.write {
            return Err(fail(Errno::BadF));
        }
        self.state = RwState::Writing;
        if !matches!(fs.node(&self.path), Some(Node::File(_))) {
            // Devices swallow what is written.
            return Ok(data.len());
        }
        // Check room for the data and any zero-filled gap before it, then reserve the
        // data: `used` counts file contents plus buffered bytes.
        let len = fs.len(&self.path);
        let at = if self.flags.append {
            len
        } else if self.pending.is_empty() {
            self.pos
        } else {
            self.pending_start
        };
        let need = at.saturating_sub(len).saturating_add(data.len() as u64);
        if fs.used.saturating_add(need) > fs.capacity {
            return Err(fail(Errno::NoSpc));
        }
        fs.used += data.len() as u64;
        // Fill the room left in the buffer first.
        let room = if self.buffer_room {
            STDIO_BUFFER.saturating_sub(self.pending.len())
        } else {
            0
        };
        let first = room.min(data.len());
        if self.pending.is_empty() {
            self.pending_start = self.pos;
        }
        self.pending.extend_from_slice(&data[..first]);
        let rest = &data[first..];
        if !rest.is_empty() {
            // Overflow: flush the buffer, write whole blocks directly, buffer the tail.
            let start = self.pending_start + self.pending.len() as u64;
            self.flush_buffer(fs);
            self.buffer_room = true;
            let direct = rest.len() - rest.len() % STDIO_BUFFER;
            if direct > 0 {
                let offset = (!self.flags.append).then_some(start);
                let end = fs.apply(&self.path, offset, &rest[..direct], direct as u64);
                if self.flags.append {
                    self.pos = end;
                }
            }
            self.pending_start = start + direct as u64;
            self.pending.extend_from_slice(&rest[direct..]);
        }
        if !self.flags.append {
            self.pos += data.len() as u64;
        }
        Ok(data.len())
    }

    /// guest-file-seek's stream part: fseek then ftell.
    pub(crate) fn seek(
        &mut self,
        fs: &mut FileSystem,
        offset: i64,
        whence: i32,
    ) -> Result<i64, String> {
        self.flush_buffer(fs);
        self.buffer_room = false;
        self.state = RwState::New;
        if self.device(fs).is_some() {
            // /dev/null and /dev/zero reset the position to 0; urandom ignores it.
            self.pos = 0;
            return Ok(0);
        }
        let base = match whence {
            0 => 0,
            1 => self.pos,
            _ => fs.len(&self.path),
        };
        let target = i64::try_from(base)
            .ok()
            .and_then(|b| b.checked_add(offset))
            .filter(|&p| p >= 0)
            .ok_or_else(|| format!("failed to seek file: {}", Errno::Inval.text()))?;
        self.pos = target as u64;
        Ok(target)
    }
}

/// The open handles and the persistent handle counter.
#[derive(Debug)]
pub(crate) struct Handles {
    /// The next handle; qemu-ga keeps it in its state file, so it survives restarts.
    next: i64,
    open: BTreeMap<i64, OpenFile>,
}

/// qemu-ga's first handle (`QGA_PSTATE_DEFAULT_FD_COUNTER`).
const FIRST_HANDLE: i64 = 1000;

/// Open streams the agent can hold: a soft RLIMIT_NOFILE of 1024 less the descriptors
/// qemu-ga itself uses (stdio, the channel, its log and state files).
pub(crate) const MAX_OPEN: usize = 1018;

impl Handles {
    pub(crate) fn new() -> Self {
        Handles {
            next: FIRST_HANDLE,
            open: BTreeMap::new(),
        }
    }

    /// True when one more stream would exceed the descriptor limit (EMFILE).
    pub(crate) fn full(&self) -> bool {
        self.open.len() >= MAX_OPEN
    }

    /// Registers an open stream and returns its handle (never reused).
    pub(crate) fn add(&mut self, file: OpenFile) -> i64 {
        let handle = self.next;
        self.next = self.next.saturating_add(1);
        self.open.insert(handle, file);
        handle
    }

    pub(crate) fn get(&mut self, handle: i64) -> Result<&mut OpenFile, String> {
        self.open
            .get_mut(&handle)
            .ok_or_else(|| format!("handle '{handle}' has not been found"))
    }

    pub(crate) fn remove(&mut self, handle: i64) -> Result<OpenFile, String> {
        self.open
            .remove(&handle)
            .ok_or_else(|| format!("handle '{handle}' has not been found"))
    }

    /// The agent process died: its streams are gone, the counter stays.
    pub(crate) fn drop_all(&mut self, fs: &mut FileSystem) {
        for (_, file) in std::mem::take(&mut self.open) {
            file.abandon(fs);
        }
    }

    pub(crate) fn open_handles(&self) -> BTreeSet<i64> {
        self.open.keys().copied().collect()
    }
}
