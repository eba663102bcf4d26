//! A disk that can lose power: a FUSE file system, kept in this process's memory, that holds
//! back every write until it is synced and, at a simulated power cut, drops what was not.
//!
//! A `SIGKILL` leaves the kernel's page cache intact, so a killed process's unsynced writes
//! still reach the disk and the kill tests cannot tell `synchronous = FULL` from `NORMAL`. A
//! power cut loses them. No device-mapper target or network block device is available on the
//! machines this project runs on, but FUSE is, so the tests mount this file system, run an engine
//! in a child process on it, and cut the power under it.
//!
//! # The model
//!
//! Each file has two versions of its bytes ([`volume`]): the *live* one, which every `write`
//! changes at once and every `read` sees (the page cache), and the *disk* one, which changes
//! only when the file is synced: `fsync` or `fdatasync` of any descriptor of the file copies its
//! dirty pages and its size to the disk. Each directory likewise has live and disk entries; a
//! `fsync` of the directory makes its entries (creations, removals, renames) durable, and a
//! file's own sync does not (POSIX asks for both; SQLite does both for its journals and logs).
//!
//! [`Disk::cut_power`] stops the file system at that instant: every request from then on waits,
//! as a machine without power runs nothing more. It returns the volume the disk holds, built
//! from the root down through the synced directory entries, with in each file its synced bytes
//! and, per [`Loss`], none or a random part of what was written since: [`Loss::Unsynced`] drops
//! every unsynced write (the most a cut can lose); [`Loss::SomePages`] keeps each page written
//! since the last sync, and the file's new size, with even odds, independently (the kernel may
//! have written any of them back, in any order, before the cut). Pages are 4 KiB and kept or
//! dropped whole (a disk writes a sector atomically, and SQLite assumes that a write does not
//! damage bytes outside it); a page is kept with its latest bytes, not an older version written
//! back earlier. Unsynced directory changes are always dropped. The test then kills the
//! processes on the disk, [`Disk::fail_requests`] lets them exit, and the volume is mounted
//! again with [`Disk::mount_volume`]: the machine after the reboot.
//!
//! What a real disk does beyond this is not modelled: reordering around a sync (a sync here is a
//! barrier, as `fsync` is on a disk that honours cache flushes), torn sectors, and failing or
//! lying syncs.
//!
//! Mounting uses the `mount` system call, which needs root (CI runs as root); without it,
//! [`Disk::mount`] fails with the reason.

mod fuse;
pub mod volume;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption};
use nix::mount::{umount2, MntFlags};

use fuse::{PowerCutFs, Shared};
pub use volume::{Counters, CutReport, Loss, Volume};

/// A mounted power-cut disk. Dropping it kills its power and unmounts it.
pub struct Disk {
    shared: Arc<Shared>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

impl Disk {
    /// Mounts an empty disk on `mountpoint`, an existing directory.
    ///
    /// # Errors
    ///
    /// When the kernel refuses the mount (no `/dev/fuse`, no FUSE support, not root); the
    /// error says so.
    pub fn mount(mountpoint: &Path) -> io::Result<Disk> {
        Disk::mount_volume(mountpoint, Volume::new())
    }

    /// Mounts a disk holding `volume` (what a cut left) on `mountpoint`.
    ///
    /// # Errors
    ///
    /// As [`mount`](Self::mount).
    pub fn mount_volume(mountpoint: &Path, volume: Volume) -> io::Result<Disk> {
        let shared = Shared::new(volume);
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("durable-jobs-powercut".into()),
            MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount(PowerCutFs(Arc::clone(&shared)), mountpoint, &config)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "mounting the power-cut file system (FUSE) on {} failed: {e}; it needs \
                         /dev/fuse, the kernel's fuse file system and root (CI runs as root)",
                        mountpoint.display()
                    ),
                )
            })?;
        Ok(Disk {
            shared,
            session: Some(session),
            mountpoint: mountpoint.to_owned(),
        })
    }

    /// Where the disk is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power now: from this instant nothing more is read or written (requests wait),
    /// and the returned volume is what the disk holds, per `loss`. Kill the processes using the
    /// disk next, then [`fail_requests`](Self::fail_requests), then reap them and
    /// [`unmount`](Self::unmount).
    pub fn cut_power(&self, loss: &mut Loss) -> (Volume, CutReport) {
        self.shared.cut(loss)
    }

    /// Fails every request waiting since the cut, and every later one, with `EIO`, so that the
    /// killed processes can exit (their exit closes files, which sends requests).
    pub fn fail_requests(&self) {
        self.shared.kill();
    }

    /// The operations the disk has seen since it was mounted.
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    /// Unmounts the disk; whatever was not synced is gone with it. Every process using it
    /// should have exited.
    ///
    /// The unmount is lazy: a child being spawned by another thread meanwhile holds copies of
    /// this process's descriptors until its `exec` closes them, which would make a plain
    /// unmount fail as busy. The mount point is free at once; this returns once the kernel has
    /// let go of the file system.
    ///
    /// # Errors
    ///
    /// When the kernel refuses the unmount, or still holds the file system a minute later.
    pub fn unmount(mut self) -> io::Result<()> {
        self.shared.kill();
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        detach(&self.mountpoint)?;
        let (done, gone) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(session.join());
        });
        gone.recv_timeout(Duration::from_secs(60)).map_err(|_| {
            io::Error::other(format!(
                "the file system unmounted from {} is still in use a minute later",
                self.mountpoint.display()
            ))
        })?
    }
}

/// Detaches the mount at `mountpoint` (`umount -l`).
fn detach(mountpoint: &Path) -> io::Result<()> {
    umount2(mountpoint, MntFlags::MNT_DETACH)
        .map_err(|e| io::Error::other(format!("unmounting {} failed: {e}", mountpoint.display())))
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // A test that failed half-way: no request may wait forever, and the mount must go
            // even if a process still has a file open on it. The session is forgotten, its thread
            // left to end by itself: dropping it would unmount by path, whatever is mounted
            // there by then.
            self.shared.kill();
            let _ = detach(&self.mountpoint);
            std::mem::forget(session);
        }
    }
}
