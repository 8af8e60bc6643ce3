//! What a guest boots from: the kernels and initramfs images that
//! `cargo xtask vm-setup` prepares, listed in one JSON file.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::error::VmError;

/// The variable that names the assets file; `cargo xtask vm-setup` prints
/// it, and `cargo xtask test` sets it for `cargo test`.
pub const ASSETS_ENV: &str = "DMB_VM_ASSETS";

/// How QEMU loads a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// An ELF `vmlinux` with a PVH entry note, with qboot as the firmware:
    /// no real-mode setup and no decompression in the guest, seconds faster
    /// under TCG.
    Pvh,
    /// The packaged `bzImage` with QEMU's default firmware (SeaBIOS).
    BzImage,
}

impl Boot {
    fn name(self) -> &'static str {
        match self {
            Boot::Pvh => "pvh",
            Boot::BzImage => "bzimage",
        }
    }
}

/// One guest kernel and the initramfs built from its modules.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// `uname -r` in the guest, e.g. `6.1.0-57-amd64`.
    pub release: String,
    /// The Debian package it came from, with its version.
    pub package: String,
    pub version: String,
    pub image: PathBuf,
    pub boot: Boot,
    pub initramfs: PathBuf,
}

/// QEMU, its firmware, and the kernels to boot.
#[derive(Debug, Clone, PartialEq)]
pub struct Assets {
    pub qemu: PathBuf,
    /// qboot, for [`Boot::Pvh`] kernels.
    pub qboot: PathBuf,
    pub kernels: Vec<Kernel>,
}

impl Assets {
    /// The assets named by `$DMB_VM_ASSETS`; `None` if it is not set.
    pub fn from_env() -> Result<Option<Assets>, VmError> {
        match std::env::var_os(ASSETS_ENV) {
            Some(path) => Assets::load(Path::new(&path)).map(Some),
            None => Ok(None),
        }
    }

    pub fn load(path: &Path) -> Result<Assets, VmError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| VmError::config(format!("{}: {e}", path.display())))?;
        Assets::from_json(&text).map_err(|e| VmError::config(format!("{}: {e}", path.display())))
    }

    pub fn save(&self, path: &Path) -> Result<(), VmError> {
        let text = serde_json::to_string_pretty(&self.to_json()).expect("JSON values serialize");
        std::fs::write(path, text + "\n")
            .map_err(|e| VmError::config(format!("{}: {e}", path.display())))
    }

    /// The kernel whose `uname -r` is `release`.
    pub fn kernel(&self, release: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.release == release)
    }

    fn to_json(&self) -> Value {
        let kernels: Vec<Value> = self
            .kernels
            .iter()
            .map(|k| {
                json!({
                    "release": k.release,
                    "package": k.package,
                    "version": k.version,
                    "image": k.image,
                    "boot": k.boot.name(),
                    "initramfs": k.initramfs,
                })
            })
            .collect();
        json!({ "qemu": self.qemu, "qboot": self.qboot, "kernels": kernels })
    }

    fn from_json(text: &str) -> Result<Assets, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let string = |v: &Value, key: &str| -> Result<String, String> {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("no string `{key}`"))
        };
        let kernels = v
            .get("kernels")
            .and_then(Value::as_array)
            .ok_or("no `kernels` list")?
            .iter()
            .map(|k| {
                Ok(Kernel {
                    release: string(k, "release")?,
                    package: string(k, "package")?,
                    version: string(k, "version")?,
                    image: string(k, "image")?.into(),
                    boot: match string(k, "boot")?.as_str() {
                        "pvh" => Boot::Pvh,
                        "bzimage" => Boot::BzImage,
                        other => return Err(format!("unknown boot `{other}`")),
                    },
                    initramfs: string(k, "initramfs")?.into(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Assets {
            qemu: string(&v, "qemu")?.into(),
            qboot: string(&v, "qboot")?.into(),
            kernels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let assets = Assets {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            qboot: "/usr/share/qemu/qboot.rom".into(),
            kernels: vec![Kernel {
                release: "6.1.0-57-amd64".into(),
                package: "linux-image-6.1.0-57-amd64".into(),
                version: "6.1.192-3".into(),
                image: "/cache/vmlinux".into(),
                boot: Boot::Pvh,
                initramfs: "/cache/initramfs.cpio".into(),
            }],
        };
        let text = serde_json::to_string(&assets.to_json()).unwrap();
        assert_eq!(Assets::from_json(&text).unwrap(), assets);
    }
}
