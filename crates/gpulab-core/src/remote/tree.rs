//! The trees that copies and syncs move: one entry per file, directory or symbolic link, relative to the
//! tree's root, with the mode and times that travel with it; the local walk that lists them; and the checks
//! that keep names from another machine inside the target.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::events::{Event, Reporter};
use crate::remote::Links;
use crate::{Error, Result};

/// The permission bits gpulab copies: read, write and execute for owner, group and others. Set-user-ID,
/// set-group-ID and sticky bits from the other side are dropped.
pub(crate) const COPIED_MODE: u32 = 0o777;

/// What kind of thing one entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    /// A symbolic link, copied as a link ([`Links::Keep`]); its target is [`Item::link`].
    Link,
}

/// One file, directory or link of a tree, relative to its root ("" is the root itself; components joined
/// by `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) rel: String,
    pub(crate) kind: Kind,
    pub(crate) size: u64,
    pub(crate) mode: u32,
    pub(crate) atime: u32,
    pub(crate) mtime: u32,
    /// Where a link points, as the link says it.
    pub(crate) link: Option<String>,
}

impl Item {
    /// How deep it lies: 0 for the root's children.
    pub(crate) fn depth(&self) -> usize {
        self.rel.matches('/').count()
    }
}

/// A name another machine listed in a directory, checked before it is joined onto a local path: one path
/// component, not `.` or `..`, no `/` and no NUL. A server that answers otherwise (a compromised workspace)
/// must not make gpulab write outside the target.
pub(crate) fn entry_name<'a>(dir: &str, name: &'a str) -> Result<&'a str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::Remote {
            message: format!(
                "the workspace listed an entry {name:?} in {dir}, which is not a file name; refusing to copy it"
            ),
            hint: Some(
                "a working sshd never lists such names: the workspace may be compromised".into(),
            ),
        });
    }
    Ok(name)
}

/// `target` joined with `rel` (names joined by `/`), checked to stay under `target`: only plain
/// components.
pub(crate) fn local_under(target: &Path, rel: &str) -> Result<PathBuf> {
    let path = Path::new(rel);
    let plain = !rel.contains('\0')
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return Err(Error::Remote {
            message: format!(
                "{} would land outside {}; refusing to write it",
                path.display(),
                target.display()
            ),
            hint: Some(
                "a working sshd never lists such names: the workspace may be compromised".into(),
            ),
        });
    }
    Ok(target.join(path))
}

/// A unique temporary name next to `name`: hidden, unpredictable (so nobody can plant a file or link there
/// first), and distinct even if the random source fails.
pub(crate) fn temp_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 8];
    if getrandom::fill(&mut random).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        random = nanos.to_le_bytes();
    }
    format!(
        ".{name}.gpulab-{:016x}-{}.part",
        u64::from_le_bytes(random),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn unix_secs(time: std::io::Result<SystemTime>) -> u32 {
    time.ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}

/// The entry for a local file or directory with metadata `meta` (followed, for a link's target).
pub(crate) fn local_item(rel: String, meta: &std::fs::Metadata) -> Item {
    Item {
        rel,
        kind: if meta.is_dir() { Kind::Dir } else { Kind::File },
        size: if meta.is_dir() { 0 } else { meta.len() },
        mode: meta.permissions().mode() & COPIED_MODE,
        atime: unix_secs(meta.accessed()),
        mtime: unix_secs(meta.modified()),
        link: None,
    }
}

/// Every entry under the local directory `root` (not the root itself), parents before children, sorted by
/// name within a directory. With [`Links::Follow`] a link to a file is the file it points to and a link to a
/// directory is skipped with a warning (it could loop); with [`Links::Keep`] every link is an entry of its
/// own. Anything else that is not a file or directory (sockets, devices) is skipped with a warning.
pub(crate) fn walk_local(root: &Path, links: Links, reporter: &dyn Reporter) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut queue = VecDeque::from([String::new()]);
    while let Some(rel) = queue.pop_front() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let mut entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                reporter.report(Event::Warning {
                    message: format!("skipped {}: its name is not UTF-8", entry.path().display()),
                });
                continue;
            };
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            if is_link && links == Links::Keep {
                let target = std::fs::read_link(&path)
                    .map_err(|e| Error::io(format!("read the link {}", path.display()), e))?;
                let meta = std::fs::symlink_metadata(&path)
                    .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
                let Some(target) = target.to_str().map(str::to_owned) else {
                    reporter.report(Event::Warning {
                        message: format!("skipped {}: its target is not UTF-8", path.display()),
                    });
                    continue;
                };
                items.push(Item {
                    rel: child,
                    kind: Kind::Link,
                    size: 0,
                    mode: 0o777,
                    atime: unix_secs(meta.accessed()),
                    mtime: unix_secs(meta.modified()),
                    link: Some(target),
                });
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) if is_link && e.kind() == std::io::ErrorKind::NotFound => {
                    reporter.report(Event::Warning {
                        message: format!("skipped {}: a link to nothing", path.display()),
                    });
                    continue;
                }
                Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
            };
            if (is_link && meta.is_dir()) || !(meta.is_dir() || meta.is_file()) {
                reporter.report(Event::Warning {
                    message: format!(
                        "skipped {}: not a regular file or directory (links to directories are not followed; `--links keep` copies links as links)",
                        path.display()
                    ),
                });
                continue;
            }
            if meta.is_dir() {
                queue.push_back(child.clone());
            }
            items.push(local_item(child, &meta));
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_hidden_and_unique() {
        let (a, b) = (temp_name("f.bin"), temp_name("f.bin"));
        assert!(a.starts_with(".f.bin.gpulab-") && a.ends_with(".part"));
        assert_ne!(a, b);
    }

    #[test]
    fn listed_names_never_leave_the_target() {
        for bad in ["..", ".", "../x", "a/b", "/etc", "x\0y", ""] {
            assert!(entry_name("/w", bad).is_err(), "{bad:?}");
        }
        assert_eq!(entry_name("/w", "..hidden").unwrap(), "..hidden");
        let target = Path::new("/tmp/t");
        assert_eq!(local_under(target, "a/b").unwrap(), target.join("a/b"));
        for bad in ["../x", "a/../../x", "/etc/passwd", "./a", "a\0b"] {
            assert!(local_under(target, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_walk_lists_parents_first_and_links_as_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::write(root.join("b/c/d.txt"), b"dd").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        std::os::unix::fs::symlink("b", root.join("dirlink")).unwrap();
        let rels = |items: &[Item]| items.iter().map(|i| i.rel.clone()).collect::<Vec<_>>();

        let followed = walk_local(root, Links::Follow, &crate::events::Silent).unwrap();
        assert_eq!(rels(&followed), ["a.txt", "b", "link", "b/c", "b/c/d.txt"]);
        let link = followed.iter().find(|i| i.rel == "link").unwrap();
        assert_eq!((link.kind, link.size), (Kind::File, 1));

        let kept = walk_local(root, Links::Keep, &crate::events::Silent).unwrap();
        assert_eq!(
            rels(&kept),
            ["a.txt", "b", "dirlink", "link", "b/c", "b/c/d.txt"]
        );
        let link = kept.iter().find(|i| i.rel == "dirlink").unwrap();
        assert_eq!((link.kind, link.link.as_deref()), (Kind::Link, Some("b")));
    }
}
