//! Trees as one tar stream, for copies of many files in one go: through the API server's exec (as
//! `kubectl cp` does) and over an SSH exec channel, where one stream beats a round trip per file.
//!
//! Both ends keep the guarantees of the SFTP path. Sending, the workspace unpacks into a fresh temporary
//! directory beside the target and moves the result into place ([`RECEIVE`]): a new target appears whole
//! or not at all; into an existing directory each file is replaced by a hard link to its complete copy, so
//! no target file is ever left truncated. Receiving, [`unpack`] writes only into a staging directory of its
//! own with an unpredictable name, checks every name in the stream (plain components only), masks modes
//! to 0o777, creates symbolic links last (so nothing is ever written through one), and [`move_into`] then
//! renames the result into place.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::remote::tree::{COPIED_MODE, Item, Kind, local_under};
use crate::{Error, Result};

/// The exit code of [`RECEIVE`] and [`SEND`] when the workspace has no `tar`: the caller falls back to
/// copying file by file.
pub(crate) const NO_TAR: i32 = 99;

/// The exit code of the scripts here when `GPULAB_CP_USER` is set and the command runs as someone else:
/// files written through this exec would not belong to the user SSH logs in as, so the caller copies over
/// SSH instead.
pub(crate) const OTHER_USER: i32 = 98;

/// The environment variable that names the user the scripts here must run as ([`OTHER_USER`]).
pub(crate) const USER_VAR: &str = "GPULAB_CP_USER";

/// The checks before a copy script touches anything: `tar` is there (else exit [`NO_TAR`]) and, when
/// `GPULAB_CP_USER` is set, exec runs as that user (else exit [`OTHER_USER`]).
macro_rules! preconditions {
    () => {
        r#"command -v tar >/dev/null 2>&1 || { echo "the workspace has no tar" >&2; exit 99; }
if [ -n "${GPULAB_CP_USER-}" ] && [ "$(id -un 2>/dev/null)" != "$GPULAB_CP_USER" ]; then echo "exec runs as $(id -un 2>/dev/null), not $GPULAB_CP_USER" >&2; exit 98; fi
"#
    };
}

/// [`preconditions!`] alone: run on its own when an upload's stream broke, to tell a workspace that
/// refused the copy up front (the script exits while the tar stream is still being written, and the
/// connection can reset before its status arrives) from a real failure.
pub(crate) const PRECONDITIONS: &str = preconditions!();

/// The shell script that receives an upload (`sh -c RECEIVE gpulab-cp DEST NAME [exact [MTIME]]`, the
/// tar stream on standard input, whose root is `NAME`): the target is `DEST/NAME` when `DEST` is a
/// directory, else `DEST` (always `DEST` with `exact`). It unpacks into a temporary directory beside a new
/// target and moves it into place, or inside an existing directory and hard-links each file over the old
/// one (then sets the directory's modification time back to `MTIME`), so a failed copy never leaves a
/// partial file at a target name. `DEST` may start with `~/`.
pub(crate) const RECEIVE: &str = concat!(
    "set -e\n",
    preconditions!(),
    r#"dest=$1 name=$2
case $dest in "~") dest=$HOME ;; "~/"*) dest=$HOME/${dest#"~/"} ;; esac
if [ "${3-}" != exact ] && [ -d "$dest" ]; then target=$dest/$name; else target=$dest; fi
if [ -d "$target" ] && [ ! -L "$target" ]; then merge=1 stage=$target; else merge= stage=$(dirname -- "$target"); mkdir -p -- "$stage"; fi
tmp=$(mktemp -d "$stage/.gpulab-cp.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
tar -x -p -f - -C "$tmp"
if [ -n "$merge" ] && [ -d "$tmp/$name" ]; then
  cp -R -P -p -l -f -- "$tmp/$name/." "$target/"
  rm -rf -- "$tmp"
  if [ -n "${4-}" ]; then touch -c -m -d "@$4" -- "$target" 2>/dev/null || true; fi
else
  mv -f -T -- "$tmp/$name" "$target"
fi
"#
);

/// The shell script that sends a directory (`sh -c SEND gpulab-cp DIR [-h]`): its contents as a tar stream
/// of `.`-relative names on standard output; `-h` follows symbolic links.
pub(crate) const SEND: &str = r#"command -v tar >/dev/null 2>&1 || { echo "the workspace has no tar" >&2; exit 99; }
dir=$1
case $dir in "~") dir=$HOME ;; "~/"*) dir=$HOME/${dir#"~/"} ;; esac
cd -- "$dir" || exit 2
shift
exec tar -c -f - "$@" .
"#;

/// The shell script that sends one entry of a directory through the API server's exec (`sh -c SEND_ENTRY
/// gpulab-cp DIR NAME [-h]`): a tar stream whose root is `NAME`; `DIR` may start with `~/`, `-h` follows
/// symbolic links. Exits [`NO_TAR`] without tar, [`OTHER_USER`] as the wrong user.
pub(crate) const SEND_ENTRY: &str = r#"command -v tar >/dev/null 2>&1 || { echo "the workspace has no tar" >&2; exit 99; }
if [ -n "${GPULAB_CP_USER-}" ] && [ "$(id -un 2>/dev/null)" != "$GPULAB_CP_USER" ]; then echo "exec runs as $(id -un 2>/dev/null), not $GPULAB_CP_USER" >&2; exit 98; fi
dir=$1 name=$2
case $dir in "~") dir=$HOME ;; "~/"*) dir=$HOME/${dir#"~/"} ;; esac
shift 2
exec tar -c -f - "$@" -C "$dir" -- "$name"
"#;

/// A reader that yields exactly `len` bytes of `inner`, or fails: a file that shrinks while it is archived
/// must not produce a corrupt stream.
struct Exact<R> {
    inner: R,
    left: u64,
    path: PathBuf,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was being copied", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn header(kind: tar::EntryType, item: &Item) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(item.mode & COPIED_MODE);
    header.set_mtime(item.mtime.into());
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(if kind == tar::EntryType::Regular {
        item.size
    } else {
        0
    });
    header
}

/// Write `root` (a file or directory, as `root_item` describes it) as `name`, and each of `items` (relative
/// to `root`) as `name/REL`, to `out` as one tar stream; `sent` is told the bytes of file content written.
/// Returns `out`.
pub(crate) fn pack<W: Write>(
    out: W,
    root: &Path,
    name: &str,
    root_item: &Item,
    items: &[Item],
    mut sent: impl FnMut(u64),
) -> std::io::Result<W> {
    let mut builder = tar::Builder::new(out);
    let mut append = |path: &Path, rel_name: &str, item: &Item| -> std::io::Result<()> {
        match item.kind {
            Kind::Dir => {
                let mut h = header(tar::EntryType::Directory, item);
                builder.append_data(&mut h, rel_name, std::io::empty())
            }
            Kind::Link => {
                let mut h = header(tar::EntryType::Symlink, item);
                builder.append_link(&mut h, rel_name, item.link.as_deref().unwrap_or(""))
            }
            Kind::File => {
                let file = std::fs::File::open(path)?;
                let mut h = header(tar::EntryType::Regular, item);
                builder.append_data(
                    &mut h,
                    rel_name,
                    Exact {
                        inner: file,
                        left: item.size,
                        path: path.to_path_buf(),
                    },
                )?;
                sent(item.size);
                Ok(())
            }
        }
    };
    append(root, name, root_item)?;
    // Depth first, each directory followed by all that is in it: tar sets a directory's times once the
    // entries after it leave it, so a breadth-first order would let later entries change them again.
    let mut ordered: Vec<&Item> = items.iter().collect();
    ordered.sort_by(|a, b| a.rel.split('/').cmp(b.rel.split('/')));
    for item in ordered {
        append(&root.join(&item.rel), &format!("{name}/{}", item.rel), item)?;
    }
    builder.into_inner()
}

/// The size of the stream [`pack`] writes for the same arguments, without reading the files: a 512-byte
/// header per entry, before it a GNU long-name (or long-link) entry for a name or link target over the
/// header's 100 bytes, each file's data padded to 512 bytes, and the two zero blocks at the end.
pub(crate) fn packed_size(name: &str, root_item: &Item, items: &[Item]) -> u64 {
    const BLOCK: u64 = 512;
    let padded = |n: u64| n.div_ceil(BLOCK) * BLOCK;
    let long = |text: &str| {
        let len = text.len() as u64;
        if len > 100 {
            BLOCK + padded(len + 1)
        } else {
            0
        }
    };
    let entry = |rel_name: &str, item: &Item| {
        BLOCK
            + long(rel_name)
            + match item.kind {
                Kind::Dir => 0,
                Kind::Link => long(item.link.as_deref().unwrap_or("")),
                Kind::File => padded(item.size),
            }
    };
    let mut size = 2 * BLOCK + entry(name, root_item);
    for item in items {
        size += entry(&format!("{name}/{}", item.rel), item);
    }
    size
}

/// What [`unpack`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unpacked {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

/// A tar entry's name as a relative path of plain components ("" for the root, `.`), or an error naming
/// it.
fn entry_rel(raw: &[u8]) -> Result<String> {
    let text = std::str::from_utf8(raw).map_err(|_| Error::Remote {
        message: format!(
            "the workspace sent a name that is not UTF-8 ({:?}); refusing to write it",
            String::from_utf8_lossy(raw)
        ),
        hint: None,
    })?;
    let parts: Vec<&str> = text
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let rel = parts.join("/");
    if parts.contains(&"..") || text.starts_with('/') || text.contains('\0') {
        return Err(Error::Remote {
            message: format!(
                "the workspace sent the name {text:?}, which would land outside the target; refusing to write it"
            ),
            hint: Some(
                "a working tar never sends such names: the workspace may be compromised".into(),
            ),
        });
    }
    Ok(rel)
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(what.to_string(), e)
}

/// Unpack the tar stream `input` into the directory `into` (which must exist and be private to this
/// copy). Names are checked to stay under `into`; regular files, directories and hard links are written,
/// symbolic links too when `keep_links` (last of all), anything else is skipped and named through `skipped`.
/// Modes are masked to 0o777; modification times are kept. `received` is told the bytes of file content.
pub(crate) fn unpack(
    input: impl Read,
    into: &Path,
    keep_links: bool,
    mut skipped: impl FnMut(String),
    mut received: impl FnMut(u64),
) -> Result<Unpacked> {
    let mut archive = tar::Archive::new(input);
    let mut done = Unpacked::default();
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let entries = archive
        .entries()
        .map_err(io_err("read the tar stream from the workspace"))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("read the tar stream from the workspace"))?;
        let rel = entry_rel(&entry.path_bytes())?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644) & COPIED_MODE;
        let mtime = entry.header().mtime().unwrap_or(0);
        let path = if rel.is_empty() {
            into.to_path_buf()
        } else {
            local_under(into, &rel)?
        };
        let make_parent = |path: &Path| -> Result<()> {
            if let Some(parent) = path.parent().filter(|p| !p.is_dir()) {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(io_err(format!("create directory {}", parent.display())))?;
            }
            Ok(())
        };
        match kind {
            tar::EntryType::Directory => {
                if !path.is_dir() {
                    make_parent(&path)?;
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(io_err(format!("create directory {}", path.display())))?;
                }
                dirs.push((path, mode, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if rel.is_empty() {
                    return Err(Error::Remote {
                        message: "the workspace sent a file as the root of a directory".into(),
                        hint: None,
                    });
                }
                make_parent(&path)?;
                let _ = std::fs::remove_file(&path);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err(format!("create {}", path.display())))?;
                loop {
                    let n = entry
                        .read(&mut buf)
                        .map_err(io_err("read the tar stream from the workspace"))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n])
                        .map_err(io_err(format!("write {}", path.display())))?;
                    received(n as u64);
                    done.bytes += n as u64;
                }
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(io_err(format!("set the mode of {}", path.display())))?;
                let time = UNIX_EPOCH + Duration::from_secs(mtime);
                file.set_times(
                    std::fs::FileTimes::new()
                        .set_modified(time)
                        .set_accessed(time),
                )
                .map_err(io_err(format!("set the times of {}", path.display())))?;
                done.files += 1;
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = local_under(into, &entry_rel(&target)?)?;
                make_parent(&path)?;
                let _ = std::fs::remove_file(&path);
                std::fs::hard_link(&target, &path)
                    .map_err(io_err(format!("link {}", path.display())))?;
                done.files += 1;
            }
            tar::EntryType::Symlink if keep_links && !rel.is_empty() => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = std::str::from_utf8(&target).map_err(|_| Error::Remote {
                    message: format!("the link {rel} points to a name that is not UTF-8"),
                    hint: None,
                })?;
                links.push((path, PathBuf::from(target)));
            }
            _ => skipped(format!(
                "skipped {rel}: {}",
                if kind == tar::EntryType::Symlink {
                    "a symbolic link (`--links keep` copies links)"
                } else {
                    "not a regular file, directory or link"
                }
            )),
        }
    }
    // tar pads its stream past the end-of-archive marker; read it all, or the sender sees a broken pipe.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink())
        .map_err(io_err("read the tar stream from the workspace"))?;
    for (path, target) in links {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_err(format!("create directory {}", parent.display())))?;
        }
        std::os::unix::fs::symlink(&target, &path)
            .map_err(io_err(format!("create the link {}", path.display())))?;
    }
    // Deepest first: writing into a directory changes its modification time.
    dirs.sort_by_key(|(path, _, _)| std::cmp::Reverse(path.components().count()));
    for (path, mode, mtime) in dirs {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("set the mode of {}", path.display())))?;
        let time = UNIX_EPOCH + Duration::from_secs(mtime);
        std::fs::File::open(&path)
            .and_then(|f| {
                f.set_times(
                    std::fs::FileTimes::new()
                        .set_modified(time)
                        .set_accessed(time),
                )
            })
            .map_err(io_err(format!("set the times of {}", path.display())))?;
    }
    Ok(done)
}

/// Move `from` to `to` by renames: a file or link replaces the target in one step; a directory moves
/// whole, or merges into an existing directory entry by entry.
pub(crate) fn move_into(from: &Path, to: &Path) -> Result<()> {
    let rename = |a: &Path, b: &Path| {
        std::fs::rename(a, b).map_err(|e| Error::io(format!("move into {}", b.display()), e))
    };
    let from_dir = std::fs::symlink_metadata(from).is_ok_and(|m| m.is_dir());
    let to_dir = std::fs::symlink_metadata(to).is_ok_and(|m| m.is_dir());
    if from_dir && to_dir {
        let entries = std::fs::read_dir(from)
            .map_err(|e| Error::io(format!("read {}", from.display()), e))?;
        for entry in entries.flatten() {
            move_into(&entry.path(), &to.join(entry.file_name()))?;
        }
        // The directory's own mode and times, as the copy says.
        if let Ok(meta) = std::fs::metadata(from) {
            let _ = std::fs::set_permissions(to, meta.permissions());
            if let (Ok(mtime), Ok(file)) = (meta.modified(), std::fs::File::open(to)) {
                let _ = file.set_times(std::fs::FileTimes::new().set_modified(mtime));
            }
        }
        Ok(())
    } else {
        rename(from, to)
    }
}

/// A private staging directory beside `target`'s place in `dir`: created with mode 0700 under an
/// unpredictable name, removed with everything left in it when dropped.
pub(crate) struct Staging(PathBuf);

impl Staging {
    /// Make one in `dir`.
    pub(crate) fn new(dir: &Path) -> Result<Staging> {
        let name = super::tree::temp_name("gpulab-cp");
        let path = dir.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        Ok(Staging(path))
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            h.set_mtime(1_600_000_000);
            if *kind == tar::EntryType::Symlink {
                h.set_size(0);
                b.append_link(&mut h, name, std::str::from_utf8(data).unwrap())
                    .unwrap();
            } else {
                // Names are written raw, as a hostile tar could.
                let name_bytes = name.as_bytes();
                h.as_old_mut().name[..name_bytes.len()].copy_from_slice(name_bytes);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn names_that_leave_the_target_are_refused() {
        for bad in ["../evil", "a/../../evil", "/etc/evil"] {
            let dir = tempfile::tempdir().unwrap();
            let into = dir.path().join("in");
            std::fs::create_dir(&into).unwrap();
            let stream = tar_of(&[(bad, tar::EntryType::Regular, b"x", 0o644)]);
            let err = unpack(&stream[..], &into, true, |_| {}, |_| {}).unwrap_err();
            assert!(err.to_string().contains("outside"), "{bad}: {err}");
            assert!(!dir.path().join("evil").exists());
        }
    }

    #[test]
    fn modes_are_masked_and_links_come_last() {
        let dir = tempfile::tempdir().unwrap();
        let into = dir.path().join("in");
        std::fs::create_dir(&into).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let stream = tar_of(&[
            ("./", tar::EntryType::Directory, b"", 0o755),
            (
                "./a",
                tar::EntryType::Symlink,
                outside.to_str().unwrap().as_bytes(),
                0o777,
            ),
            ("./a/planted", tar::EntryType::Regular, b"x", 0o644),
            ("./suid", tar::EntryType::Regular, b"y", 0o4755),
            ("./fifo", tar::EntryType::Fifo, b"", 0o644),
        ]);
        let mut skipped = Vec::new();
        let result = unpack(&stream[..], &into, true, |s| skipped.push(s), |_| {});
        // The file went into a real directory `a`, so the link cannot be made there: never through it.
        assert!(result.is_err());
        assert!(!outside.join("planted").exists());
        let mode = std::fs::metadata(into.join("suid"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
    }

    #[test]
    fn a_packed_tree_unpacks_identical() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), b"hello").unwrap();
        std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("l")).unwrap();
        let items = super::super::tree::walk_local(
            &src,
            crate::remote::Links::Keep,
            &crate::events::Silent,
        )
        .unwrap();
        let root = super::super::tree::local_item(String::new(), &std::fs::metadata(&src).unwrap());
        let stream = pack(Vec::new(), &src, "src", &root, &items, |_| {}).unwrap();
        let into = dir.path().join("into");
        std::fs::create_dir(&into).unwrap();
        let done = unpack(&stream[..], &into, true, |_| {}, |_| {}).unwrap();
        assert_eq!(done, Unpacked { files: 1, bytes: 5 });
        assert_eq!(std::fs::read(into.join("src/sub/f")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(into.join("src/l")).unwrap(),
            Path::new("sub/f")
        );
        let mode = std::fs::metadata(into.join("src/sub/f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    /// An upload's progress total is the archive's size, to the byte: files of every padding, empty
    /// directories, names and symlink targets over tar's 100 bytes, links kept or followed.
    #[test]
    fn packed_size_is_the_size_of_the_stream() {
        use crate::remote::tree::{local_item, walk_local};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let deep = root.join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        for (name, len) in [("zero", 0), ("one", 1), ("block", 512), ("more", 513)] {
            std::fs::write(root.join(name), vec![7u8; len]).unwrap();
        }
        std::fs::write(deep.join("c".repeat(30)), b"deep").unwrap();
        std::os::unix::fs::symlink("one", root.join("short-link")).unwrap();
        std::fs::write(root.join("x".repeat(120)), b"far").unwrap();
        std::os::unix::fs::symlink("x".repeat(120), root.join("long-link")).unwrap();
        std::os::unix::fs::symlink("more", root.join("l".repeat(101))).unwrap();

        for links in [crate::remote::Links::Keep, crate::remote::Links::Follow] {
            let items = walk_local(&root, links, &crate::events::Silent).unwrap();
            let item = local_item(String::new(), &std::fs::metadata(&root).unwrap());
            let stream = pack(Vec::new(), &root, "project", &item, &items, |_| {}).unwrap();
            assert_eq!(packed_size("project", &item, &items), stream.len() as u64);
        }
        for file in [root.join("more"), deep.join("c".repeat(30))] {
            let item = local_item(String::new(), &std::fs::metadata(&file).unwrap());
            let name = file.file_name().unwrap().to_str().unwrap().to_owned();
            let stream = pack(Vec::new(), &file, &name, &item, &[], |_| {}).unwrap();
            assert_eq!(packed_size(&name, &item, &[]), stream.len() as u64);
        }
    }
}
