//! `examples/memory_meter.rs`, tested: the parsers of `/proc` and cgroup
//! text, from sample text of hosts this machine is not (v2 only, hybrid, a
//! cgroup namespace), the cgroup files of both versions from a scratch
//! folder, and that a missing source says which files it tried. The test the
//! chapter shows, `touching_16_mib_raises_rss_by_16_mib`, lives in the
//! example and runs here too.

#[cfg(target_os = "linux")]
#[path = "../../examples/memory_meter.rs"]
#[allow(dead_code)]
mod memory_meter;

#[cfg(target_os = "linux")]
mod linux {
    use super::memory_meter::*;
    use std::path::PathBuf;

    #[test]
    fn kib_fields_are_bytes_and_need_their_unit() {
        let text = "Rss:                1748 kB\nPss:                 479 kB\nOdd: 12\n";
        assert_eq!(kib_field(text, "Rss:"), Some(1748 * 1024));
        assert_eq!(kib_field(text, "Pss:"), Some(479 * 1024));
        assert_eq!(kib_field(text, "Odd:"), None, "no kB unit");
        assert_eq!(kib_field(text, "Swap:"), None);
        let huge = format!("Rss: {} kB\n", u64::MAX);
        assert_eq!(kib_field(&huge, "Rss:"), None, "overflow is no value");
    }

    #[test]
    fn psi_lines_are_parsed() {
        let text = "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=789\n";
        let p = parse_pressure(text).unwrap();
        assert_eq!((p.some.avg10, p.some.avg60), (1.5, 0.25));
        assert_eq!(p.some.total_us, 123456);
        assert_eq!(p.full.total_us, 789);
        let no_full = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n");
        assert!(no_full.unwrap_err().contains("`full`"));
        let bad = text.replace("total=789", "total=many");
        assert!(parse_pressure(&bad).unwrap_err().contains("`full`"));
    }

    const MOUNTS: &str = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
";

    #[test]
    fn a_hybrid_host_offers_v2_first_then_v1_memory() {
        let cgroup = "4:memory:/jobs/a b\n1:cpu:/\n0::/\n";
        let dirs = cgroup_dirs(cgroup, MOUNTS);
        assert_eq!(
            dirs,
            vec![
                (Version::V2, PathBuf::from("/sys/fs/cgroup/unified/")),
                (Version::V1, PathBuf::from("/sys/fs/cgroup/memory/jobs/a b")),
            ]
        );
    }

    #[test]
    fn a_v2_only_host_and_a_namespaced_root_are_found() {
        let mounts = "29 23 0:26 /user.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let dirs = cgroup_dirs("0::/user.slice/session 1.scope\n", mounts);
        assert_eq!(
            dirs,
            vec![(Version::V2, PathBuf::from("/sys/fs/cgroup/session 1.scope"))]
        );
        // Outside the mount's root: not reachable from this mount.
        assert!(cgroup_dirs("0::/system.slice\n", mounts).is_empty());
        let escaped = "29 23 0:26 / /sys/fs/my\\040cgroups\\134x rw - cgroup2 cgroup2 rw\n";
        let dirs = cgroup_dirs("0::/x\n", escaped);
        assert_eq!(dirs[0].1, PathBuf::from("/sys/fs/my cgroups\\x/x"));
        assert!(cgroup_dirs("0::/x\n", "").is_empty(), "no mount, no folder");
    }

    /// A scratch folder, removed when dropped.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn v1_unlimited_and_v2_max_both_read_as_no_limit() {
        let dir = std::env::temp_dir().join(format!("memory_meter_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let scratch = Scratch(dir.clone());
        let write = |file: &str, text: &str| std::fs::write(dir.join(file), text).unwrap();
        write("memory.limit_in_bytes", "9223372036854771712\n");
        write("memory.usage_in_bytes", "4452352\n");
        write(
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        write("memory.max", "max\n");
        write("memory.peak", "lots\n");
        let v1 = MemoryCgroup {
            version: Version::V1,
            dir: dir.clone(),
        };
        assert_eq!(v1.limit().unwrap().value, None);
        assert_eq!(v1.usage().unwrap().value, Some(4452352));
        assert_eq!(v1.oom_kills().unwrap().value, 2);
        let v2 = MemoryCgroup {
            version: Version::V2,
            dir: dir.clone(),
        };
        assert_eq!(v2.limit().unwrap().value, None);
        let missing = v2.usage().unwrap_err();
        assert!(missing.contains("memory.current"), "{missing}");
        let garbled = v2.peak().unwrap_err();
        assert!(garbled.contains("`lots` is not a number"), "{garbled}");
        drop(scratch);
    }

    #[test]
    fn a_missing_source_says_why() {
        let err = rss(Some(u32::MAX)).unwrap_err();
        assert!(err.contains("/proc/4294967295/smaps_rollup"), "{err}");
        assert!(err.contains("/proc/4294967295/status"), "{err}");
    }

    #[test]
    fn this_process_has_every_reading() {
        for (what, reading) in [
            ("rss", rss(None)),
            ("pss", pss(None)),
            ("peak", peak_rss(None)),
            ("fast", fast_rss(None)),
            ("virtual", virtual_size(None)),
        ] {
            let r = reading.unwrap_or_else(|why| panic!("{what}: {why}"));
            assert!(r.value > 0, "{what} from {}", r.source);
        }
        let rss = rss(None).unwrap().value;
        assert!(virtual_size(None).unwrap().value >= rss, "VmSize >= RSS");
        assert!(pss(None).unwrap().value <= rss, "PSS <= RSS");
    }
}
