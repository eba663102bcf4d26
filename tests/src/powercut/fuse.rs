//! The FUSE side of the power-cut disk: answers the kernel's requests from the [`Volume`] and
//! stops answering when the power is cut.
//!
//! The kernel is asked for no write-back cache, so every `write` reaches this file system when
//! the process makes it (the volume's live bytes are the page cache); reads may be served from
//! the kernel's cache, which holds the same bytes. POSIX and `flock` locks are left to the
//! kernel (the file system does not claim them), which keeps them on this machine as a local
//! file system does. Memory-mapped files (SQLite's `-shm`) are written back through `write`.

use std::ffi::OsStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::volume::{CutReport, Loss, Node, Volume, PAGE};

/// How long the kernel may keep names and attributes: every change goes through it, so its
/// caches never go stale (a cut mounts a new file system, with empty caches).
const TTL: Duration = Duration::from_secs(3600);

/// `O_EXCL` in the flags of `create` (Linux's value on every architecture this runs on).
const O_EXCL: i32 = 0o200;

/// Whether the disk has power.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Power {
    On,
    /// Cut: every request waits, as a machine without power does nothing more.
    Cut,
    /// Gone for good: every request fails with `EIO`, so that the processes killed at the cut
    /// can exit (closing their files still sends requests).
    Dead,
}

/// The state the FUSE thread and the test share.
pub(super) struct Shared {
    state: Mutex<(Power, Volume)>,
    power_changed: Condvar,
}

impl Shared {
    pub(super) fn new(volume: Volume) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new((Power::On, volume)),
            power_changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, (Power, Volume)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` on the volume once the power allows: at once when on, after waiting when cut,
    /// never when dead (`EIO`).
    fn with<T>(&self, op: impl FnOnce(&mut Volume) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut state = self.lock();
        while state.0 == Power::Cut {
            state = self
                .power_changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match state.0 {
            Power::On => op(&mut state.1),
            Power::Cut | Power::Dead => Err(Errno::EIO),
        }
    }

    /// Cuts the power at this instant and returns what the disk then holds.
    pub(super) fn cut(&self, loss: &mut Loss) -> (Volume, CutReport) {
        let mut state = self.lock();
        state.0 = Power::Cut;
        state.1.cut(loss)
    }

    /// Fails every waiting and later request.
    pub(super) fn kill(&self) {
        self.lock().0 = Power::Dead;
        self.power_changed.notify_all();
    }

    /// The operations counted so far.
    pub(super) fn counters(&self) -> super::volume::Counters {
        self.lock().1.counters
    }
}

/// The [`Filesystem`] the FUSE session runs.
pub(super) struct PowerCutFs(pub(super) Arc<Shared>);

fn attr(ino: u64, node: &Node) -> FileAttr {
    let size = node.size();
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: node.mtime,
        mtime: node.mtime,
        ctime: node.mtime,
        crtime: node.mtime,
        kind: if node.is_dir() {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: node.perm,
        nlink: if node.is_dir() { 2 } else { 1 },
        uid: node.uid,
        gid: node.gid,
        rdev: 0,
        blksize: PAGE as u32,
        flags: 0,
    }
}

fn entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl PowerCutFs {
    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        dir: bool,
    ) -> Result<FileAttr, Errno> {
        let perm = (mode & !umask & 0o7777) as u16;
        self.0.with(|v| {
            let ino = v.make(parent.0, name, dir, perm, (req.uid(), req.gid()))?;
            Ok(attr(ino, v.node(ino)?))
        })
    }

    /// Opens `ino`, which must be a directory (`dir`) or a file. No handle is kept: every
    /// request names its inode.
    fn open_as(&self, ino: INodeNo, dir: bool, reply: ReplyOpen) {
        match self.0.with(|v| v.node(ino.0).map(Node::is_dir)) {
            Ok(is_dir) if is_dir == dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) if dir => reply.error(Errno::ENOTDIR),
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(
            reply,
            self.0.with(|v| {
                let ino = v.lookup(parent.0, name)?;
                Ok(attr(ino, v.node(ino)?))
            }),
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.with(|v| Ok(attr(ino.0, v.node(ino.0)?))) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.0.with(|v| {
            if let Some(size) = size {
                v.set_len(ino.0, size)?;
            }
            if let Some(mode) = mode {
                v.set_perm(ino.0, (mode & 0o7777) as u16)?;
            }
            Ok(attr(ino.0, v.node(ino.0)?))
        });
        match result {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files only: nothing here needs devices, fifos or sockets.
        if mode & 0o170000 != 0o100000 {
            return reply.error(Errno::EPERM);
        }
        entry(reply, self.make(req, parent, name, mode, umask, false));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        entry(reply, self.make(req, parent, name, mode, umask, true));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.0.with(|v| v.remove(parent.0, name, false)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.0.with(|v| v.remove(parent.0, name, true)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags != RenameFlags::empty() {
            return reply.error(Errno::EINVAL);
        }
        empty(
            reply,
            self.0
                .with(|v| v.rename(parent.0, name, newparent.0, newname)),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.open_as(ino, false, reply);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self
            .0
            .with(|v| v.read(ino.0, offset, size).map(<[u8]>::to_vec))
        {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.0.with(|v| v.write(ino.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // `close` is no sync: nothing to do, but a dead disk still says so.
        empty(reply, self.0.with(|_| Ok(())));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // `fdatasync` and `fsync` both make the bytes and the size durable here; the other
        // metadata (times, permissions) is not modelled.
        empty(reply, self.0.with(|v| v.sync(ino.0)));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.open_as(ino, true, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.0.with(|v| {
            let mut all = vec![
                (INodeNo(ino.0), FileType::Directory, ".".into()),
                (INodeNo(ino.0), FileType::Directory, "..".into()),
            ];
            for (name, child) in v.entries(ino.0)? {
                let kind = if v.node(child)?.is_dir() {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                all.push((INodeNo(child), kind, name));
            }
            Ok(all)
        }) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.0.with(|v| v.sync(ino.0)));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A roomy disk: a full one is the storage-fault tests' business.
        reply.statfs(
            1 << 24,
            1 << 24,
            1 << 24,
            1 << 20,
            1 << 20,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.0.with(|v| v.node(ino.0).map(|_| ())));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let perm = (mode & !umask & 0o7777) as u16;
        let exclusive = flags & O_EXCL != 0;
        let result = self.0.with(|v| {
            let ino = match v.lookup(parent.0, name) {
                Ok(_) if exclusive => return Err(Errno::EEXIST),
                Ok(ino) if v.node(ino)?.is_dir() => return Err(Errno::EISDIR),
                Ok(ino) => ino,
                Err(_) => v.make(parent.0, name, false, perm, (req.uid(), req.gid()))?,
            };
            Ok(attr(ino, v.node(ino)?))
        });
        match result {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Plain preallocation only: it extends the file with zeros.
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        empty(
            reply,
            self.0.with(|v| {
                let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
                if end > v.node(ino.0)?.size() {
                    v.set_len(ino.0, end)?;
                }
                Ok(())
            }),
        );
    }
}
