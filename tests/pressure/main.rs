//! `examples/pressure.rs`, tested: the budget keeps its margin free and
//! refuses what it cannot check, `/proc/meminfo` is read in bytes, and the
//! `madvise` probe tells known advice from unknown, and (as root, with
//! `-- --ignored`) that populating does not stop a memory cgroup's OOM
//! killer. The test the chapter shows,
//! `taken_pages_are_resident_and_released_pages_are_not`, lives in the
//! example and runs here too.

#[cfg(target_os = "linux")]
#[path = "../../examples/pressure.rs"]
#[allow(dead_code)]
mod pressure;
#[cfg(target_os = "linux")]
#[path = "../support/mod.rs"]
mod support;

#[cfg(target_os = "linux")]
mod linux {
    use super::pressure::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_budget_keeps_a_margin_free() {
        let info = || {
            Ok(MemInfo {
                total: 16 * GIB,
                available: 4 * GIB,
            })
        };
        // 10% of 16 GiB = 1.6 GiB margin: 2.4 GiB may be taken.
        let note = check_budget(2 * GIB, info(), false).unwrap();
        assert!(note.contains("so up to 2457 MiB may be taken"), "{note}");
        let refused = check_budget(3 * GIB, info(), false).unwrap_err();
        assert!(refused.contains("refusing to take 3072 MiB"), "{refused}");
        let forced = check_budget(3 * GIB, info(), true).unwrap();
        assert!(forced.contains("anyway (--force)"), "{forced}");
        // A small machine keeps at least 256 MiB free.
        assert_eq!(safety_margin(GIB), 256 << 20);
        let small = MemInfo {
            total: GIB,
            available: 200 << 20,
        };
        assert!(
            check_budget(1 << 20, Ok(small), false).is_err(),
            "all below the margin"
        );
    }

    #[test]
    fn an_unreadable_meminfo_is_refused_unless_forced() {
        let unreadable = check_budget(1, Err("no /proc".into()), false).unwrap_err();
        assert!(unreadable.contains("no /proc"), "{unreadable}");
        assert!(unreadable.contains("pass --force"), "{unreadable}");
        assert!(check_budget(1, Err("no /proc".into()), true).is_ok());
    }

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       24683652 kB\nMemFree: 1 kB\nMemAvailable:   24233204 kB\n";
        let info = parse_meminfo(text).unwrap();
        assert_eq!(info.total, 24683652 * 1024);
        assert_eq!(info.available, 24233204 * 1024);
        let missing = parse_meminfo("MemTotal: 1 kB\n").unwrap_err();
        assert!(missing.contains("MemAvailable"), "{missing}");
        let huge = format!("MemTotal: {} kB\nMemAvailable: 1 kB\n", u64::MAX);
        assert!(parse_meminfo(&huge).is_err(), "overflow is no value");
    }

    #[test]
    fn the_probe_tells_known_advice_from_unknown() {
        assert!(advice_supported(libc::MADV_DONTNEED));
        assert!(!advice_supported(12345), "no such advice");
    }

    #[test]
    fn write_is_always_available_and_auto_picks_what_the_kernel_has() {
        assert_eq!(choose(Some(Method::Write)), Ok(Method::Write));
        let populate = advice_supported(libc::MADV_POPULATE_WRITE);
        let auto = if populate {
            Method::Populate
        } else {
            Method::Write
        };
        assert_eq!(choose(None), Ok(auto));
        assert_eq!(choose(Some(Method::Populate)).is_ok(), populate);
    }

    #[test]
    fn rss_is_read_from_smaps_rollup() {
        let rss = rss(None).unwrap();
        assert!(rss.value > 0);
        assert_eq!(rss.source, "/proc/self/smaps_rollup (Rss)");
    }
}

/// `MADV_POPULATE_WRITE` returns errors where the kernel has one; a memory
/// cgroup at its limit has none to return. Its OOM killer runs first, and
/// kills the process that is populating, exactly as it kills one that
/// writes. The test makes a 32 MiB memory cgroup below this process's own,
/// and runs itself in it as a child, once per way of touching, asked to
/// take 64 MiB in one step.
#[cfg(target_os = "linux")]
mod cgroup_oom {
    use super::pressure::*;
    use super::support::child as support_child;
    use std::os::unix::process::ExitStatusExt;
    use std::path::PathBuf;
    use std::time::Duration;

    use std::path::Path;

    const MIB: usize = 1 << 20;
    const PROCS: &str = "PRESSURE_TEST_CGROUP_PROCS";
    const TOUCH: &str = "PRESSURE_TEST_TOUCH";
    const NAME: &str = "cgroup_oom::populating_does_not_stop_the_cgroup_oom_killer";

    /// A memory cgroup folder, and whether it is cgroup v2.
    struct Cgroup {
        dir: PathBuf,
        v2: bool,
    }

    /// This process's memory cgroup, the simple way: at the usual mount
    /// points. (`examples/memory_meter.rs` reads mountinfo and does it
    /// properly, but including it here would run its RSS test beside this
    /// file's tests, which map memory while it measures.)
    fn memory_cgroup() -> Option<Cgroup> {
        let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mut found = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            let v1 = Path::new("/sys/fs/cgroup/memory").join(path);
            if controllers.split(',').any(|c| c == "memory")
                && v1.join("memory.limit_in_bytes").exists()
            {
                found = Some(Cgroup { dir: v1, v2: false });
            }
            let v2 = Path::new("/sys/fs/cgroup").join(path);
            if id == "0" && v2.join("memory.max").exists() {
                return Some(Cgroup { dir: v2, v2: true });
            }
        }
        found
    }

    impl Cgroup {
        /// `oom_kill` in v2's `memory.events` or v1's `memory.oom_control`.
        fn oom_kills(&self) -> u64 {
            let file = if self.v2 {
                "memory.events"
            } else {
                "memory.oom_control"
            };
            let text = std::fs::read_to_string(self.dir.join(file)).expect(file);
            let line = text.lines().find_map(|l| l.strip_prefix("oom_kill "));
            line.and_then(|n| n.trim().parse().ok())
                .expect("an oom_kill line")
        }
    }

    /// The scratch cgroup, removed when dropped.
    struct Scratch(Cgroup);

    impl Drop for Scratch {
        fn drop(&mut self) {
            // A killed child leaves the cgroup a moment after it is reaped.
            for _ in 0..200 {
                if std::fs::remove_dir(&self.0.dir).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!(
                "could not remove the scratch cgroup {}",
                self.0.dir.display()
            );
        }
    }

    // ANCHOR: cgroup_child
    /// The child: move into the cgroup, then take 64 MiB in one step.
    fn child(procs: &str) {
        // "0" moves the writing process (`cgroup_procs_write_start`).
        std::fs::write(procs, "0").expect("join the scratch cgroup");
        println!("child: in the cgroup");
        let method = match std::env::var(TOUCH).as_deref() {
            Ok("populate") => Method::Populate,
            _ => Method::Write,
        };
        let mut generator = Generator::new(method).expect("page size");
        let result = generator.take(64 * MIB, &mut |_| {});
        println!("child: take returned {result:?}: it should have been killed");
    }
    // ANCHOR_END: cgroup_child

    fn scratch_cgroup() -> Scratch {
        let fix = "run it as root, on a host with a memory cgroup: sudo cargo test --test pressure -- --ignored";
        let parent =
            memory_cgroup().unwrap_or_else(|| panic!("no writable memory cgroup found; {fix}"));
        let dir = parent
            .dir
            .join(format!("pressure-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot make a cgroup ({e}); {fix}"));
        let scratch = Scratch(Cgroup { dir, v2: parent.v2 });
        let limit = (32 * MIB).to_string();
        let (max, swap, swap_limit) = match parent.v2 {
            true => ("memory.max", "memory.swap.max", "0"),
            false => (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                limit.as_str(),
            ),
        };
        let at = |file: &str| scratch.0.dir.join(file);
        std::fs::write(at(max), &limit).unwrap_or_else(|e| panic!("{max}: {e}; {fix}"));
        // Where swap is counted, the cgroup may not swap its way out either.
        if at(swap).exists() {
            std::fs::write(at(swap), swap_limit).unwrap_or_else(|e| panic!("{swap}: {e}"));
        }
        scratch
    }

    #[test]
    #[ignore = "needs root: it makes a memory cgroup (run with -- --ignored)"]
    fn populating_does_not_stop_the_cgroup_oom_killer() {
        if let Ok(procs) = std::env::var(PROCS) {
            return child(&procs);
        }
        let scratch = scratch_cgroup();
        let procs: PathBuf = scratch.0.dir.join("cgroup.procs");
        let mut ways = vec!["write"];
        if advice_supported(libc::MADV_POPULATE_WRITE) {
            ways.push("populate");
        }
        for how in ways {
            let kills = scratch.0.oom_kills();
            // This test alone, as an ignored test, told where to go and how to touch.
            let mut command = support_child::alone(NAME);
            command.arg("--ignored").env(PROCS, &procs).env(TOUCH, how);
            // ANCHOR: cgroup_check
            let run = support_child::run(NAME, command, Duration::from_secs(20));
            let (status, printed) = (run.status, run.output);
            assert!(printed.contains("child: in the cgroup"), "{how}: {printed}");
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{how}: {status:?}, {printed}"
            );
            let after = scratch.0.oom_kills();
            assert_eq!(after, kills + 1, "{how}: one more OOM kill in the cgroup");
            // ANCHOR_END: cgroup_check
            eprintln!(
                "{how}: taking 64 MiB in a 32 MiB cgroup ended in SIGKILL; oom_kill {kills} -> {after}"
            );
        }
    }
}
