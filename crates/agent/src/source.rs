//! The standalone source: a directory of Kubernetes YAML files.
//!
//! inotify (through `notify`) says *that* something changed; a rescan says
//! *what*: each file's content is compared with what was last read, so only
//! changed files are re-parsed, whatever the number of objects in the others.
//! A slow periodic rescan covers events inotify can miss (a replaced dir).

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

pub struct ManifestDir {
    dir: PathBuf,
    seen: HashMap<String, u64>,
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
        let mut present = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read manifest directory");
                return updates;
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| p.is_file() && is_manifest(p)) {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            present.push(name.clone());
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let d = digest(&text);
                    if self.seen.insert(name.clone(), d) != Some(d) {
                        updates.push(FileUpdate {
                            name,
                            content: Some(Ok(text)),
                        });
                    }
                }
                Err(e) => {
                    // Forget the digest so the file is re-read once it is fixed.
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
            .filter(|k| !present.contains(k))
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

/// Watches `dir` and sends every batch of changed files to `tx`.
/// Returns the watcher, which must be kept alive.
pub fn watch(
    mut manifests: ManifestDir,
    tx: mpsc::Sender<Vec<FileUpdate>>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::Watcher;
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = ev_tx.send(());
        }
    })?;
    watcher.watch(manifests.dir(), notify::RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                ev = ev_rx.recv() => {
                    if ev.is_none() {
                        return;
                    }
                    // Let an editor's write-rename-chmod burst settle.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    while ev_rx.try_recv().is_ok() {}
                }
                _ = tick.tick() => {}
            }
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
