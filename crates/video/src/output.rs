//! Atomic outputs: every writer fills a temporary file (or folder, for png frames) beside the
//! destination, which is renamed into place only once complete; on any error the temporary is
//! removed and the destination is left as it was.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// The destination's folder, which must exist.
pub(crate) fn parent_dir(path: &Path) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::MissingParent {
            path: path.to_path_buf(),
            dir,
        });
    }
    Ok(dir)
}

/// A fresh hidden name beside `path`: `.{name}.{pid}.{n}.{suffix}`.
fn sibling(dir: &Path, path: &Path, suffix: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "video".into());
    dir.join(format!(".{name}.{}.{n}.{suffix}", std::process::id()))
}

/// Runs `fill` on a temporary file beside `path`, syncs it, then renames it onto `path`. On
/// any error the temporary is removed.
pub(crate) fn write_file(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = parent_dir(path)?;
    let tmp = sibling(&dir, path, "partial");
    let result = fill(&tmp).and_then(|()| {
        // Flush to disk before the rename, so a crash cannot leave a complete name over
        // incomplete data.
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether `name` is `frame_<digits>.png`, a file an earlier png-frames write made.
pub(crate) fn is_frame_name(name: &str) -> bool {
    name.strip_prefix("frame_")
        .and_then(|r| r.strip_suffix(".png"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Runs `fill` on a temporary folder beside `path`, then puts it in place of `path`.
///
/// The rule for an existing `path`: it must be a folder that is empty or holds only
/// `frame_<digits>.png` files (an earlier png-frames output); those are replaced as a whole.
/// Anything else there is refused before anything is written.
pub(crate) fn write_folder(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = parent_dir(path)?;
    let exists = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => true,
        Ok(_) => {
            return Err(Error::NotAFolder {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io(path, e)),
    };
    if exists {
        for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let entry = entry.map_err(|e| Error::io(path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry.file_type().map_err(|e| Error::io(entry.path(), e))?.is_file();
            if !is_file || !is_frame_name(&name) {
                return Err(Error::FolderNotEmpty {
                    path: path.to_path_buf(),
                    entry: name,
                });
            }
        }
    }
    let tmp = sibling(&dir, path, "partial");
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if !exists {
        return std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            Error::io(path, e)
        });
    }
    // Move the old frames aside, put the new ones in place, then delete the old ones; if the
    // second rename fails, put the old folder back.
    let old = sibling(&dir, path, "old");
    if let Err(e) = std::fs::rename(path, &old) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::io(path, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::rename(&old, path);
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::io(path, e));
    }
    std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))
}
