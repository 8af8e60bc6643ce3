//! `cargo xtask vm-setup`: what the test guests boot. Debian's kernels and
//! busybox, fetched with `apt-get download` and unpacked with `dpkg -x`
//! (never installed), made bootable by `guest_image.rs`: each kernel's
//! `vmlinux` for a PVH boot and a busybox initramfs with its virtio and 9p
//! modules. All of it lives in versioned folders beside the book's other
//! tools, so a second run only checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::guest_image::{build_initramfs, decompress_payload, guest_modules, has_pvh_entry};
use crate::vm::{Assets, Boot, Kernel};
use crate::{run, system, tools, Result};

/// The meta-packages whose dependency names the kernel to test: Debian 12's
/// own kernel (6.1) and the 6.12 that bookworm-security carries. Each
/// depends on the newest `linux-image-<release>` of its series.
pub const KERNEL_SERIES: [&str; 2] = ["linux-image-amd64", "linux-image-6.12-amd64"];

const BUSYBOX_PACKAGE: &str = "busybox-static";

/// Bumped when the layout or the way a kernel is prepared changes, so old
/// folders are never half-reused.
const LAYOUT: &str = "vm-1";

/// Marks a folder as complete: written last.
const READY: &str = "ready";

/// The assets file `cargo xtask vm-setup` writes and the tests read.
pub fn assets_file() -> Result<PathBuf> {
    Ok(tools::tools_dir()?.join(LAYOUT).join("assets.json"))
}

/// Installs QEMU and stress-ng if needed, prepares every kernel of
/// [`KERNEL_SERIES`], and writes [`assets_file`].
pub fn setup() -> Result<Assets> {
    let needed_for = "the kernel matrix (QEMU guests)";
    let qemu = system::require(&["qemu-system-x86_64"], "qemu-system-x86", needed_for)?;
    let qboot = system::require_file(
        Path::new("/usr/share/qemu/qboot.rom"),
        "qemu-system-data",
        needed_for,
    )?;
    system::require(&["stress-ng"], "stress-ng", needed_for)?;
    system::require(&["apt-get"], "apt", needed_for)?;
    system::require(&["dpkg"], "dpkg", needed_for)?;

    let base = tools::tools_dir()?.join(LAYOUT);
    std::fs::create_dir_all(&base)?;
    // Clones of the book share this folder: one setup at a time.
    let lock = std::fs::File::create(base.join("setup.lock"))?;
    if lock.try_lock().is_err() {
        eprintln!(
            "xtask: another vm-setup is preparing {}; waiting",
            base.display()
        );
        lock.lock()?;
    }
    let mut apt = Apt::default();
    let packages = apt.kernels_of(&KERNEL_SERIES)?;
    let mut wanted: Vec<&str> = vec![BUSYBOX_PACKAGE];
    wanted.extend(packages.iter().map(String::as_str));
    let versions = apt.candidates(&wanted)?;
    let busybox = prepare_busybox(&base, &versions[0], &mut apt)?;
    let mut kernels = Vec::new();
    for (package, version) in packages.into_iter().zip(versions.into_iter().skip(1)) {
        let dir = prepare_kernel(&base, &package, &version, &mut apt)?;
        let release = std::fs::read_to_string(dir.join("release"))?
            .trim()
            .to_owned();
        let (image, boot) = if dir.join("vmlinux").exists() {
            (dir.join("vmlinux"), Boot::Pvh)
        } else {
            (dir.join("vmlinuz"), Boot::BzImage)
        };
        let initramfs = build_initramfs(&base, &dir, &release, &busybox)?;
        kernels.push(Kernel {
            release,
            package,
            version,
            image,
            boot,
            initramfs,
        });
    }
    let assets = Assets {
        qemu,
        qboot,
        kernels,
    };
    assets.save(&assets_file()?)?;
    prune(&base, &assets, &busybox)?;
    Ok(assets)
}

/// Removes the kernels, busybox builds and initramfs images that `assets`
/// no longer uses (a kernel that Debian has since replaced), and any
/// half-built folder.
fn prune(base: &Path, assets: &Assets, busybox: &Path) -> Result<()> {
    let mut keep: Vec<PathBuf> = vec![busybox.parent().expect("in a folder").to_path_buf()];
    for k in &assets.kernels {
        keep.push(k.image.parent().expect("in a folder").to_path_buf());
        keep.push(k.initramfs.clone());
    }
    let mut candidates = Vec::new();
    for dir in [base.to_path_buf(), base.join("initramfs")] {
        for entry in std::fs::read_dir(&dir)? {
            candidates.push(entry?.path());
        }
    }
    for path in candidates {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let ours = name.starts_with("linux-image-")
            || name.starts_with(BUSYBOX_PACKAGE)
            || name.ends_with(".cpio")
            || name.ends_with(".partial");
        if ours && !keep.contains(&path) {
            eprintln!("xtask: removing {}, no longer used", path.display());
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
    Ok(())
}

/// `apt-cache` and `apt-get download`, with one `apt-get update` (as root)
/// when the package lists do not know a package yet. apt-cache takes most
/// of a second a call here, so each question covers every package at once.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    /// For each meta-package, the `linux-image-<release>` it depends on.
    fn kernels_of(&mut self, metas: &[&str]) -> Result<Vec<String>> {
        self.ask(&["depends"], metas, |block| {
            block
                .iter()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .map(str::trim)
                .find(|p| p.starts_with("linux-image-") && p.contains('.'))
                .map(str::to_owned)
        })
    }

    /// The version `apt-get download` would fetch, for each package.
    fn candidates(&mut self, packages: &[&str]) -> Result<Vec<String>> {
        self.ask(&["policy"], packages, |block| {
            block
                .iter()
                .find_map(|l| l.trim().strip_prefix("Candidate: "))
                .map(str::trim)
                .filter(|v| *v != "(none)")
                .map(str::to_owned)
        })
    }

    /// Runs `apt-cache QUESTION packages...` and reads each package's block
    /// (its `name:` or `name` line and the indented lines under it) with
    /// `read`. Fails, with the command that fixes it, for a package apt does
    /// not know.
    fn ask(
        &mut self,
        question: &[&str],
        packages: &[&str],
        read: impl Fn(&[&str]) -> Option<String>,
    ) -> Result<Vec<String>> {
        loop {
            let out = Command::new("apt-cache")
                .args(question)
                .args(packages)
                .stderr(Stdio::null())
                .output()
                .map_err(|e| format!("cannot start apt-cache: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = text.lines().collect();
            let answers: Vec<Option<String>> = packages
                .iter()
                .map(|p| {
                    let start = lines.iter().position(|l| l.trim_end_matches(':') == *p)?;
                    let len = lines[start + 1..]
                        .iter()
                        .take_while(|l| l.starts_with(' '))
                        .count();
                    read(&lines[start + 1..start + 1 + len])
                })
                .collect();
            let missing: Vec<&str> = packages
                .iter()
                .zip(&answers)
                .filter(|(_, a)| a.is_none())
                .map(|(p, _)| *p)
                .collect();
            if missing.is_empty() {
                return Ok(answers.into_iter().flatten().collect());
            }
            if system::is_root() && !self.updated {
                eprintln!("xtask: apt does not know {missing:?} yet; running apt-get update");
                run(Command::new("apt-get").arg("update"), "apt-get update")?;
                self.updated = true;
                continue;
            }
            return Err(format!(
                "Debian's package `{}` is not in this machine's apt lists (`apt-cache {} {}` \
                 answers nothing). Run `sudo apt-get update`; if it is still missing, this \
                 machine's apt sources lack Debian 12's `bookworm` and `bookworm-security` \
                 suites, where the guests' kernels come from",
                missing[0],
                question.join(" "),
                missing[0]
            )
            .into());
        }
    }

    /// `apt-get download package=version` into `dir`; returns the .deb.
    fn download(&mut self, package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        eprintln!("xtask: downloading Debian's {package} {version}");
        let mut download = Command::new("apt-get");
        if system::is_root() {
            // apt's download sandbox user cannot write to root's cache.
            download.args(["-o", "APT::Sandbox::User=root"]);
        }
        run(
            download
                .args(["download", "-q", &format!("{package}={version}")])
                .current_dir(dir),
            &format!("apt-get download {package}"),
        )?;
        std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .ok_or_else(|| format!("apt-get download {package} left no .deb").into())
    }
}

/// A package's folder: `<base>/<package>_<version>`, built in a scratch
/// folder by `fill` and renamed into place only when complete.
fn versioned_folder(
    base: &Path,
    package: &str,
    version: &str,
    fill: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<PathBuf> {
    let name = format!("{package}_{}", version.replace([':', '~'], "_"));
    let dir = base.join(&name);
    if dir.join(READY).exists() {
        return Ok(dir);
    }
    let scratch = base.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&scratch);
    let unpacked = scratch.join("unpacked");
    std::fs::create_dir_all(&unpacked)?;
    let result = fill(&scratch, &unpacked);
    let _ = std::fs::remove_dir_all(&unpacked);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(e);
    }
    std::fs::write(scratch.join(READY), "")?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&scratch, &dir)?;
    Ok(dir)
}

fn unpack(apt: &mut Apt, package: &str, version: &str, scratch: &Path, into: &Path) -> Result<()> {
    let deb = apt.download(package, version, &scratch.join("deb"))?;
    run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(into),
        &format!("dpkg -x {}", deb.display()),
    )?;
    std::fs::remove_dir_all(scratch.join("deb"))?;
    Ok(())
}

/// `<base>/busybox-static_<version>/busybox`.
fn prepare_busybox(base: &Path, version: &str, apt: &mut Apt) -> Result<PathBuf> {
    let dir = versioned_folder(base, BUSYBOX_PACKAGE, version, |scratch, unpacked| {
        unpack(apt, BUSYBOX_PACKAGE, version, scratch, unpacked)?;
        std::fs::copy(unpacked.join("bin/busybox"), scratch.join("busybox"))?;
        Ok(())
    })?;
    Ok(dir.join("busybox"))
}

/// `<base>/<package>_<version>/`: `vmlinuz`, `vmlinux` (if it can boot by
/// PVH), `release`, and `modules/` with the guest's modules in load order.
fn prepare_kernel(base: &Path, package: &str, version: &str, apt: &mut Apt) -> Result<PathBuf> {
    versioned_folder(base, package, version, |scratch, unpacked| {
        unpack(apt, package, version, scratch, unpacked)?;
        let release = package
            .strip_prefix("linux-image-")
            .ok_or_else(|| format!("{package}: not a linux-image package"))?;
        let modules_root = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| unpacked.join(d).join(release))
            .find(|d| d.is_dir())
            .ok_or_else(|| format!("{package} has no lib/modules/{release}"))?;
        let vmlinuz = unpacked.join("boot").join(format!("vmlinuz-{release}"));
        std::fs::copy(&vmlinuz, scratch.join("vmlinuz"))
            .map_err(|e| format!("{}: {e}", vmlinuz.display()))?;
        let bzimage = std::fs::read(&vmlinuz)?;
        let vmlinux = decompress_payload(&bzimage).map_err(|e| format!("{package}: {e}"))?;
        if has_pvh_entry(&vmlinux).map_err(|e| format!("{package}: vmlinux: {e}"))? {
            std::fs::write(scratch.join("vmlinux"), &vmlinux)?;
        } else {
            eprintln!(
                "xtask: {release} has no PVH entry note; its guests boot the bzImage (slower)"
            );
        }
        let modules = guest_modules(&modules_root).map_err(|e| format!("{package}: {e}"))?;
        let dir = scratch.join("modules");
        std::fs::create_dir_all(&dir)?;
        let mut order = String::new();
        for (name, bytes) in modules {
            std::fs::write(dir.join(format!("{name}.ko")), bytes)?;
            order.push_str(&name);
            order.push('\n');
        }
        std::fs::write(scratch.join("modules.order"), order)?;
        std::fs::write(scratch.join("release"), format!("{release}\n"))?;
        Ok(())
    })
}
