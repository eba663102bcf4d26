//! The power-cut disk's contents: every file and directory twice, as the running system sees it
//! (`live`, the page cache) and as the disk holds it (`disk`, what the last syncs left), and
//! the cut that turns the one into the other.
//!
//! A write changes `live` and marks its pages dirty; `fsync`/`fdatasync` of a file copies its
//! dirty pages and its size to `disk`; `fsync` of a directory copies its entries. A cut builds
//! the volume a machine finds after losing power: the directories' synced entries, and in each
//! file reachable through them its synced content plus, with [`Loss::SomePages`], a random part
//! of what was written since (see [`super`] for the model and why it is honest).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use fuser::{Errno, INodeNo};

use crate::kill::Rng;

/// The unit of loss: a write makes its whole 4 KiB pages dirty, and a cut keeps or drops a
/// dirty page whole (the size of SQLite's pages and of the kernel's page cache).
pub const PAGE: u64 = 4096;

/// What a power cut does to the writes that were not synced.
#[derive(Clone, Debug)]
pub enum Loss {
    /// Every one is lost: the disk holds exactly what the syncs left (the kernel wrote nothing
    /// back by itself before the cut). The most a cut can lose.
    Unsynced,
    /// Each dirty page, and each file's new size, is kept or lost at random, independently:
    /// the kernel may have written any of them back before the cut, in any order. Unsynced
    /// changes to directories are lost.
    SomePages(Rng),
}

impl Loss {
    fn keeps(&mut self) -> bool {
        match self {
            Loss::Unsynced => false,
            Loss::SomePages(rng) => rng.below(2) == 0,
        }
    }
}

/// What one cut did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Dirty pages the cut dropped.
    pub pages_lost: u64,
    /// Dirty pages it kept (written back before the cut, by chance).
    pub pages_kept: u64,
    /// Directory entries whose creation, removal or change was not synced and was lost.
    pub entries_lost: u64,
}

/// Operations seen, for the reports: they show what each synchronous mode asks of the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `write` requests.
    pub writes: u64,
    /// `fsync`/`fdatasync` of a file.
    pub file_syncs: u64,
    /// `fsync` of a directory.
    pub dir_syncs: u64,
}

/// One file's bytes, live and on disk.
#[derive(Clone, Debug, Default)]
struct FileData {
    live: Vec<u8>,
    disk: Vec<u8>,
    /// Pages whose live bytes may differ from the disk's, including pages a size change
    /// added or removed.
    dirty: BTreeSet<u64>,
}

impl FileData {
    fn mark(&mut self, from: u64, to: u64) {
        if to > from {
            self.dirty.extend(from / PAGE..to.div_ceil(PAGE));
        }
    }

    fn set_len(&mut self, len: u64) {
        let old = self.live.len() as u64;
        self.mark(old.min(len), old.max(len));
        self.live.resize(len as usize, 0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        if end > self.live.len() as u64 {
            self.set_len(end);
        }
        self.live[offset as usize..end as usize].copy_from_slice(data);
        self.mark(offset, end);
    }

    fn sync(&mut self) {
        self.disk.resize(self.live.len(), 0);
        for page in std::mem::take(&mut self.dirty) {
            let (from, to) = page_range(page, self.live.len());
            self.disk[from..to].copy_from_slice(&self.live[from..to]);
        }
    }

    /// The bytes a cut leaves.
    fn after_cut(&self, loss: &mut Loss, report: &mut CutReport) -> Vec<u8> {
        let mut bytes = self.disk.clone();
        if self.dirty.is_empty() {
            return bytes;
        }
        if self.live.len() != self.disk.len() && loss.keeps() {
            bytes.resize(self.live.len(), 0);
        }
        for &page in &self.dirty {
            if loss.keeps() {
                let (from, to) = page_range(page, bytes.len().min(self.live.len()));
                bytes[from..to].copy_from_slice(&self.live[from..to]);
                report.pages_kept += 1;
            } else {
                report.pages_lost += 1;
            }
        }
        bytes
    }
}

/// The byte range of `page` within a file of `len` bytes (empty past its end).
fn page_range(page: u64, len: usize) -> (usize, usize) {
    let from = ((page * PAGE) as usize).min(len);
    let to = (((page + 1) * PAGE) as usize).min(len);
    (from, to)
}

/// One directory's entries, live and on disk.
#[derive(Clone, Debug, Default)]
struct DirData {
    live: BTreeMap<OsString, u64>,
    disk: BTreeMap<OsString, u64>,
}

/// A file or a directory.
#[derive(Clone, Debug)]
enum Content {
    File(FileData),
    Dir(DirData),
}

/// One inode: its content and the attributes `stat` shows.
#[derive(Clone, Debug)]
pub struct Node {
    content: Content,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last modification.
    pub mtime: SystemTime,
}

impl Node {
    fn new(content: Content, perm: u16, uid: u32, gid: u32) -> Node {
        Node {
            content,
            perm,
            uid,
            gid,
            mtime: SystemTime::now(),
        }
    }

    /// The live size in bytes.
    pub fn size(&self) -> u64 {
        match &self.content {
            Content::File(f) => f.live.len() as u64,
            Content::Dir(d) => d.live.len() as u64,
        }
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.content, Content::Dir(_))
    }
}

/// Every inode of the disk.
#[derive(Clone, Debug)]
pub struct Volume {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Operations seen since the volume was made (a cut starts them over).
    pub counters: Counters,
}

impl Default for Volume {
    fn default() -> Volume {
        Volume::new()
    }
}

impl Volume {
    /// An empty volume: a root directory, owned by root, created and synced.
    pub fn new() -> Volume {
        let root = Node::new(Content::Dir(DirData::default()), 0o755, 0, 0);
        Volume {
            nodes: HashMap::from([(INodeNo::ROOT.0, root)]),
            next_ino: INodeNo::ROOT.0 + 1,
            counters: Counters::default(),
        }
    }

    /// The inode `ino`.
    pub fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileData, Errno> {
        let node = self.node_mut(ino)?;
        node.mtime = SystemTime::now();
        match &mut node.content {
            Content::File(f) => Ok(f),
            Content::Dir(_) => Err(Errno::EISDIR),
        }
    }

    fn dir(&self, ino: u64) -> Result<&DirData, Errno> {
        match &self.node(ino)?.content {
            Content::Dir(d) => Ok(d),
            Content::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirData, Errno> {
        match &mut self.node_mut(ino)?.content {
            Content::Dir(d) => Ok(d),
            Content::File(_) => Err(Errno::ENOTDIR),
        }
    }

    /// The inode named `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?
            .live
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// The live entries of directory `ino`, in name order.
    pub fn entries(&self, ino: u64) -> Result<Vec<(OsString, u64)>, Errno> {
        Ok(self
            .dir(ino)?
            .live
            .iter()
            .map(|(n, i)| (n.clone(), *i))
            .collect())
    }

    /// Makes a file (`dir` false) or a directory named `name` in `parent`.
    pub fn make(
        &mut self,
        parent: u64,
        name: &OsStr,
        dir: bool,
        perm: u16,
        owner: (u32, u32),
    ) -> Result<u64, Errno> {
        if self.dir(parent)?.live.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let content = if dir {
            Content::Dir(DirData::default())
        } else {
            Content::File(FileData::default())
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes
            .insert(ino, Node::new(content, perm, owner.0, owner.1));
        self.dir_mut(parent)?.live.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Removes the entry `name` from `parent`; a directory must be empty (`dir` true) and a file
    /// must not be a directory. The inode lives on for whoever has it open.
    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        match (dir, &self.node(ino)?.content) {
            (true, Content::Dir(d)) if !d.live.is_empty() => return Err(Errno::ENOTEMPTY),
            (true, Content::File(_)) => return Err(Errno::ENOTDIR),
            (false, Content::Dir(_)) => return Err(Errno::EISDIR),
            _ => {}
        }
        self.dir_mut(parent)?.live.remove(name);
        Ok(())
    }

    /// Moves `parent/name` to `new_parent/new_name`, replacing a file or an empty directory there.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
    ) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        if let Ok(target) = self.lookup(new_parent, new_name) {
            let target = self.node(target)?;
            match (&target.content, self.node(ino)?.is_dir()) {
                (Content::Dir(d), true) if !d.live.is_empty() => return Err(Errno::ENOTEMPTY),
                (Content::Dir(_), false) => return Err(Errno::EISDIR),
                (Content::File(_), true) => return Err(Errno::ENOTDIR),
                _ => {}
            }
        }
        self.dir(new_parent)?;
        self.dir_mut(parent)?.live.remove(name);
        self.dir_mut(new_parent)?
            .live
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    /// Up to `size` live bytes of file `ino` from `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<&[u8], Errno> {
        match &self.node(ino)?.content {
            Content::File(f) => {
                let live = &f.live;
                let from = (offset as usize).min(live.len());
                let to = from.saturating_add(size as usize).min(live.len());
                Ok(&live[from..to])
            }
            Content::Dir(_) => Err(Errno::EISDIR),
        }
    }

    /// Writes `data` at `offset` of file `ino` (the page cache: nothing reaches the disk).
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let len = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        offset
            .checked_add(u64::from(len))
            .filter(|end| *end <= 1 << 40)
            .ok_or(Errno::EFBIG)?;
        self.file_mut(ino)?.write(offset, data);
        self.counters.writes += 1;
        Ok(len)
    }

    /// Truncates or extends file `ino` to `len` bytes (extended with zeros).
    pub fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        if len > 1 << 40 {
            return Err(Errno::EFBIG);
        }
        self.file_mut(ino)?.set_len(len);
        Ok(())
    }

    /// Sets the permission bits of `ino`.
    pub fn set_perm(&mut self, ino: u64, perm: u16) -> Result<(), Errno> {
        self.node_mut(ino)?.perm = perm;
        Ok(())
    }

    /// `fsync`/`fdatasync`: the file's bytes and size reach the disk. A directory's `fsync`
    /// makes its entries reach it.
    pub fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match &mut self.node_mut(ino)?.content {
            Content::File(f) => {
                f.sync();
                self.counters.file_syncs += 1;
            }
            Content::Dir(d) => {
                d.disk = d.live.clone();
                self.counters.dir_syncs += 1;
            }
        }
        Ok(())
    }

    /// The volume the disk holds after a power cut now: the synced directory entries from the
    /// root down and, in each file they reach, its synced bytes plus the unsynced pages `loss`
    /// keeps. Inodes no synced entry reaches are gone.
    pub fn cut(&self, loss: &mut Loss) -> (Volume, CutReport) {
        let mut report = CutReport::default();
        let mut nodes = HashMap::new();
        let mut todo = vec![INodeNo::ROOT.0];
        while let Some(ino) = todo.pop() {
            let Some(node) = self.nodes.get(&ino) else {
                continue;
            };
            if nodes.contains_key(&ino) {
                continue;
            }
            let content = match &node.content {
                Content::File(f) => {
                    let bytes = f.after_cut(loss, &mut report);
                    Content::File(FileData {
                        live: bytes.clone(),
                        disk: bytes,
                        dirty: BTreeSet::new(),
                    })
                }
                Content::Dir(d) => {
                    report.entries_lost += d
                        .live
                        .iter()
                        .filter(|(n, i)| d.disk.get(*n) != Some(i))
                        .count() as u64;
                    report.entries_lost +=
                        d.disk.keys().filter(|n| !d.live.contains_key(*n)).count() as u64;
                    todo.extend(d.disk.values());
                    Content::Dir(DirData {
                        live: d.disk.clone(),
                        disk: d.disk.clone(),
                    })
                }
            };
            nodes.insert(
                ino,
                Node {
                    content,
                    ..node.clone()
                },
            );
        }
        let volume = Volume {
            nodes,
            next_ino: self.next_ino,
            counters: Counters::default(),
        };
        (volume, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u64 = INodeNo::ROOT.0;

    fn file(v: &mut Volume, name: &str) -> u64 {
        v.make(ROOT, OsStr::new(name), false, 0o644, (0, 0))
            .unwrap()
    }

    fn bytes_after(v: &Volume, loss: &mut Loss, name: &str) -> Option<Vec<u8>> {
        let (after, _) = v.cut(loss);
        let ino = after.lookup(ROOT, OsStr::new(name)).ok()?;
        Some(after.read(ino, 0, u32::MAX).unwrap().to_vec())
    }

    #[test]
    fn a_cut_keeps_what_was_synced_and_drops_the_rest() {
        let mut v = Volume::new();
        let ino = file(&mut v, "f");
        v.sync(ROOT).unwrap();
        v.write(ino, 0, &[1; 5000]).unwrap();
        v.sync(ino).unwrap();
        v.write(ino, 100, &[2; 10]).unwrap();
        v.write(ino, 5000, &[3; 10]).unwrap();
        let after = bytes_after(&v, &mut Loss::Unsynced, "f").unwrap();
        assert_eq!(after, vec![1; 5000]);
        // The live view has everything.
        assert_eq!(v.read(ino, 100, 1).unwrap(), &[2]);
        assert_eq!(v.read(ino, 5000, 20).unwrap(), &[3; 10]);
    }

    #[test]
    fn a_file_whose_entry_was_not_synced_is_gone_whatever_was_synced_of_its_bytes() {
        let mut v = Volume::new();
        let ino = file(&mut v, "f");
        v.write(ino, 0, b"data").unwrap();
        v.sync(ino).unwrap();
        assert_eq!(bytes_after(&v, &mut Loss::Unsynced, "f"), None);
        v.sync(ROOT).unwrap();
        assert_eq!(
            bytes_after(&v, &mut Loss::Unsynced, "f").as_deref(),
            Some(&b"data"[..])
        );
        // An unsynced removal is lost too: the file comes back.
        v.remove(ROOT, OsStr::new("f"), false).unwrap();
        let (after, report) = v.cut(&mut Loss::Unsynced);
        assert!(after.lookup(ROOT, OsStr::new("f")).is_ok());
        assert_eq!(report.entries_lost, 1);
    }

    #[test]
    fn a_truncation_then_a_write_leave_no_stale_bytes_once_synced() {
        let mut v = Volume::new();
        let ino = file(&mut v, "f");
        v.sync(ROOT).unwrap();
        v.write(ino, 0, &[9; 3 * PAGE as usize]).unwrap();
        v.sync(ino).unwrap();
        v.set_len(ino, 0).unwrap();
        v.write(ino, 2 * PAGE, &[1; 8]).unwrap();
        v.sync(ino).unwrap();
        let after = bytes_after(&v, &mut Loss::Unsynced, "f").unwrap();
        let mut expected = vec![0; 2 * PAGE as usize];
        expected.extend([1; 8]);
        assert_eq!(after, expected);
    }

    #[test]
    fn some_pages_keeps_each_dirty_page_whole_or_not_at_all() {
        let mut v = Volume::new();
        let ino = file(&mut v, "f");
        v.sync(ROOT).unwrap();
        v.write(ino, 0, &[0; 8 * PAGE as usize]).unwrap();
        v.sync(ino).unwrap();
        for page in 0..8 {
            v.write(ino, page * PAGE, &[page as u8 + 1; PAGE as usize])
                .unwrap();
        }
        let mut kept_some = false;
        let mut lost_some = false;
        for seed in 0..20 {
            let mut loss = Loss::SomePages(Rng::new(seed));
            let after = bytes_after(&v, &mut loss, "f").unwrap();
            for (page, bytes) in after.chunks(PAGE as usize).enumerate() {
                let first = bytes[0];
                assert!(bytes.iter().all(|b| *b == first), "page {page} is torn");
                assert!(first == 0 || first == page as u8 + 1);
                kept_some |= first != 0;
                lost_some |= first == 0;
            }
        }
        assert!(kept_some && lost_some);
    }
}
