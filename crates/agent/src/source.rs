//! The standalone source: a directory of Kubernetes YAML files.
//!
//! inotify (through `notify`) says *that* something changed (and when a
//! writer closed the file); a rescan says *what*: each file's content is
//! compared with what was last read, so only changed files are re-parsed,
//! whatever the number of objects in the others. A slow periodic rescan
//! covers events inotify can miss (a replaced dir).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// A file whose content changed (`content: None`: it was removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUpdate {
    /// File name relative to the manifest directory.
    pub name: String,
    pub content: Option<Result<String, String>>,
}

/// What identifies a file's version without reading it. Reading and
/// hashing every file on each event would make one small change cost as
/// much as the largest file (a 100k-Service file is ~60 MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            ino: meta.ino(),
            len: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    stamp: Stamp,
    /// Content digest: a file touched but not changed is not re-parsed.
    digest: u64,
}

pub struct ManifestDir {
    dir: PathBuf,
    seen: HashMap<String, Seen>,
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

fn digest(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl ManifestDir {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            seen: HashMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files that changed since the last scan. An unreadable file is reported
    /// with its error (its objects stay as they were).
    pub fn scan(&mut self) -> Vec<FileUpdate> {
        let mut updates = Vec::new();
        let mut present = std::collections::HashSet::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read manifest directory");
                return updates;
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| is_manifest(p)) {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            present.insert(name.clone());
            let stamp = Stamp::of(&meta);
            let previous = self.seen.get(&name).copied();
            if previous.is_some_and(|p| p.stamp == stamp) {
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let digest = digest(&text);
                    self.seen.insert(name.clone(), Seen { stamp, digest });
                    if previous.map(|p| p.digest) != Some(digest) {
                        updates.push(FileUpdate {
                            name,
                            content: Some(Ok(text)),
                        });
                    }
                }
                Err(e) => {
                    // Forget the file so it is re-read once it is fixed.
                    self.seen.remove(&name);
                    updates.push(FileUpdate {
                        name,
                        content: Some(Err(e.to_string())),
                    });
                }
            }
        }
        let gone: Vec<String> = self
            .seen
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for name in gone {
            self.seen.remove(&name);
            updates.push(FileUpdate {
                name,
                content: None,
            });
        }
        updates
    }
}

/// When a filesystem event should lead to a rescan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The file is complete: closed after writing, renamed into place, removed.
    Now,
    /// Being written (a truncate comes before the new content): wait for the
    /// close, or for [`WRITE_SETTLE`] if the writer keeps the file open.
    Soon,
}

/// How long a file may stay open for writing before it is read anyway.
const WRITE_SETTLE: Duration = Duration::from_millis(200);

fn trigger(kind: &notify::EventKind) -> Option<Trigger> {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Trigger::Now),
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) => Some(Trigger::Now),
        EventKind::Create(_) | EventKind::Modify(_) => Some(Trigger::Soon),
        _ => None,
    }
}

/// Watches `dir` and sends every batch of changed files to `tx`.
/// Returns the watcher, which must be kept alive.
///
/// A file is read when its writer closes it, not on the first write event:
/// `write()`-style updates truncate first, and reading the empty file would
/// delete every object in it for a moment.
pub fn watch(
    mut manifests: ManifestDir,
    tx: mpsc::Sender<Vec<FileUpdate>>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::Watcher;
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Trigger>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Some(t) = res.ok().and_then(|ev| trigger(&ev.kind)) {
            let _ = ev_tx.send(t);
        }
    })?;
    watcher.watch(manifests.dir(), notify::RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut pending_since: Option<tokio::time::Instant> = None;
        loop {
            let settle = async {
                match pending_since {
                    Some(t) => tokio::time::sleep_until(t + WRITE_SETTLE).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                ev = ev_rx.recv() => match ev {
                    None => return,
                    Some(Trigger::Soon) => {
                        pending_since.get_or_insert_with(tokio::time::Instant::now);
                        continue;
                    }
                    Some(Trigger::Now) => {
                        // Take whatever else arrived in the same burst.
                        while ev_rx.try_recv().is_ok() {}
                    }
                },
                _ = settle => {}
                _ = tick.tick() => {}
            }
            pending_since = None;
            let updates = manifests.scan();
            if !updates.is_empty() && tx.send(updates).await.is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scan_reports_only_changed_added_and_removed_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "a: 1").unwrap();
        std::fs::write(dir.path().join("b.yml"), "b: 1").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "ignored").unwrap();
        let mut m = ManifestDir::new(dir.path().to_path_buf());
        let names: Vec<_> = m.scan().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["a.yaml", "b.yml"]);
        assert!(m.scan().is_empty(), "nothing changed");

        std::fs::write(dir.path().join("a.yaml"), "a: 2").unwrap();
        std::fs::remove_file(dir.path().join("b.yml")).unwrap();
        let mut updates = m.scan();
        updates.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(
            updates,
            [
                FileUpdate {
                    name: "a.yaml".into(),
                    content: Some(Ok("a: 2".into()))
                },
                FileUpdate {
                    name: "b.yml".into(),
                    content: None
                },
            ]
        );
    }
}
