//! What makes a Debian kernel package bootable in a test guest: the ELF
//! `vmlinux` inside its bzImage (for a PVH boot), the virtio and 9p modules
//! it needs in load order, and a busybox initramfs holding them and the
//! guest's `/init` (`tests/support/vm/init.sh`). Used by `vm_assets.rs`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use object::read::elf::{ElfFile64, SectionHeader};
use object::{Object, ObjectSection};

use crate::vm::{GUEST_MODULES, GUEST_TOOLS_DIR, INIT_SCRIPT};
use crate::{system, Result};

// ---------------------------------------------------------------------------
// The kernel image
// ---------------------------------------------------------------------------

/// The bzImage's payload, decompressed: the kernel's ELF `vmlinux` (with the
/// relocation table the build appends, which an ELF loader ignores). The
/// payload's place comes from the setup header (Documentation/arch/x86/boot.rst):
/// `setup_sects` at 0x1f1, `payload_offset` and `payload_length` at 0x248
/// and 0x24c (boot protocol 2.08+); the payload's last four bytes are the
/// decompressed size.
pub fn decompress_payload(bzimage: &[u8]) -> Result<Vec<u8>> {
    let u16_at = |at: usize| {
        bzimage
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bzimage
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage (no HdrS setup header)".into());
    }
    let protocol = u16_at(0x206).ok_or("truncated setup header")?;
    if protocol < 0x208 {
        return Err(format!("boot protocol {protocol:#x} has no payload fields").into());
    }
    let setup_sects = match bzimage[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let offset = u32_at(0x248).ok_or("truncated setup header")? as usize;
    let length = u32_at(0x24c).ok_or("truncated setup header")? as usize;
    let start = (setup_sects + 1) * 512 + offset;
    let payload = start
        .checked_add(length)
        .and_then(|end| bzimage.get(start..end))
        .filter(|p| p.len() > 4)
        .ok_or("the payload lies outside the file")?;
    let (compressed, size) = payload.split_at(payload.len() - 4);
    let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
    let tool = match compressed {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => {
            system::require(&["xz"], "xz-utils", "unpacking an xz-compressed kernel")?
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            system::require(&["zstd"], "zstd", "unpacking a zstd-compressed kernel")?
        }
        [0x1f, 0x8b, ..] => system::require(&["gzip"], "gzip", "unpacking a gzip kernel")?,
        other => {
            let head: Vec<String> = other.iter().take(6).map(|b| format!("{b:02x}")).collect();
            return Err(format!("unknown payload compression (starts {})", head.join(" ")).into());
        }
    };
    let vmlinux = filter(&tool, &["-dc"], compressed)?;
    if vmlinux.len() != size {
        return Err(format!(
            "{} gave {} bytes, the header says {size}",
            tool.display(),
            vmlinux.len()
        )
        .into());
    }
    if !vmlinux.starts_with(b"\x7fELF") {
        return Err("the payload is not an ELF file".into());
    }
    Ok(vmlinux)
}

/// Whether the kernel has a `XEN_ELFNOTE_PHYS32_ENTRY` note: the PVH entry
/// point QEMU jumps to when it loads an ELF kernel.
pub fn has_pvh_entry(vmlinux: &[u8]) -> Result<bool> {
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let elf = ElfFile64::<object::Endianness>::parse(vmlinux)?;
    let endian = elf.endian();
    for section in elf.elf_section_table().iter() {
        if let Some(mut notes) = section.notes(endian, vmlinux)? {
            while let Some(note) = notes.next()? {
                if note.name() == b"Xen" && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

// ---------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------

/// The guest's modules and all they depend on, dependencies first, as
/// `(name, uncompressed .ko)`. Modules the kernel has built in are skipped.
pub fn guest_modules(modules_root: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![modules_root.join("kernel")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                pending.push(path.clone());
            } else if let Some(stem) = [".ko", ".ko.xz", ".ko.zst"]
                .iter()
                .find_map(|ext| name.strip_suffix(ext))
            {
                files.insert(stem.replace('-', "_"), path.clone());
            }
        }
    }
    let builtin = std::fs::read_to_string(modules_root.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin
        .lines()
        .filter_map(|l| l.rsplit('/').next()?.strip_suffix(".ko"))
        .map(|n| n.replace('-', "_"))
        .collect();
    let mut loader = Loader {
        files,
        order: Vec::new(),
    };
    for wanted in GUEST_MODULES {
        if loader.files.contains_key(wanted) {
            loader.visit(wanted, &mut Vec::new())?;
        } else if !builtin.iter().any(|b| b == wanted) {
            return Err(format!(
                "{} has neither a module nor a built-in `{wanted}`",
                modules_root.display()
            )
            .into());
        }
    }
    Ok(loader.order)
}

struct Loader {
    files: BTreeMap<String, PathBuf>,
    order: Vec<(String, Vec<u8>)>,
}

impl Loader {
    /// Depth first: a module goes in after everything it depends on.
    fn visit(&mut self, name: &str, path: &mut Vec<String>) -> Result<()> {
        if self.order.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            return Err(format!("modules depend on each other in a cycle: {path:?}").into());
        }
        let file = self
            .files
            .get(name)
            .ok_or_else(|| format!("no module file for `{name}` (needed by {path:?})"))?
            .clone();
        let bytes = read_module(&file)?;
        let depends = modinfo(&bytes, "depends").map_err(|e| format!("{}: {e}", file.display()))?;
        path.push(name.to_owned());
        for dep in depends
            .iter()
            .flat_map(|d| d.split(','))
            .filter(|d| !d.is_empty())
        {
            self.visit(&dep.replace('-', "_"), path)?;
        }
        path.pop();
        self.order.push((name.to_owned(), bytes));
        Ok(())
    }
}

/// A module file's ELF bytes (`.ko.xz` and `.ko.zst` decompressed: busybox's
/// insmod loads plain ELF).
fn read_module(file: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let name = file.to_string_lossy();
    if name.ends_with(".xz") {
        filter(
            &system::require(&["xz"], "xz-utils", "reading modules")?,
            &["-dc"],
            &bytes,
        )
    } else if name.ends_with(".zst") {
        filter(
            &system::require(&["zstd"], "zstd", "reading modules")?,
            &["-dc"],
            &bytes,
        )
    } else {
        Ok(bytes)
    }
}

/// The values of `key=` in a module's `.modinfo` section.
pub fn modinfo(module: &[u8], key: &str) -> Result<Vec<String>> {
    let file = object::File::parse(module)?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or("no .modinfo section")?;
    let data = section.data()?;
    let prefix = format!("{key}=");
    Ok(data
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok()?.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect())
}

/// Runs `tool args` with `input` on stdin; returns its stdout.
fn filter(tool: &Path, args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", tool.display()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let out = std::thread::scope(|scope| {
        let writer = scope.spawn(move || stdin.write_all(input));
        let out = child.wait_with_output();
        (writer.join(), out)
    });
    let output = out.1?;
    if !output.status.success() {
        return Err(format!("{} {}: {}", tool.display(), args.join(" "), output.status).into());
    }
    match out.0 {
        Ok(Ok(())) => Ok(output.stdout),
        _ => Err(format!("{}: could not write its input", tool.display()).into()),
    }
}

// ---------------------------------------------------------------------------
// The initramfs
// ---------------------------------------------------------------------------

/// `<base>/initramfs/<release>-<hash>.cpio`, rebuilt whenever the init
/// script, busybox or the modules change (they make up the hash).
pub fn build_initramfs(
    base: &Path,
    kernel_dir: &Path,
    release: &str,
    busybox: &Path,
) -> Result<PathBuf> {
    let order = std::fs::read_to_string(kernel_dir.join("modules.order"))?;
    let mut hash = Fnv::default();
    hash.add(INIT_SCRIPT.as_bytes());
    hash.add(busybox.to_string_lossy().as_bytes());
    hash.add(kernel_dir.to_string_lossy().as_bytes());
    let path = base
        .join("initramfs")
        .join(format!("{release}-{:016x}.cpio", hash.0));
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    let mut archive = Cpio::default();
    for dir in [
        "dev", "proc", "sys", "tmp", "run", "root", "usr", "etc", "mnt",
    ] {
        archive.dir(dir);
    }
    // Debian's merged /usr: the host's programs, shared over 9p at /usr,
    // find their loader and libraries through these links.
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        archive.symlink(link, target);
    }
    archive.char_device("dev/console", 5, 1);
    archive.file("init", 0o755, INIT_SCRIPT.as_bytes());
    let tools = GUEST_TOOLS_DIR.trim_start_matches('/');
    archive.dir(tools);
    archive.dir(&format!("{tools}/bin"));
    archive.dir(&format!("{tools}/modules"));
    archive.file(
        &format!("{tools}/bin/busybox"),
        0o755,
        &std::fs::read(busybox)?,
    );
    archive.file(&format!("{tools}/modules.order"), 0o644, order.as_bytes());
    for name in order.lines() {
        let ko = std::fs::read(kernel_dir.join("modules").join(format!("{name}.ko")))?;
        archive.file(&format!("{tools}/modules/{name}.ko"), 0o644, &ko);
    }
    let bytes = archive.finish()?;
    let scratch = path.with_extension("partial");
    std::fs::write(&scratch, bytes)?;
    std::fs::rename(&scratch, &path)?;
    Ok(path)
}

/// A newc archive, written with the `cpio` crate.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
    error: Option<std::io::Error>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let builder = cpio::newc::Builder::new(name)
            .ino(self.next_ino)
            .mode(mode)
            .nlink(if mode & 0o170000 == 0o040000 { 2 } else { 1 })
            .rdev_major(rdev.0)
            .rdev_minor(rdev.1);
        let result = (|| {
            let size = u32::try_from(data.len()).map_err(std::io::Error::other)?;
            let mut writer = builder.write(&mut self.out, size);
            writer.write_all(data)?;
            writer.finish().map(|_| ())
        })();
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), b"");
    }

    fn file(&mut self, name: &str, permissions: u32, data: &[u8]) {
        self.entry(name, 0o100000 | permissions, (0, 0), data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), b"");
    }

    fn finish(mut self) -> Result<Vec<u8>> {
        if let Some(e) = self.error {
            return Err(format!("writing the initramfs: {e}").into());
        }
        cpio::newc::trailer(&mut self.out)?;
        Ok(self.out)
    }
}

/// FNV-1a, 64 bits: names a cache entry, nothing more.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = (self.0 ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: the setup header fields `decompress_payload` reads
    /// around a gzip payload of `content` (gzip is always on a test machine).
    fn fake_bzimage(content: &[u8]) -> Vec<u8> {
        let gz = filter(Path::new("gzip"), &["-c"], content).unwrap();
        let mut payload = gz;
        payload.extend((content.len() as u32).to_le_bytes());
        let mut image = vec![0u8; 3 * 512];
        image[0x1f1] = 2; // setup_sects: the payload area starts at 3 * 512
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend([0xAA; 16]);
        image.extend(payload);
        image.extend(b"signature that follows the payload");
        image
    }

    #[test]
    fn finds_the_payload_through_the_setup_header() {
        let elf = b"\x7fELF and the rest of a kernel".to_vec();
        assert_eq!(decompress_payload(&fake_bzimage(&elf)).unwrap(), elf);
    }

    #[test]
    fn rejects_what_is_not_a_bzimage() {
        let err = decompress_payload(&[0; 4096]).unwrap_err().to_string();
        assert!(err.contains("HdrS"), "{err}");
        let not_elf = decompress_payload(&fake_bzimage(b"plain text")).unwrap_err();
        assert!(not_elf.to_string().contains("not an ELF"), "{not_elf}");
    }

    #[test]
    fn writes_a_newc_archive_the_cpio_reader_reads_back() {
        let mut archive = Cpio::default();
        archive.dir("dmb");
        archive.file("init", 0o755, b"#!/bin/sh\n");
        archive.symlink("bin", "usr/bin");
        let bytes = archive.finish().unwrap();
        let mut reader = std::io::Cursor::new(bytes);
        let mut seen = Vec::new();
        loop {
            let entry = cpio::newc::Reader::new(&mut reader).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            seen.push((entry.entry().name().to_owned(), entry.entry().mode()));
            entry.finish().unwrap();
        }
        assert_eq!(
            seen,
            [
                ("dmb".to_owned(), 0o040755),
                ("init".to_owned(), 0o100755),
                ("bin".to_owned(), 0o120777)
            ]
        );
    }
}
